//! PReLU as one in-place pass, registered in place of tract-onnx's own.
//!
//! Why: tract-onnx expands `PRelu(x, slope)` into three broadcasting ops
//! (`slope * x`, `0 > x`, `iff`) whose evaluation goes through ndarray's
//! generic zip. Natively that is merely wasteful; in wasm32 it is scalar code
//! with per-element stride arithmetic, and a profile of the widget's frame
//! (node --cpu-prof on the wasm build) put about a third of all time there:
//! Face Mesh and both MiniFASNets have a PReLU after nearly every convolution.
//! Here the per-channel slope is read once per channel and a channel's
//! contiguous values go through one select (SIMD128 in the browser, a loop
//! LLVM vectorises natively). The result is the same float for every
//! input: `x` where `x >= 0` (and for NaN), `slope * x` below zero.
//!
//! Shapes other than a constant slope of one value per channel (axis 1) or a
//! single value are wired as `max(x, 0) + slope * min(x, 0)`, which tract
//! evaluates with its linalg kernels; no model facegate ships takes that path.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// Replace the `PRelu` builder of an ONNX op register with this module's.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("PRelu", |_: &ParsingContext, _: &NodeProto| Ok((expand(PreluExpansion), vec![])));
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct PreluExpansion;

impl Expansion for PreluExpansion {
    fn name(&self) -> StaticName {
        "PRelu".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(&'s self, s: &mut Solver<'r>, inputs: &'p [TensorProxy], outputs: &'p [TensorProxy]) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, name: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = inputs[0];
        let x_fact = model.outlet_fact(x)?.clone();
        let slope_fact = model.outlet_fact(inputs[1])?.clone();
        if x_fact.datum_type == f32::datum_type() {
            if let Some(slope) = slope_fact.konst.as_ref().and_then(|k| per_channel_slope(&x_fact, k)) {
                return model.wire_node(name, PreluPerChannel { slope: Arc::new(tensor1(&slope)) }, &[x]);
            }
        }
        // general broadcast: max(x, 0) + slope * min(x, 0)
        let mut slope = inputs[1];
        while model.outlet_fact(slope)?.rank() < x_fact.rank() {
            slope = model.wire_node(format!("{name}.add-axis-{}", model.outlet_fact(slope)?.rank()), AxisOp::Add(0), &[slope])?[0];
        }
        let zero = model.add_const(format!("{name}.zero"), tensor0(0.0).cast_to_dt(x_fact.datum_type)?.into_owned().broadcast_into_rank(x_fact.rank())?)?;
        let pos = model.wire_node(format!("{name}.pos"), tract_core::ops::math::max(), &[x, zero])?[0];
        let neg = model.wire_node(format!("{name}.neg"), tract_core::ops::math::min(), &[x, zero])?[0];
        let scaled = model.wire_node(format!("{name}.scaled"), tract_core::ops::math::mul(), &[neg, slope])?[0];
        model.wire_node(name, tract_core::ops::math::add(), &[pos, scaled])
    }
}

/// The slope as one value per channel of `x` (axis 1), when it is a single
/// value or broadcasts along axis 1 only; otherwise `None`.
fn per_channel_slope(x: &TypedFact, slope: &Tensor) -> Option<Vec<f32>> {
    let shape = x.shape.as_concrete()?;
    let values = slope.cast_to::<f32>().ok()?.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
    let channels = *shape.get(1)?;
    if values.len() == 1 {
        return Some(vec![values[0]; channels]);
    }
    // right-align the slope's shape with x's and require [.., C, 1, .., 1] with C at axis 1
    let rank = shape.len();
    let s = slope.shape();
    if s.len() > rank || values.len() != channels {
        return None;
    }
    let aligned: Vec<usize> = std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect();
    let only_axis_1 = aligned.iter().enumerate().all(|(axis, &d)| if axis == 1 { d == channels } else { d == 1 });
    only_axis_1.then_some(values)
}

/// `x < 0 ? slope[c] * x : x` for `x` of shape [N, C, ...] (f32), in place.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct PreluPerChannel {
    slope: Arc<Tensor>,
}

