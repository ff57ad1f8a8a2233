//! JavaScript bindings (wasm-bindgen). The widget's Web Worker owns one
//! `FaceGate`: models go in as verified bytes, frames go in as RGBA, and only
//! detections, quality, pose, eye state, liveness and match *scores* come out.
//! The ID photo's embedding stays inside this object; there is deliberately no
//! method that returns a raw embedding.

use crate::embed::Embedding;
use crate::error::FacegateError;
use crate::image_io::{decode_image, rgb_from_rgba};
use crate::matching::compare;
use crate::pipeline::{FrameStages, Pipeline, PipelineOptions};
use crate::session::{DeviceSession, SessionConfig};
use image::RgbImage;
use serde::Serialize;
use wasm_bindgen::prelude::*;

mod model_fetch;

fn js_err(e: FacegateError) -> JsError {
    JsError::new(&format!("{}: {e}", e.code()))
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsError> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsError::new(&e.to_string()))
}

/// The model manifest, so the page can fetch and size-check files before loading.
#[wasm_bindgen(js_name = manifestJson)]
pub fn manifest_json() -> String {
    crate::manifest::MANIFEST_JSON.to_string()
}

/// Manifest names of the models `new FaceGate(models)` needs.
#[wasm_bindgen(js_name = requiredModels)]
pub fn required_models() -> Vec<String> {
    PipelineOptions::default().model_names()
}

/// Manifest names of the models `FaceGate.withoutDeferred` leaves for
/// `addDeferred`: the embedder (`embedderModel()`) and the eye model
/// (`eyeModel()`).
#[wasm_bindgen(js_name = deferredModels)]
pub fn deferred_models() -> Vec<String> {
    PipelineOptions::default().deferred_models()
}

/// The deferred model the ID photo's match waits for.
#[wasm_bindgen(js_name = embedderModel)]
pub fn embedder_model() -> String {
    PipelineOptions::default().embedder
}

/// The deferred model the challenge waits for.
#[wasm_bindgen(js_name = eyeModel)]
pub fn eye_model() -> String {
    crate::pipeline::DEFAULT_EYE_MODEL.to_string()
}

/// Model bytes by manifest name from a JS object of `Uint8Array`s.
fn model_source(models: &js_sys::Object) -> impl FnMut(&str) -> crate::Result<Vec<u8>> + '_ {
    move |name: &str| {
        let v = js_sys::Reflect::get(models, &JsValue::from_str(name))
            .ok()
            .filter(|v| !v.is_undefined())
            .ok_or_else(|| FacegateError::ModelLoad { name: name.into(), reason: "bytes not provided".into() })?;
        Ok(js_sys::Uint8Array::new(&v).to_vec())
    }
}

/// Downloads, verifies (sha256 against the compiled-in manifest) and caches
/// the named models from the model base URL; see `model_fetch`. Resolves to
/// `{name: Uint8Array}`; `onProgress(loaded, total, fromCache)` follows the
/// bytes.
#[wasm_bindgen(js_name = fetchModels)]
pub async fn fetch_models(base: String, names: Vec<String>, on_progress: Option<js_sys::Function>) -> Result<js_sys::Object, JsError> {
    model_fetch::fetch_models(&base, &names, on_progress.as_ref()).await.map_err(js_err)
}

#[derive(Serialize)]
struct DecodedRgba {
    width: u32,
    height: u32,
    #[serde(with = "serde_bytes_as_vec")]
    data: Vec<u8>,
}

mod serde_bytes_as_vec {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
}

/// Decode an uploaded JPEG/PNG (e.g. an ID photo) to RGBA for preview on a
/// canvas; stays in the page.
#[wasm_bindgen(js_name = decodeToRgba)]
pub fn decode_to_rgba(bytes: &[u8]) -> Result<JsValue, JsError> {
    let img = decode_image(bytes).map_err(js_err)?;
    let (width, height) = img.dimensions();
    let data = image::DynamicImage::ImageRgb8(img).to_rgba8().into_raw();
    let out = DecodedRgba { width, height, data };
    out.serialize(&serde_wasm_bindgen::Serializer::new()).map_err(|e| JsError::new(&e.to_string()))
}

