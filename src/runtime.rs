//! Thin wrapper over tract: load an ONNX model from bytes (no file system, so
//! the same code runs in wasm) with a fixed input shape, optimise it once, and
//! run it many times.

use crate::error::{FacegateError, Result};
use tract_onnx::prelude::*;

pub struct OnnxModel {
    name: String,
    plan: Arc<TypedRunnableModel>,
    input_shape: [usize; 4],
}

impl OnnxModel {
    /// Parse, type and optimise `bytes` for an NCHW float input of `input_shape`.
    pub fn load(name: &str, bytes: &[u8], input_shape: [usize; 4]) -> Result<Self> {
        let err = |e: TractError| FacegateError::ModelLoad { name: name.to_string(), reason: format!("{e:#}") };
        let mut onnx = tract_onnx::onnx();
        crate::prelu::register(&mut onnx.op_register);
        let mut model = onnx.model_for_read(&mut std::io::Cursor::new(bytes)).map_err(err)?;
        model.set_input_fact(0, f32::fact(input_shape).into()).map_err(err)?;
        let plan = model.into_optimized().map_err(err)?.into_runnable().map_err(err)?;
        Ok(OnnxModel { name: name.to_string(), plan, input_shape })
    }

    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// Run on an NCHW buffer whose length matches the input shape; returns every
    /// output flattened to f32.
    pub fn run(&self, stage: &'static str, input: Vec<f32>) -> Result<Vec<Vec<f32>>> {
        let err = |e: TractError| FacegateError::Inference { stage, reason: format!("{}: {e:#}", self.name) };
        let clock = RECORDER.with(|r| r.borrow().as_ref().map(|r| r.clock));
        let recorded_input = clock.map(|_| input.clone());
        let start = clock.map(|c| c());
        let tensor = Tensor::from_shape(&self.input_shape, &input).map_err(err)?;
        let outputs = self.plan.run(tvec!(tensor.into_tvalue())).map_err(err)?;
        let outputs = outputs
            .iter()
            .map(|t| Ok(t.try_as_plain_ram().map_err(err)?.as_slice::<f32>().map_err(err)?.to_vec()))
            .collect::<Result<Vec<Vec<f32>>>>()?;
        if let (Some(clock), Some(start), Some(input)) = (clock, start, recorded_input) {
            let ms = clock() - start;
            let run = ModelRun { model: self.name.clone(), dims: self.input_shape, input, output: outputs.first().cloned().unwrap_or_default(), ms };
            RECORDER.with(|r| {
                if let Some(rec) = r.borrow_mut().as_mut() {
                    rec.runs.push(run)
                }
            });
        }
        Ok(outputs)
    }
}

/// One model run seen by [`record_runs`]: which model, the exact input
/// tensor the pipeline built, its first output and how long tract took.
/// Benchmarks replay these inputs in another runtime (onnxruntime-web) so
/// both run the same floats.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelRun {
    pub model: String,
    pub dims: [usize; 4],
    pub input: Vec<f32>,
    pub output: Vec<f32>,
    pub ms: f64,
}

struct Recorder {
    clock: fn() -> f64,
    runs: Vec<ModelRun>,
}

thread_local! {
    // Off (None) except inside record_runs: the pipeline's hot path pays one
    // thread-local check per model run.
    static RECORDER: std::cell::RefCell<Option<Recorder>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns, with its result, every model run made inside it,
/// timed with `clock` (milliseconds; `Instant` natively, `performance.now()`
/// in the browser).
pub fn record_runs<T>(clock: fn() -> f64, f: impl FnOnce() -> T) -> (T, Vec<ModelRun>) {
    RECORDER.with(|r| *r.borrow_mut() = Some(Recorder { clock, runs: Vec::new() }));
    let out = f();
    let runs = RECORDER.with(|r| r.borrow_mut().take()).map(|r| r.runs).unwrap_or_default();
    (out, runs)
}
