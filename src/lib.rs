//! facegate: on-device face detection, liveness and 1:1 matching.
//!
//! One module per pipeline stage; native and wasm32 share all of it, the
//! wasm-bindgen bindings live in `wasm`.
//!
//! Without the default `inference` feature the crate is the protocol alone
//! (challenge replay, signed results, templates and their 1:N search,
//! escrow, matching and the model manifest): what the carrier server and
//! the project's tasks need, without compiling the ONNX runtime. The items
//! that run a model say so with `#[cfg(feature = "inference")]`.

// Without `inference` the helpers only the models use (pixel layouts,
// decoders) are unused; the default build is the one linted for dead code.
#![cfg_attr(not(feature = "inference"), allow(unused_imports, dead_code))]

pub mod align;
pub mod challenge;
pub mod detect;
pub mod embed;
pub mod error;
pub mod escrow;
pub mod eyes;
pub mod image_io;
pub mod landmarks;
pub mod liveness;
pub mod manifest;
pub mod matching;
pub mod metrics;
pub mod pipeline;
#[cfg(feature = "inference")]
mod prelu;
pub mod quality;
pub mod replay;
#[cfg(feature = "inference")]
pub mod runtime;
/// Filming a screen, simulated: the eval's and the browser tests' screen
/// replays (not part of the pipeline).
pub mod screen_sim;
pub mod search;
pub mod session;
pub mod signed;
pub mod template;

#[cfg(all(target_arch = "wasm32", feature = "inference"))]
pub mod wasm;

pub use error::{FacegateError, Result};
