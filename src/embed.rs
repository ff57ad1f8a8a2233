//! Face embedding: align the face with its five landmarks onto the model's
//! canonical crop, run the embedding network, L2-normalise.
//!
//! The raw embedding is biometric data: it never leaves the device. Only the
//! match score and a protected template (see the template module) do.

use crate::align::{similarity_transform, to_nchw, warp_affine, PixelNorm, ARCFACE_112};
use crate::error::{FacegateError, Result};
use crate::matching::{Calibration, OperatingPoint};
#[cfg(feature = "inference")]
use crate::runtime::OnnxModel;
use image::{imageops, RgbImage};

/// What an embedding model expects. One per candidate in the manifest.
#[derive(Debug, Clone, Copy)]
pub struct EmbedderConfig {
    pub name: &'static str,
    pub size: u32,
    pub norm: PixelNorm,
    /// Template scale relative to the ArcFace 112 template (1.0 for 112-px models).
    pub template_scale: f32,
    /// Also embed the mirrored crop and average: a standard test-time
    /// augmentation that makes the embedding less sensitive to pose asymmetry.
    /// It doubles the cost; kept only where it was measured to pay.
    pub flip: bool,
    /// Cosine → calibrated score, and the default threshold on that score.
    pub calibration: Calibration,
    /// Thresholds at fixed false-accept rates, measured on lfw-dev
    /// (`cargo xtask eval`); the server's `match_threshold` takes these names.
    pub operating_points: &'static [OperatingPoint],
    /// The same in the protected-template domain, for the server's 1:N
    /// duplicate check (its FAR per comparison times the number of stored
    /// templates is the expected number of false duplicates).
    pub duplicate_points: &'static [OperatingPoint],
}

/// Calibration of the models that are only evaluated, never shipped: the
/// identity map of the cosine onto (0,1) would not do, so the mobileface fit
/// is reused; rank metrics (AUC, EER, TAR@FAR) are computed on the cosine
/// and do not depend on it.
const UNCALIBRATED: Calibration = Calibration { a: 21.99, b: -4.247, threshold: 0.80 };

/// sirius-ai MobileFaceNet (192-d), from the tfjs graph with its PReLUs
/// repaired (models/tools/tfjs_to_onnx.py fold_prelu + negate_prelu_slopes),
/// equal to the published TFLite reference to 1e-6. Flip averaging was
/// measured not to pay for it (see models/README.md), so it is off: half the
/// cost per face.
const MOBILEFACENET: EmbedderConfig = EmbedderConfig {
    name: "mobilefacenet",
    size: 112,
    norm: PixelNorm { mean: [127.5; 3], std: [128.0; 3], bgr: false },
    template_scale: 1.0,
    flip: false,
    calibration: crate::matching::MOBILEFACENET_CALIBRATION,
    operating_points: crate::matching::MOBILEFACENET_OPERATING_POINTS,
    duplicate_points: crate::matching::MOBILEFACENET_DUPLICATE_POINTS,
};

/// The embedding models measured on the dev pairs (see models/README.md).
pub const CANDIDATES: &[EmbedderConfig] = &[
    MOBILEFACENET,
    // the same network with float32 weights (checked against the TFLite reference)
    EmbedderConfig { name: "mobilefacenet_f32", ..MOBILEFACENET },
    EmbedderConfig {
        name: "mobilefacenet_asis",
        size: 112,
        norm: PixelNorm { mean: [127.5; 3], std: [128.0; 3], bgr: false },
        template_scale: 1.0,
        flip: true,
        calibration: UNCALIBRATED,
        operating_points: &[],
        duplicate_points: &[],
    },
    // the previous default (AUC 0.981 on lfw-dev), kept selectable for comparison
    EmbedderConfig {
        name: "mobileface",
        size: 112,
        norm: PixelNorm { mean: [0.0; 3], std: [1.0; 3], bgr: false },
        template_scale: 1.0,
        flip: true,
        calibration: crate::matching::MOBILEFACE_CALIBRATION,
        operating_points: crate::matching::MOBILEFACE_OPERATING_POINTS,
        duplicate_points: &[],
    },
    // the same network with float32 weights (the shipped one stores int8)
    EmbedderConfig {
        name: "mobileface_f32",
        size: 112,
        norm: PixelNorm { mean: [0.0; 3], std: [1.0; 3], bgr: false },
        template_scale: 1.0,
        flip: true,
        calibration: crate::matching::MOBILEFACE_CALIBRATION,
        operating_points: crate::matching::MOBILEFACE_OPERATING_POINTS,
        duplicate_points: &[],
    },
    // HSE faceres as its own code feeds it: BGR, minus the ImageNet channel
    // means (0..255 scale, no division), 224x224 ArcFace-aligned crop.
    EmbedderConfig {
        name: "faceres",
        size: 224,
        norm: PixelNorm { mean: [103.939, 116.779, 123.68], std: [1.0; 3], bgr: true },
        template_scale: 2.0,
        flip: true,
        calibration: UNCALIBRATED,
        operating_points: &[],
        duplicate_points: &[],
    },
];

