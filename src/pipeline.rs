//! The whole on-device pipeline in one object: models loaded once (from
//! verified bytes), then used for every image or camera frame.

use crate::detect::{largest, Detection, FaceDetector};
use crate::embed::{self, Embedder, Embedding};
use crate::error::{FacegateError, Result};
use crate::manifest;
use crate::matching::{compare, Calibration, MatchResult, DEFAULT_CALIBRATION};
use image::RgbImage;

pub const DEFAULT_DETECTOR: &str = "yunet_s_320";

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub detector: String,
    pub embedder: String,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions { detector: DEFAULT_DETECTOR.into(), embedder: embed::DEFAULT_EMBEDDER.into() }
    }
}

pub struct Pipeline {
    pub detector: FaceDetector,
    pub embedder: Embedder,
    pub calibration: Calibration,
    /// sha256 of every model in use, for signed results.
    pub model_hashes: Vec<(String, String)>,
}

impl Pipeline {
    /// Build from a byte source (file system natively, `fetch` in the browser).
    /// Every byte string is checked against the manifest before use.
    pub fn load(opts: &PipelineOptions, mut source: impl FnMut(&str) -> Result<Vec<u8>>) -> Result<Self> {
        let mut hashes = Vec::new();
        let mut fetch = |name: &str| -> Result<Vec<u8>> {
            let bytes = source(name)?;
            let e = manifest::verify(name, &bytes)?;
            hashes.push((name.to_string(), e.sha256));
            Ok(bytes)
        };
        let detector = FaceDetector::new(&fetch(&opts.detector)?, &opts.detector)?;
        let embedder = Embedder::new(&fetch(&opts.embedder)?, embed::config(&opts.embedder)?)?;
        Ok(Pipeline { detector, embedder, calibration: DEFAULT_CALIBRATION, model_hashes: hashes })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_native(opts: &PipelineOptions) -> Result<Self> {
        Self::load(opts, manifest::read_verified)
    }

    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        self.detector.detect(img)
    }

    /// Embedding of the largest face, for 1:1 checks.
    pub fn embed_largest(&self, img: &RgbImage) -> Result<(Detection, Embedding)> {
        let faces = self.detect(img)?;
        let face = largest(&faces).ok_or(FacegateError::NoFace)?.clone();
        let e = self.embedder.embed(img, &face.landmarks)?;
        Ok((face, e))
    }

    pub fn compare_images(&self, a: &RgbImage, b: &RgbImage) -> Result<MatchResult> {
        let (_, ea) = self.embed_largest(a)?;
        let (_, eb) = self.embed_largest(b)?;
        Ok(compare(&ea, &eb, &self.calibration))
    }
}
