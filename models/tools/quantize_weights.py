"""8-bit weight storage for an ONNX model: smaller downloads, same compute.

    python3 models/tools/quantize_weights.py IN.onnx OUT.onnx

Every float32 initializer of at least MIN_ELEMENTS values that feeds a Conv,
ConvTranspose, Gemm or MatMul is stored as int8 with one float32 scale per
output channel (symmetric, scale = max|w| / 127), and rebuilt at load time by
`Cast(int8 -> float) * scale`. Both ops have constant inputs, so the runtime
(tract) folds them into float32 weights when it optimises the graph: the
model runs in float32 exactly as before, only the file shrinks about 4x.

Cast and Mul exist in every opset the models use, so the graph's opset is
left alone (DequantizeLinear with a per-channel axis would need opset 13).
Deterministic: the same input gives the same bytes.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MIN_ELEMENTS = 256
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def quantize(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    weight_inputs = set()
    for node in graph.node:
        if node.op_type in WEIGHT_OPS and len(node.input) > 1:
            weight_inputs.add(node.input[1])
    keep, added_inits, added_nodes = [], [], []
    for init in graph.initializer:
        w = numpy_helper.to_array(init)
        if init.name not in weight_inputs or w.dtype != np.float32 or w.size < MIN_ELEMENTS:
            keep.append(init)
            continue
        # per output channel: axis 0 for Conv / ConvTranspose-style (O, I, kh, kw)
        # and for Gemm with transB; the last axis for MatMul (K, N)
        axis = w.ndim - 1 if any(n.op_type == "MatMul" and n.input[1] == init.name for n in graph.node) else 0
        reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
        peak = np.max(np.abs(w), axis=reduce_axes, keepdims=True) if reduce_axes else np.abs(w)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        added_inits.append(numpy_helper.from_array(q, init.name + "__q8"))
        added_inits.append(numpy_helper.from_array(scale, init.name + "__scale"))
        added_nodes.append(helper.make_node("Cast", [init.name + "__q8"], [init.name + "__f32"], to=TensorProto.FLOAT, name=init.name + "__cast"))
        added_nodes.append(helper.make_node("Mul", [init.name + "__f32", init.name + "__scale"], [init.name], name=init.name + "__dequant"))
    del graph.initializer[:]
    graph.initializer.extend(keep + added_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(added_nodes + nodes)
    # the quantised weights are no longer graph inputs of their own (older
    # exporters list initializers among the inputs)
    names = {i.name for i in added_inits}
    replaced = {n.output[0] for n in added_nodes if n.op_type == "Mul"}
    kept_inputs = [i for i in graph.input if i.name not in replaced and i.name not in names]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    onnx.checker.check_model(model)
    return model


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model = onnx.load(sys.argv[1])
    onnx.save(quantize(model), sys.argv[2])


if __name__ == "__main__":
    main()