pub const DEFAULT_EMBEDDER: &str = "mobilefacenet";

pub fn config(name: &str) -> Result<EmbedderConfig> {
    CANDIDATES
        .iter()
        .copied()
        .find(|c| c.name == name)
        .ok_or_else(|| FacegateError::UnknownModel { name: name.to_string() })
}

/// A unit-length face embedding. Deliberately not `Serialize`: it has no
/// business on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    pub fn cosine(&self, other: &Embedding) -> f32 {
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }
}

#[cfg(feature = "inference")]
pub struct Embedder {
    model: OnnxModel,
    pub config: EmbedderConfig,
}

#[cfg(feature = "inference")]
impl Embedder {
    pub fn new(model_bytes: &[u8], config: EmbedderConfig) -> Result<Self> {
        let s = config.size as usize;
        Ok(Embedder { model: OnnxModel::load(config.name, model_bytes, [1, 3, s, s])?, config })
    }

    /// The aligned crop the network sees.
    pub fn align(&self, img: &RgbImage, landmarks: &[[f32; 2]; 5]) -> RgbImage {
        let template: Vec<[f32; 2]> = ARCFACE_112
            .iter()
            .map(|p| [p[0] * self.config.template_scale, p[1] * self.config.template_scale])
            .collect();
        let m = similarity_transform(landmarks, &template);
        warp_affine(img, &m, self.config.size, self.config.size)
    }

    pub fn embed(&self, img: &RgbImage, landmarks: &[[f32; 2]; 5]) -> Result<Embedding> {
        let crop = self.align(img, landmarks);
        self.embed_aligned(&crop)
    }

    pub fn embed_aligned(&self, crop: &RgbImage) -> Result<Embedding> {
        let mut v = self.run(crop)?;
        if self.config.flip {
            let flipped = imageops::flip_horizontal(crop);
            for (a, b) in v.iter_mut().zip(self.run(&flipped)?) {
                *a += b;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        Ok(Embedding(v.into_iter().map(|x| x / norm).collect()))
    }

    fn run(&self, crop: &RgbImage) -> Result<Vec<f32>> {
        let out = self.model.run("embed", to_nchw(crop, &self.config.norm))?;
        let v = out.into_iter().next().unwrap_or_default();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        Ok(v.into_iter().map(|x| x / norm).collect())
    }
}

/// The synthetic 112x112 pattern `k` that models/tools/check_reference.py
/// feeds the converted model and its TFLite reference: the same bytes in
/// Python and Rust, and no face in the repository.
pub fn reference_pattern(k: u32) -> RgbImage {
    RgbImage::from_fn(112, 112, |x, y| {
        let px = |ch: u32| {
            let (k, ch, x, y) = (k as f64, ch as f64, x as f64, y as f64);
            let (a, b, c) = (0.05 * (k + 1.0) + 0.013 * ch, 0.031 * (k + 2.0) - 0.007 * ch, 0.5 * ch + k);
            (127.5 + 127.5 * (a * x + b * y + c).sin()).floor().clamp(0.0, 255.0) as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// The reference outputs of tests/vectors/mobilefacenet_reference.json (the
/// file models/tools/check_reference.py writes), one vector per pattern.
pub fn reference_outputs(json: &str) -> Result<Vec<Vec<f32>>> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| FacegateError::InvalidInput(format!("reference vectors: {e}")))?;
    let outputs = v["outputs_l2_normalised"].as_array().ok_or_else(|| FacegateError::InvalidInput("reference vectors: outputs_l2_normalised missing".into()))?;
    Ok(outputs.iter().map(|o| o.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect()).unwrap_or_default()).collect())
}

/// Largest absolute difference between this embedder's outputs on the
/// reference patterns and the reference runtime's (`expected[k]` for
/// pattern k, L2-normalised). Only the difference leaves: natively and in
/// wasm the check needs no embedding outside the crate.
#[cfg(feature = "inference")]
pub fn max_difference_to_reference(embedder: &Embedder, expected: &[Vec<f32>]) -> Result<f32> {
    let mut worst = 0.0f32;
    for (k, want) in expected.iter().enumerate() {
        let got = embedder.embed_aligned(&reference_pattern(k as u32))?;
        if got.0.len() != want.len() {
            return Err(FacegateError::InvalidInput(format!("reference has {} values, the model gives {}", want.len(), got.0.len())));
        }
        worst = got.0.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
    }
    Ok(worst)
}
