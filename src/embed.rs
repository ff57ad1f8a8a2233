//! Face embedding: align the face with its five landmarks onto the model's
//! canonical crop, run the embedding network, L2-normalise.
//!
//! The raw embedding is biometric data: it never leaves the device. Only the
//! match score and a protected template (see the template module) do.

use crate::align::{similarity_transform, to_nchw, warp_affine, PixelNorm, ARCFACE_112};
use crate::error::{FacegateError, Result};
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
    pub flip: bool,
}

/// The embedding models measured on the dev pairs (see models/README.md).
pub const CANDIDATES: &[EmbedderConfig] = &[
    EmbedderConfig {
        name: "mobilefacenet",
        size: 112,
        norm: PixelNorm { mean: [127.5; 3], std: [128.0; 3], bgr: false },
        template_scale: 1.0,
        flip: true,
    },
    EmbedderConfig {
        name: "mobilefacenet_asis",
        size: 112,
        norm: PixelNorm { mean: [127.5; 3], std: [128.0; 3], bgr: false },
        template_scale: 1.0,
        flip: true,
    },
    EmbedderConfig {
        name: "mobileface",
        size: 112,
        norm: PixelNorm { mean: [0.0; 3], std: [1.0; 3], bgr: false },
        template_scale: 1.0,
        flip: true,
    },
    // the same network with float32 weights (the shipped one stores int8)
    EmbedderConfig {
        name: "mobileface_f32",
        size: 112,
        norm: PixelNorm { mean: [0.0; 3], std: [1.0; 3], bgr: false },
        template_scale: 1.0,
        flip: true,
    },
    EmbedderConfig {
        name: "faceres",
        size: 224,
        norm: PixelNorm { mean: [0.0; 3], std: [255.0; 3], bgr: false },
        template_scale: 2.0,
        flip: true,
    },
];

pub const DEFAULT_EMBEDDER: &str = "mobileface";

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

pub struct Embedder {
    model: OnnxModel,
    pub config: EmbedderConfig,
}

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
