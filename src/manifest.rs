//! The model manifest (`models/manifest.json`, compiled into the crate): for
//! every model its file, sha256, source, licence and input/output contract.
//! Every model byte string is checked against it before tract sees it, so a
//! tampered or truncated download fails with `ModelIntegrity`, never with a
//! confusing inference error (or worse, a silently different model).

use crate::error::{FacegateError, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST_JSON: &str = include_str!("../models/manifest.json");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub models: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Stable identifier used by the pipeline and in signed results.
    pub name: String,
    /// Which pipeline stage uses it: detector, embedder, landmarker, liveness.
    pub role: String,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    /// Where the file lives: `repo` (committed under models/) or `shared/<folder>`.
    pub location: String,
    pub source: String,
    #[serde(default)]
    pub url: Option<String>,
    pub licence: String,
    pub input: String,
    pub output: String,
    pub preprocessing: String,
    /// How the weights are stored when not plain float32 (e.g. int8 per
    /// output channel, expanded to float32 when the model is loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
}

pub fn manifest() -> Manifest {
    serde_json::from_str(MANIFEST_JSON).expect("models/manifest.json is valid (checked by tests)")
}

pub fn entry(name: &str) -> Result<ModelEntry> {
    manifest()
        .models
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| FacegateError::UnknownModel { name: name.to_string() })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Check `bytes` against the manifest entry of `name`.
pub fn verify(name: &str, bytes: &[u8]) -> Result<ModelEntry> {
    let e = entry(name)?;
    let actual = sha256_hex(bytes);
    if actual != e.sha256 {
        return Err(FacegateError::ModelIntegrity { name: name.to_string(), expected: e.sha256.clone(), actual });
    }
    Ok(e)
}

/// Native only: find a model file on disk. Search order: `$FACEGATE_MODELS_DIR`,
/// the crate's `models/`, then `../shared/models/<folder>` beside the checkout
/// (where upstream files that no registry ships are kept; never copied in).
#[cfg(not(target_arch = "wasm32"))]
pub fn locate(e: &ModelEntry) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("FACEGATE_MODELS_DIR") {
        candidates.push(PathBuf::from(&dir).join(&e.file));
    }
    candidates.push(root.join("models").join(&e.file));
    if let Some(folder) = e.location.strip_prefix("shared/") {
        candidates.push(root.join("..").join("shared").join("models").join(folder).join(&e.file));
    }
    // downloads (`cargo xtask fetch-models`) and evaluation-only conversions
    candidates.push(root.join("models").join("cache").join(&e.file));
    candidates.into_iter().find(|p| p.is_file())
}

/// Native only: read and verify a model by name.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_verified(name: &str) -> Result<Vec<u8>> {
    let e = entry(name)?;
    let path = locate(&e).ok_or_else(|| FacegateError::ModelLoad {
        name: name.to_string(),
        reason: format!("file {} not found (run `cargo xtask fetch-models`)", e.file),
    })?;
    let bytes = std::fs::read(&path)
        .map_err(|err| FacegateError::Io { path: path.display().to_string(), reason: err.to_string() })?;
    verify(name, &bytes)?;
    Ok(bytes)
}