/// The embedder conversion check in wasm: `model` (manifest name, bytes
/// checked against the manifest) on the reference patterns against
/// `expected_json` (tests/vectors/mobilefacenet_reference.json); returns the
/// largest absolute difference, never an embedding.
#[wasm_bindgen(js_name = embedderReferenceDifference)]
pub fn embedder_reference_difference(model: &str, bytes: &[u8], expected_json: &str) -> Result<f32, JsError> {
    crate::manifest::verify(model, bytes).map_err(js_err)?;
    let embedder = crate::embed::Embedder::new(bytes, crate::embed::config(model).map_err(js_err)?).map_err(js_err)?;
    let expected = crate::embed::reference_outputs(expected_json).map_err(js_err)?;
    crate::embed::max_difference_to_reference(&embedder, &expected).map_err(js_err)
}

/// The cross-platform signing test vector (tests/vectors/signed_result.json):
/// the wire form of the fixed result signed by the key with this seed.
#[wasm_bindgen(js_name = signedResultTestVector)]
pub fn signed_result_test_vector(seed_hex: &str) -> Result<String, JsError> {
    let seed: [u8; 32] = hex::decode(seed_hex).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| JsError::new("seed must be 32 bytes of hex"))?;
    let key = crate::signed::DeviceKey::from_seed(seed);
    let signed = key.sign(crate::signed::test_vector_result(key.public_key_hex())).map_err(js_err)?;
    signed.to_json().map_err(js_err)
}

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`: exists in windows and workers alike.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// One loaded pipeline, owned by the widget's worker.
#[wasm_bindgen]
pub struct FaceGate {
    pipeline: Pipeline,
    reference: Option<Embedding>,
    /// Aligned ID face, kept only for opt-in evidence escrow.
    reference_crop: Option<RgbImage>,
    session: Option<DeviceSession>,
}

#[derive(Serialize)]
struct FrameReport {
    faces: Vec<crate::pipeline::FaceReport>,
    pose: Option<crate::landmarks::HeadPose>,
    eyes: Option<crate::landmarks::EyeState>,
    passive_liveness: Option<f32>,
    match_score: Option<f32>,
}

#[wasm_bindgen]
impl FaceGate {
    /// `models`: a JS object mapping manifest names to `Uint8Array` bytes. Every
    /// file is checked against the manifest's sha256 before use.
    #[wasm_bindgen(constructor)]
    pub fn new(models: &js_sys::Object) -> Result<FaceGate, JsError> {
        let pipeline = Pipeline::load(&PipelineOptions::default(), model_source(models)).map_err(js_err)?;
        Ok(FaceGate { pipeline, reference: None, reference_crop: None, session: None })
    }

    /// Every model but the deferred ones (`deferredModels()`), which
    /// `addDeferred` adds as they arrive: the widget lets the user start (ID
    /// capture, selfie guidance) while those are still downloading.
    #[wasm_bindgen(js_name = withoutDeferred)]
    pub fn without_deferred(models: &js_sys::Object) -> Result<FaceGate, JsError> {
        let pipeline = Pipeline::load_first(&PipelineOptions::default(), model_source(models)).map_err(js_err)?;
        Ok(FaceGate { pipeline, reference: None, reference_crop: None, session: None })
    }

    /// A deferred model's bytes by manifest name (checked against the
    /// manifest's sha256).
    #[wasm_bindgen(js_name = addDeferred)]
    pub fn add_deferred(&mut self, name: &str, bytes: &[u8]) -> Result<(), JsError> {
        self.pipeline.add_deferred(name, bytes).map_err(js_err)
    }

    /// Whether a deferred model has been added.
    #[wasm_bindgen(js_name = deferredReady)]
    pub fn deferred_ready(&self, name: &str) -> bool {
        self.pipeline.deferred_ready(name)
    }

    /// sha256 of every model in use, as `[[name, hex], ...]`.
    #[wasm_bindgen(js_name = modelHashes)]
    pub fn model_hashes(&self) -> Result<JsValue, JsError> {
        to_js(&self.pipeline.model_hashes)
    }

    /// Faces (box, score, landmarks, quality) in an encoded image (JPEG/PNG).
    #[wasm_bindgen(js_name = detectImage)]
    pub fn detect_image(&self, bytes: &[u8]) -> Result<JsValue, JsError> {
        let img = decode_image(bytes).map_err(js_err)?;
        to_js(&self.pipeline.analyze(&img).map_err(js_err)?)
    }

    /// Use the largest face of an encoded ID photo as the reference for later
    /// matches; returns that face's detection and quality.
    #[wasm_bindgen(js_name = setReferenceImage)]
    pub fn set_reference_image(&mut self, bytes: &[u8]) -> Result<JsValue, JsError> {
        let img = decode_image(bytes).map_err(js_err)?;
        self.set_reference(&img)
    }

    #[wasm_bindgen(js_name = setReferenceRgba)]
    pub fn set_reference_rgba(&mut self, width: u32, height: u32, rgba: &[u8]) -> Result<JsValue, JsError> {
        let img = rgb_from_rgba(width, height, rgba).map_err(js_err)?;
        self.set_reference(&img)
    }

    fn set_reference(&mut self, img: &RgbImage) -> Result<JsValue, JsError> {
        let faces = self.pipeline.analyze(img).map_err(js_err)?;
        let face = crate::pipeline::largest_report(&faces).ok_or_else(|| js_err(FacegateError::NoFace))?;
        let embedder = self.pipeline.embedder().map_err(js_err)?;
        let crop = embedder.align(img, &face.detection.landmarks);
        self.reference = Some(embedder.embed_aligned(&crop).map_err(js_err)?);
        self.reference_crop = Some(crop);
        to_js(face)
    }

    /// Forget the reference embedding (end of flow).
    #[wasm_bindgen(js_name = clearReference)]
    pub fn clear_reference(&mut self) {
        self.reference = None;
        self.reference_crop = None;
        self.session = None;
    }

    /// Start a verification session on this device: makes the per-session
    /// Ed25519 key (platform CSPRNG) and returns its public key (hex), which
    /// the widget registers with the server.
    #[wasm_bindgen(js_name = newSession)]
    pub fn new_session(&mut self) -> Result<String, JsError> {
        let s = DeviceSession::new().map_err(js_err)?;
        let pk = s.public_key_hex();
        self.session = Some(s);
        Ok(pk)
    }

    /// Begin the challenge with the server's session configuration (JSON of
    /// `SessionConfig`); returns the ordered steps.
    #[wasm_bindgen(js_name = beginChallenge)]
    pub fn begin_challenge(&mut self, config_json: &str) -> Result<JsValue, JsError> {
        let config: SessionConfig = serde_json::from_str(config_json).map_err(|e| JsError::new(&format!("invalid_input: session config: {e}")))?;
        let s = self.session.as_mut().ok_or_else(|| JsError::new("invalid_input: no session"))?;
        to_js(&s.begin(config).map_err(js_err)?)
    }

    /// One challenge frame (RGBA), `t_ms` since the challenge began.
    #[wasm_bindgen(js_name = challengeFrame)]
    pub fn challenge_frame(&mut self, width: u32, height: u32, rgba: &[u8], t_ms: u32) -> Result<JsValue, JsError> {
        let img = rgb_from_rgba(width, height, rgba).map_err(js_err)?;
        let s = self.session.as_mut().ok_or_else(|| JsError::new("invalid_input: no session"))?;
        to_js(&s.push_frame(&self.pipeline, self.reference.as_ref(), &img, t_ms).map_err(js_err)?)
    }

    /// End the challenge: the signed result in its wire form (JSON string).
    #[wasm_bindgen(js_name = finishChallenge)]
    pub fn finish_challenge(&mut self, widget_version: &str, now_ms: f64) -> Result<String, JsError> {
        let s = self.session.as_mut().ok_or_else(|| JsError::new("invalid_input: no session"))?;
        let signed = s.finish(&self.pipeline, self.reference.as_ref(), widget_version, now_ms as u64, self.reference_crop.as_ref()).map_err(js_err)?;
        signed.to_json().map_err(js_err)
    }

    /// Every stage on one camera frame: faces with quality, pose, eyes,
    /// passive liveness, and with `with_match` (when a reference is set) the
    /// match score against it.
    #[wasm_bindgen(js_name = analyzeFrame)]
    pub fn analyze_frame(&self, width: u32, height: u32, rgba: &[u8], with_match: bool) -> Result<JsValue, JsError> {
        let img = rgb_from_rgba(width, height, rgba).map_err(js_err)?;
        let stages = FrameStages { embed: with_match && self.reference.is_some(), ..FrameStages::ALL };
        to_js(&self.frame_report(&img, stages).map_err(js_err)?)
    }

    /// Capture guidance before the challenge (the oval overlay's hints):
    /// faces and their quality only, the cheapest frame call.
    #[wasm_bindgen(js_name = guideFrame)]
    pub fn guide_frame(&self, width: u32, height: u32, rgba: &[u8]) -> Result<JsValue, JsError> {
        let img = rgb_from_rgba(width, height, rgba).map_err(js_err)?;
        to_js(&self.frame_report(&img, FrameStages::GUIDANCE).map_err(js_err)?)
    }

    /// Benchmark hook: runs every stage once on an RGBA frame and returns
    /// `{stages: {detect, landmarks, liveness, embed, total} (ms), runs:
    /// [{model, dims, input, output, ms}]}` with each model input the
    /// pipeline built (Float32Array), so another runtime can be timed on the
    /// same floats, and the outputs of every model but the embedder (a raw
    /// embedding never leaves this object). The inputs are crops of the
    /// frame the page already holds; the widget never calls this.
    #[wasm_bindgen(js_name = benchFrame)]
    pub fn bench_frame(&self, width: u32, height: u32, rgba: &[u8]) -> Result<JsValue, JsError> {
        let img = rgb_from_rgba(width, height, rgba).map_err(js_err)?;
        let (stages, runs) = self.pipeline.time_stages(&img, performance_now).map_err(js_err)?;
        let out = js_sys::Object::new();
        let set = |o: &js_sys::Object, k: &str, v: &JsValue| js_sys::Reflect::set(o, &JsValue::from_str(k), v).map(|_| ()).map_err(|_| JsError::new("reflect"));
        set(&out, "stages", &to_js(&stages)?)?;
        let list = js_sys::Array::new();
        for r in runs {
            let o = js_sys::Object::new();
            set(&o, "model", &JsValue::from_str(&r.model))?;
            set(&o, "dims", &to_js(&r.dims)?)?;
            set(&o, "input", &js_sys::Float32Array::from(&r.input[..]))?;
            // the embedder's output is a raw embedding: never handed to JS
            if r.model != self.pipeline.embedder_name() {
                set(&o, "output", &js_sys::Float32Array::from(&r.output[..]))?;
            }
            set(&o, "ms", &JsValue::from_f64(r.ms))?;
            list.push(&o);
        }
        set(&out, "runs", &list)?;
        Ok(out.into())
    }

    /// Match score (calibrated, 0..1) of two encoded images' largest faces.
    #[wasm_bindgen(js_name = compareImages)]
    pub fn compare_images(&self, a: &[u8], b: &[u8]) -> Result<JsValue, JsError> {
        let (a, b) = (decode_image(a).map_err(js_err)?, decode_image(b).map_err(js_err)?);
        to_js(&self.pipeline.compare_images(&a, &b).map_err(js_err)?)
    }
}

impl FaceGate {
    fn frame_report(&self, img: &RgbImage, stages: FrameStages) -> crate::Result<FrameReport> {
        let frame = self.pipeline.frame(img, stages, performance_now)?;
        let match_score = match (&frame.embedding, &self.reference) {
            (Some(e), Some(reference)) => Some(compare(reference, e, &self.pipeline.calibration).score),
            _ => None,
        };
        Ok(FrameReport {
            faces: frame.faces,
            pose: frame.mesh.as_ref().map(|m| m.pose),
            eyes: frame.mesh.as_ref().map(|m| m.eyes),
            passive_liveness: frame.passive_liveness,
            match_score,
        })
    }
}

/// A QR code (SVG markup) for the phone hand-off link shown when this device
/// has no camera. Made on the device, so the one-time link never goes to a
/// third-party QR service.
#[wasm_bindgen(js_name = qrSvg)]
pub fn qr_svg(text: &str) -> Result<String, JsError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| JsError::new(&format!("invalid_input: {e}")))?;
    Ok(code.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).quiet_zone(true).build())
}