impl Op for PreluPerChannel {
    fn name(&self) -> StaticName {
        "PReluPerChannel".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PreluPerChannel {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let mut x = x.into_tensor();
        let slope = self.slope.try_as_plain_ram()?.as_slice::<f32>()?;
        let channels = slope.len();
        let plane = x.shape().iter().skip(2).product::<usize>();
        if plane > 0 {
            let mut storage = x.try_as_plain_ram_mut()?;
            let values = storage.as_slice_mut::<f32>()?;
            for (i, chunk) in values.chunks_exact_mut(plane).enumerate() {
                prelu_in_place(chunk, slope[i % channels]);
            }
        }
        Ok(tvec!(x.into_tvalue()))
    }
}

/// `v < 0 ? a * v : v` over one channel. Written with SIMD128 in wasm
/// because the browser build is optimised for size, where LLVM does not
/// vectorise loops; natively the plain select vectorises.
fn prelu_in_place(values: &mut [f32], a: f32) {
    #[allow(unused_mut)]
    let mut rest = values;
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use std::arch::wasm32::*;
        let (zero, av) = (f32x4_splat(0.0), f32x4_splat(a));
        let mut lanes = rest.chunks_exact_mut(4);
        for quad in &mut lanes {
            // SAFETY: `quad` is 4 f32 = 16 readable and writable bytes; v128 loads and stores need no alignment
            unsafe {
                let v = v128_load(quad.as_ptr() as *const v128);
                let negative = f32x4_lt(v, zero);
                v128_store(quad.as_mut_ptr() as *mut v128, v128_bitselect(f32x4_mul(v, av), v, negative));
            }
        }
        rest = lanes.into_remainder();
    }
    for v in rest {
        *v = if *v < 0.0 { *v * a } else { *v };
    }
}

impl TypedOp for PreluPerChannel {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].datum_type.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-node ONNX graph `y = PRelu(x, slope)`, built with tract's own
    /// protobuf types so the test needs no model file.
    fn prelu_model(x_shape: &[usize], slope_shape: &[usize], slope: &[f32]) -> Vec<u8> {
        use tract_onnx::pb::*;
        let value_info = |name: &str, shape: &[usize]| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: tensor_proto::DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: shape.iter().map(|&d| tensor_shape_proto::Dimension { value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)), ..Default::default() }).collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let graph = GraphProto {
            name: "prelu".into(),
            node: vec![NodeProto { op_type: "PRelu".into(), input: vec!["x".into(), "slope".into()], output: vec!["y".into()], ..Default::default() }],
            initializer: vec![TensorProto { name: "slope".into(), dims: slope_shape.iter().map(|&d| d as i64).collect(), data_type: tensor_proto::DataType::Float as i32, float_data: slope.to_vec(), ..Default::default() }],
            input: vec![value_info("x", x_shape)],
            output: vec![value_info("y", x_shape)],
            ..Default::default()
        };
        let model = ModelProto { ir_version: 8, opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }], graph: Some(graph), ..Default::default() };
        prost::Message::encode_to_vec(&model)
    }

    fn run(bytes: &[u8], x_shape: &[usize], x: &[f32]) -> (Vec<f32>, bool) {
        let mut onnx = tract_onnx::onnx();
        register(&mut onnx.op_register);
        let mut model = onnx.model_for_read(&mut std::io::Cursor::new(bytes)).unwrap();
        model.set_input_fact(0, f32::fact(x_shape).into()).unwrap();
        let plan = model.into_optimized().unwrap();
        let fused = plan.nodes().iter().any(|n| n.op.name() == "PReluPerChannel");
        let plan = plan.into_runnable().unwrap();
        let out = plan.run(tvec!(Tensor::from_shape(x_shape, x).unwrap().into_tvalue())).unwrap();
        (out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec(), fused)
    }

    fn reference(x: &[f32], slope_of: impl Fn(usize) -> f32) -> Vec<f32> {
        x.iter().enumerate().map(|(i, &v)| if v < 0.0 { slope_of(i) * v } else { v }).collect()
    }

    #[test]
    fn per_channel_slope_matches_the_definition() {
        let (c, plane) = (3, 6);
        let x: Vec<f32> = (0..2 * c * plane).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let slope = [0.25, -0.5, 2.0];
        let (y, fused) = run(&prelu_model(&[2, c, 2, 3], &[c, 1, 1], &slope), &[2, c, 2, 3], &x);
        assert!(fused, "a constant per-channel slope takes the one-pass op");
        assert_eq!(y, reference(&x, |i| slope[(i / plane) % c]));
    }

    #[test]
    fn other_broadcasts_take_the_general_form() {
        // a slope varying along the last axis is not per channel
        let x: Vec<f32> = (0..24).map(|i| i as f32 - 12.0).collect();
        let slope = [0.1, 0.2, 0.3, 0.4];
        let (y, fused) = run(&prelu_model(&[1, 2, 3, 4], &[4], &slope), &[1, 2, 3, 4], &x);
        assert!(!fused);
        assert_eq!(y, reference(&x, |i| slope[i % 4]));
    }
}
