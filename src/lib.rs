//! facegate: on-device face detection, liveness and 1:1 matching.
//!
//! One module per pipeline stage; native and wasm32 share all of it, the
//! wasm-bindgen bindings live in `wasm`.

pub mod align;
pub mod challenge;
pub mod detect;
pub mod embed;
pub mod error;
pub mod escrow;
pub mod image_io;
pub mod landmarks;
pub mod liveness;
pub mod manifest;
pub mod matching;
pub mod metrics;
pub mod pipeline;
mod prelu;
pub mod quality;
pub mod runtime;
pub mod session;
pub mod signed;
pub mod template;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{FacegateError, Result};
