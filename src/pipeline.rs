//! The whole on-device pipeline in one object: models loaded once (from
//! verified bytes), then used for every image or camera frame.

use crate::challenge::TrackSample;
use crate::detect::{largest, Detection};
#[cfg(feature = "inference")]
use crate::detect::FaceDetector;
use crate::embed::{self, Embedding};
#[cfg(feature = "inference")]
use crate::embed::Embedder;
use crate::error::{FacegateError, Result};
use crate::landmarks::FaceMesh;
#[cfg(feature = "inference")]
use crate::eyes::EyeModel;
#[cfg(feature = "inference")]
use crate::landmarks::Landmarker;
use crate::liveness::LIVENESS_MODELS;
#[cfg(feature = "inference")]
use crate::liveness::PassiveLiveness;
use crate::manifest;
use crate::matching::{compare, Calibration, MatchResult};
use crate::quality::{assess, Quality, QualityThresholds};
use image::RgbImage;
use serde::Serialize;

/// The largest face report: the face a 1:1 check is about (as `detect::largest`).
pub fn largest_report(faces: &[FaceReport]) -> Option<&FaceReport> {
    faces.iter().max_by(|a, b| a.detection.area().total_cmp(&b.detection.area()))
}

/// One detected face with its capture-quality verdict.
#[derive(Debug, Clone, Serialize)]
pub struct FaceReport {
    #[serde(flatten)]
    pub detection: Detection,
    pub quality: Quality,
}

pub const DEFAULT_DETECTOR: &str = "yunet_s_320";
pub const DEFAULT_LANDMARKER: &str = "facemesh";
/// The eye model of the blink step (`eyes`), used with the landmarker.
pub const DEFAULT_EYE_MODEL: &str = "iris";

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub detector: String,
    pub embedder: String,
    pub liveness: bool,
    pub landmarks: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions { detector: DEFAULT_DETECTOR.into(), embedder: embed::DEFAULT_EMBEDDER.into(), liveness: true, landmarks: true }
    }
}

impl PipelineOptions {
    /// Manifest names of every model these options load, in load order (the
    /// widget downloads exactly these).
    pub fn model_names(&self) -> Vec<String> {
        let mut names = vec![self.detector.clone(), self.embedder.clone()];
        if self.liveness {
            names.extend(LIVENESS_MODELS.iter().map(|(n, _)| n.to_string()));
        }
        if self.landmarks {
            names.push(DEFAULT_LANDMARKER.to_string());
            names.push(DEFAULT_EYE_MODEL.to_string());
        }
        names
    }

    /// The models a first visit can do without until the step that needs
    /// them ([`Pipeline::load_first`], [`Pipeline::add_deferred`]): the
    /// embedder (the ID photo's match) and the eye model (the challenge).
    pub fn deferred_models(&self) -> Vec<String> {
        let mut names = vec![self.embedder.clone()];
        if self.landmarks {
            names.push(DEFAULT_EYE_MODEL.to_string());
        }
        names
    }
}

#[cfg(feature = "inference")]
pub struct Pipeline {
    pub detector: FaceDetector,
    /// `None` until the embedder has arrived when it loads in the background
    /// ([`Pipeline::load_first`], the widget's first visit).
    embedder: Option<Embedder>,
    embedder_name: String,
    pub liveness: Option<PassiveLiveness>,
    pub landmarker: Option<Landmarker>,
    /// `None` until it arrives, like the embedder; without it the mesh's own
    /// eye aspect ratio stands in (selfie guidance only: the challenge waits
    /// for it, see `DeviceSession::push_frame`).
    eye_model: Option<EyeModel>,
    pub calibration: Calibration,
    pub quality_thresholds: QualityThresholds,
    /// sha256 of every model in use, for signed results.
    pub model_hashes: Vec<(String, String)>,
}

#[cfg(feature = "inference")]
impl Pipeline {
    /// Build from a byte source (file system natively, `fetch` in the browser).
    /// Every byte string is checked against the manifest before use.
    pub fn load(opts: &PipelineOptions, mut source: impl FnMut(&str) -> Result<Vec<u8>>) -> Result<Self> {
        let mut p = Self::load_first(opts, &mut source)?;
        for name in opts.deferred_models() {
            p.add_deferred(&name, &source(&name)?)?;
        }
        Ok(p)
    }

