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
        let mut model = tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(bytes)).map_err(err)?;
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
        let tensor = Tensor::from_shape(&self.input_shape, &input).map_err(err)?;
        let outputs = self.plan.run(tvec!(tensor.into_tvalue())).map_err(err)?;
        outputs
            .iter()
            .map(|t| Ok(t.try_as_plain_ram().map_err(err)?.as_slice::<f32>().map_err(err)?.to_vec()))
            .collect()
    }
}
