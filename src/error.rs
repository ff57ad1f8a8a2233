//! Typed errors. Every failure a user or integrator can cause maps to one
//! variant with a stable machine-readable `code()` (shown by the widget and
//! the CLI) and a human sentence (`Display`).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum FacegateError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("not a decodable image: {0}")]
    ImageDecode(String),
    #[error("no face found in the image")]
    NoFace,
    #[error("{0} faces found where exactly one was expected")]
    MultipleFaces(usize),
    #[error("model '{name}' failed its integrity check: sha256 {actual} does not match the manifest's {expected}")]
    ModelIntegrity { name: String, expected: String, actual: String },
    #[error("model '{name}' is not in the manifest")]
    UnknownModel { name: String },
    #[error("model '{name}' could not be loaded: {reason}")]
    ModelLoad { name: String, reason: String },
    #[error("model '{name}' could not be downloaded: {reason}")]
    ModelDownload { name: String, reason: String },
    #[error("model '{name}' has not arrived yet (it loads in the background)")]
    ModelNotReady { name: String },
    #[error("inference failed in {stage}: {reason}")]
    Inference { stage: &'static str, reason: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl FacegateError {
    /// Stable reason code for UIs, logs and JSON outputs.
    pub fn code(&self) -> &'static str {
        match self {
            FacegateError::Io { .. } => "io_error",
            FacegateError::ImageDecode(_) => "image_decode",
            FacegateError::NoFace => "no_face",
            FacegateError::MultipleFaces(_) => "multiple_faces",
            FacegateError::ModelIntegrity { .. } => "model_integrity",
            FacegateError::UnknownModel { .. } => "unknown_model",
            FacegateError::ModelLoad { .. } => "model_load",
            FacegateError::ModelDownload { .. } => "model_download",
            FacegateError::ModelNotReady { .. } => "model_not_ready",
            FacegateError::Inference { .. } => "inference",
            FacegateError::InvalidInput(_) => "invalid_input",
        }
    }
}

pub type Result<T> = std::result::Result<T, FacegateError>;