    /// Every model but the deferred ones ([`PipelineOptions::deferred_models`]),
    /// which [`Pipeline::add_deferred`] adds when their bytes arrive:
    /// detection, quality guidance, the mesh and passive liveness work
    /// before them (the widget lets the user start while the embedder and
    /// the eye model are still downloading).
    pub fn load_first(opts: &PipelineOptions, mut source: impl FnMut(&str) -> Result<Vec<u8>>) -> Result<Self> {
        let mut hashes = Vec::new();
        let mut fetch = |name: &str| -> Result<Vec<u8>> {
            let bytes = source(name)?;
            let e = manifest::verify(name, &bytes)?;
            hashes.push((name.to_string(), e.sha256));
            Ok(bytes)
        };
        let detector = FaceDetector::new(&fetch(&opts.detector)?, &opts.detector)?;
        let embedder_config = embed::config(&opts.embedder)?;
        let liveness = if opts.liveness {
            let mut models = Vec::new();
            for (name, _) in LIVENESS_MODELS {
                models.push((name, fetch(name)?));
            }
            Some(PassiveLiveness::new(&models)?)
        } else {
            None
        };
        let landmarker = if opts.landmarks {
            Some(Landmarker::new(&fetch(DEFAULT_LANDMARKER)?, DEFAULT_LANDMARKER)?)
        } else {
            None
        };
        Ok(Pipeline {
            detector,
            embedder: None,
            embedder_name: opts.embedder.clone(),
            liveness,
            landmarker,
            eye_model: None,
            calibration: embedder_config.calibration,
            quality_thresholds: QualityThresholds::default(),
            model_hashes: hashes,
        })
    }

    /// A deferred model's bytes (the embedder or the eye model), checked
    /// against the manifest like every model.
    pub fn add_deferred(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let entry = manifest::verify(name, bytes)?;
        if name == self.embedder_name {
            self.embedder = Some(Embedder::new(bytes, embed::config(name)?)?);
        } else if name == DEFAULT_EYE_MODEL {
            self.eye_model = Some(EyeModel::new(bytes, name)?);
        } else {
            return Err(FacegateError::UnknownModel { name: name.into() });
        }
        let name = name.to_string();
        self.model_hashes.retain(|(n, _)| *n != name);
        self.model_hashes.push((name, entry.sha256));
        Ok(())
    }

    /// Manifest name of the embedder (loaded or still on its way).
    pub fn embedder_name(&self) -> &str {
        &self.embedder_name
    }

    /// The embedder, or `ModelNotReady` while it is still on its way.
    pub fn embedder(&self) -> Result<&Embedder> {
        self.embedder.as_ref().ok_or_else(|| FacegateError::ModelNotReady { name: self.embedder_name.clone() })
    }

    pub fn embedder_mut(&mut self) -> Result<&mut Embedder> {
        let name = self.embedder_name.clone();
        self.embedder.as_mut().ok_or(FacegateError::ModelNotReady { name })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_native(opts: &PipelineOptions) -> Result<Self> {
        Self::load(opts, manifest::read_verified)
    }

    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        self.detector.detect(img)
    }

    /// Faces with their quality checks, best detection score first.
    pub fn analyze(&self, img: &RgbImage) -> Result<Vec<FaceReport>> {
        Ok(self.detect(img)?.into_iter().map(|d| self.report(img, d)).collect())
    }

    /// One face with its quality checks on `img`.
    pub fn report(&self, img: &RgbImage, detection: Detection) -> FaceReport {
        FaceReport { quality: assess(img, &detection, &self.quality_thresholds), detection }
    }

    /// Passive liveness of the largest face: (face, score in [0,1]).
    pub fn passive_liveness(&self, img: &RgbImage) -> Result<(FaceReport, f32)> {
        let faces = self.analyze(img)?;
        let face = largest_report(&faces).ok_or(FacegateError::NoFace)?.clone();
        let model = self.liveness.as_ref().ok_or_else(|| FacegateError::InvalidInput("liveness models not loaded".into()))?;
        let score = model.score(img, &face.detection)?;
        Ok((face, score))
    }

    /// Whether the deferred model `name` has arrived (false for any other name).
    pub fn deferred_ready(&self, name: &str) -> bool {
        match name {
            n if n == self.embedder_name => self.embedder.is_some(),
            DEFAULT_EYE_MODEL => self.eye_model.is_some(),
            _ => false,
        }
    }

    /// The eye model, or `ModelNotReady` while it is still on its way.
    pub fn eye_model(&self) -> Result<&EyeModel> {
        self.eye_model.as_ref().ok_or_else(|| FacegateError::ModelNotReady { name: DEFAULT_EYE_MODEL.into() })
    }

    /// Dense landmarks, head pose and eye state of one detected face; the
    /// eye state from the eye model once it is loaded.
    pub fn mesh(&self, img: &RgbImage, face: &Detection) -> Result<FaceMesh> {
        let lm = self.landmarker.as_ref().ok_or_else(|| FacegateError::InvalidInput("landmark model not loaded".into()))?;
        let mut mesh = lm.mesh(img, face)?;
        if let Some(eyes) = &self.eye_model {
            mesh.eyes = eyes.eyes(img, &mesh.points)?;
        }
        Ok(mesh)
    }

    /// One challenge-track sample from a camera frame: the largest face's
    /// head pose and eye openness (`None` when no face is in view).
    pub fn track_sample(&self, img: &RgbImage, t_ms: u32) -> Result<Option<(Detection, FaceMesh, TrackSample)>> {
        let faces = self.detect(img)?;
        let Some(face) = largest(&faces) else { return Ok(None) };
        let mesh = self.mesh(img, face)?;
        let sample = TrackSample {
            t_ms,
            yaw: mesh.pose.yaw,
            pitch: mesh.pose.pitch,
            left_openness: mesh.eyes.left_openness,
            right_openness: mesh.eyes.right_openness,
        };
        Ok(Some((face.clone(), mesh, sample)))
    }

    /// Embedding of the largest face, for 1:1 checks.
    pub fn embed_largest(&self, img: &RgbImage) -> Result<(Detection, Embedding)> {
        let faces = self.detect(img)?;
        let face = largest(&faces).ok_or(FacegateError::NoFace)?.clone();
        let e = self.embedder()?.embed(img, &face.landmarks)?;
        Ok((face, e))
    }

    pub fn compare_images(&self, a: &RgbImage, b: &RgbImage) -> Result<MatchResult> {
        let (_, ea) = self.embed_largest(a)?;
        let (_, eb) = self.embed_largest(b)?;
        Ok(compare(&ea, &eb, &self.calibration))
    }

    /// One camera frame through the stages `stages` asks for, on the largest
    /// face: detection + quality always, then mesh, passive liveness, align +
    /// embed; each stage timed with `clock` (ms). The widget's frame calls
    /// and the benchmarks run this same code.
    pub fn frame(&self, img: &RgbImage, stages: FrameStages, clock: fn() -> f64) -> Result<FrameAnalysis> {
        let start = clock();
        let faces = self.analyze(img)?;
        let times = StageTimes { faces: faces.len(), detect: clock() - start, ..Default::default() };
        let mut out = FrameAnalysis { faces, mesh: None, passive_liveness: None, embedding: None, times };
        if let Some(face) = largest_report(&out.faces) {
            let det = face.detection.clone();
            if stages.mesh && self.landmarker.is_some() {
                let s = clock();
                out.mesh = Some(self.mesh(img, &det)?);
                out.times.landmarks = clock() - s;
            }
            if let Some(l) = self.liveness.as_ref().filter(|_| stages.liveness) {
                let s = clock();
                out.passive_liveness = Some(l.score(img, &det)?);
                out.times.liveness = clock() - s;
            }
            if stages.embed {
                let s = clock();
                out.embedding = Some(self.embedder()?.embed(img, &det.landmarks)?);
                out.times.embed = clock() - s;
            }
        }
        out.times.total = clock() - start;
        Ok(out)
    }

    /// Every stage once on one frame ([`Pipeline::frame`] with all stages),
    /// with the model runs made inside, for benchmarks natively and in the
    /// browser.
    pub fn time_stages(&self, img: &RgbImage, clock: fn() -> f64) -> Result<(StageTimes, Vec<crate::runtime::ModelRun>)> {
        let (frame, runs) = crate::runtime::record_runs(clock, || self.frame(img, FrameStages::ALL, clock));
        Ok((frame?.times, runs))
    }
}

/// Which stages [`Pipeline::frame`] runs after detection and quality.
#[derive(Debug, Clone, Copy)]
pub struct FrameStages {
    pub mesh: bool,
    pub liveness: bool,
    pub embed: bool,
}

impl FrameStages {
    pub const ALL: FrameStages = FrameStages { mesh: true, liveness: true, embed: true };
    /// Capture guidance (the oval overlay's hints): faces and quality only.
    pub const GUIDANCE: FrameStages = FrameStages { mesh: false, liveness: false, embed: false };
}

/// What [`Pipeline::frame`] found. `embedding` is a raw embedding: callers
/// compare it on the device and drop it.
pub struct FrameAnalysis {
    pub faces: Vec<FaceReport>,
    pub mesh: Option<FaceMesh>,
    pub passive_liveness: Option<f32>,
    pub embedding: Option<Embedding>,
    pub times: StageTimes,
}

/// Milliseconds per stage of one frame ([`Pipeline::time_stages`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    pub faces: usize,
    /// Detection and the quality checks of every face found.
    pub detect: f64,
    pub landmarks: f64,
    /// Both MiniFASNet models.
    pub liveness: f64,
    /// Alignment and the embedding (two runs with flip averaging).
    pub embed: f64,
    pub total: f64,
}
