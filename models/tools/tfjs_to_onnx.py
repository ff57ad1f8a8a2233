"""Convert a TensorFlow.js graph model (model.json + .bin shards) to ONNX.

Why our own converter: the usual route (tensorflowjs + tfjs-graph-converter +
tf2onnx) pulls in TensorFlow, JAX and friends (gigabytes, version conflicts)
just to split tfjs' fused ops again. The graph models facegate uses need only a
few dozen ops, so this script maps them directly with the `onnx` package and
numpy, keeping the build small and reproducible.

Layout: TF graphs are NHWC; ONNX convolutions are NCHW. Every rank-4 activation
is carried in NCHW ("nchw" layout); per-channel constants are reshaped to
[C,1,1]; axis arguments are remapped; a Transpose back to NHWC is inserted only
where a rank-4 tensor is flattened (Reshape) so element order matches TF.
The ONNX input is NCHW [1,3,H,W] float32 with the same value range as the
tfjs model expects.
"""

import base64
import json
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _b64(s):
    return base64.b64decode(s).decode()


def load_weights(model_dir, manifest):
    """Read every weight listed in weightsManifest, de-quantising as tfjs does."""
    weights = {}
    for group in manifest:
        blob = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                qdtype = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}[q["dtype"]]
                nbytes = count * np.dtype(qdtype).itemsize
                raw = np.frombuffer(blob[offset:offset + nbytes], dtype=qdtype)
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                else:
                    arr = raw.astype(np.float32) * q["scale"] + q["min"]
                if w["dtype"] == "int32":
                    arr = np.round(arr).astype(np.int32)
            else:
                dtype = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}[w["dtype"]]
                nbytes = count * np.dtype(dtype).itemsize
                arr = np.frombuffer(blob[offset:offset + nbytes], dtype=dtype)
            offset += nbytes
            weights[w["name"]] = arr.reshape(shape).copy()
    return weights


def same_pads(in_size, k, s, d=1):
    """TF 'SAME' padding split: the extra pixel goes after (bottom/right)."""
    out = math.ceil(in_size / s)
    eff_k = (k - 1) * d + 1
    total = max((out - 1) * s + eff_k - in_size, 0)
    return total // 2, total - total // 2


class Converter:
    def __init__(self, model_json, model_dir, input_hw, outputs, fixes=()):
        self.j = model_json
        self.nodes = {n["name"]: n for n in model_json["modelTopology"]["node"]}
        self.weights = load_weights(model_dir, model_json["weightsManifest"])
        self.input_hw = input_hw
        self.output_names = outputs
        self.fixes = set(fixes)
        self.onnx_nodes = []
        self.initializers = []
        # tensor name -> (onnx name, layout, shape in that layout) or numpy constant
        self.values = {}
        self.counter = 0
        if "fold_prelu" in self.fixes:
            self.fold_prelu(negate="negate_prelu_slopes" in self.fixes)

    def fold_prelu(self, negate):
        """Rewrite tfjs' decomposed PReLU, Add(Relu(x), Mul(Sub(x, Abs(x)), c)),
        into one Prelu(x, 2c) node (the op facegate runs in place).

        MobileFaceNet's tfjs graph needs it for two reasons. Where x comes
        from a depthwise convolution, the tfjs converter fused the Relu into
        that convolution although Abs and Sub read the same output, so every
        branch saw relu(x) and the PReLU became a plain ReLU: the fused Relu
        is dropped again here. And its slope constants have the opposite sign
        to the sirius-ai TFLite model the graph was made from (`negate`);
        checked against that reference in models/tools/check_reference.py.
        """
        nodes = self.nodes
        consumers = {}
        for n in nodes.values():
            for i in n.get("input", []):
                consumers.setdefault(i.split(":")[0], []).append(n)
        relu_b64 = base64.b64encode(b"Relu").decode()
        folded = 0
        for add in list(nodes.values()):
            if add["op"] != "Add" or len(add.get("input", [])) != 2:
                continue
            first, second = add["input"]
            mul = nodes.get(second)
            if not mul or mul["op"] != "Mul":
                continue
            sub_ref, c_ref = mul["input"]
            sub, c = nodes.get(sub_ref), nodes.get(c_ref)
            if not sub or sub["op"] != "Sub" or not c or c["op"] != "Const":
                continue
            x_ref, abs_ref = sub["input"]
            absn = nodes.get(abs_ref)
            if not absn or absn["op"] != "Abs" or absn["input"][0] != x_ref:
                continue
            relu = nodes.get(first)
            if relu is not None and relu["op"] == "Relu" and relu["input"][0] == x_ref:
                pass
            elif first == x_ref:
                # the Relu was fused into x's producer: take it out again
                producer = nodes[x_ref]
                fused = producer.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])
                if relu_b64 not in fused:
                    continue
                fused.remove(relu_b64)
            else:
                continue
            slope = np.asarray(self.op_Const(c, []), dtype=np.float32) * 2.0
            if negate:
                slope = -slope
            alpha_name = add["name"] + "/prelu_alpha"
            self.weights[alpha_name] = slope
            nodes[alpha_name] = {"name": alpha_name, "op": "Const"}
            nodes[add["name"]] = {"name": add["name"], "op": "Prelu", "input": [x_ref, alpha_name]}
            folded += 1
        self.folded_prelu = folded

    # --- helpers -------------------------------------------------------
    def fresh(self, base):
        self.counter += 1
        return f"{base.replace(':', '_')}__{self.counter}"

    def const(self, arr, base="c"):
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def emit(self, op, inputs, base, **attrs):
        out = self.fresh(base)
        self.onnx_nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def attr(self, node, key, default=None):
        a = node.get("attr", {}).get(key)
        if a is None:
            return default
        if "list" in a:
            lst = a["list"]
            if "i" in lst:
                return [int(x) for x in lst["i"]]
            if "s" in lst:
                return [_b64(x) for x in lst["s"]]
            if "f" in lst:
                return [float(x) for x in lst["f"]]
            return []
        if "s" in a:
            return _b64(a["s"])
        if "i" in a:
            return int(a["i"])
        if "f" in a:
            return float(a["f"])
        if "b" in a:
            return bool(a["b"])
        return a

    def get(self, ref):
        name = ref.split(":")[0]
        if ref.startswith("^"):
            return None
        if name not in self.values:
            self.convert(name)
        v = self.values[name]
        if isinstance(v, tuple) and ":" in ref and ref.split(":")[1] != "0":
            raise NotImplementedError(f"multi-output ref {ref}")
        return v

    def as_tensor(self, v, like=None):
        """Return an ONNX tensor name for a value, turning constants into initializers
        laid out to broadcast against `like` (an activation tuple)."""
        if isinstance(v, tuple):
            return v[0]
        arr = np.asarray(v)
        if like is not None and like[1] == "nchw" and arr.ndim >= 1 and arr.size > 1:
            c = arr.shape[-1]
            if arr.size == c:  # per-channel constant
                arr = arr.reshape(c, 1, 1)
            elif arr.ndim == 4:
                arr = arr.transpose(0, 3, 1, 2)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        return self.const(arr)

    def to_nchw(self, v):
        name, layout, shape = v
        if layout == "nchw" or len(shape) != 4:
            return v
        out = self.emit("Transpose", [name], "to_nchw", perm=[0, 3, 1, 2])
        n, h, w, c = shape
        return (out, "nchw", [n, c, h, w])

    def to_plain(self, v):
        name, layout, shape = v
        if layout != "nchw":
            return v
        out = self.emit("Transpose", [name], "to_nhwc", perm=[0, 2, 3, 1])
        n, c, h, w = shape
        return (out, "plain", [n, h, w, c])

    # --- conversion ----------------------------------------------------
    def convert(self, name):
        node = self.nodes[name]
        op = node["op"]
        ins = [i for i in node.get("input", []) if not i.startswith("^")]
        handler = getattr(self, "op_" + op.lstrip("_"), None)
        if handler is None:
            raise NotImplementedError(f"op {op} ({name})")
        self.values[name] = handler(node, ins)

    def op_Const(self, node, ins):
        if node["name"] in self.weights:
            return self.weights[node["name"]]
        t = node["attr"]["value"]["tensor"]
        dtype = {"DT_FLOAT": np.float32, "DT_INT32": np.int32}[t["dtype"]]
        shape = [int(d["size"]) for d in t.get("tensorShape", {}).get("dim", [])]
        if "floatVal" in t:
            vals = [float(x) for x in t["floatVal"]]
        elif "intVal" in t:
            vals = [int(x) for x in t["intVal"]]
        else:
            vals = [0]
        arr = np.array(vals, dtype=dtype)
        count = int(np.prod(shape)) if shape else 1
        if arr.size == 1 and count != 1:
            arr = np.full(count, arr[0], dtype=dtype)
        return arr.reshape(shape)

    def op_Placeholder(self, node, ins):
        h, w = self.input_hw
        self.input_name = "input"
        return ("input", "nchw", [1, 3, h, w])

    def op_Identity(self, node, ins):
        return self.get(ins[0])

    def _conv(self, node, ins, depthwise):
        x = self.to_nchw(self.get(ins[0]))
        w = self.get(ins[1])
        strides = self.attr(node, "strides", [1, 1, 1, 1])[1:3]
        dil = self.attr(node, "dilations", [1, 1, 1, 1])[1:3]
        padding = self.attr(node, "padding")
        kh, kw = w.shape[0], w.shape[1]
        _, c, h, wd = x[2]
        if depthwise:
            mult = w.shape[3]
            wt = w.transpose(2, 3, 0, 1).reshape(c * mult, 1, kh, kw)
            group, cout = c, c * mult
        else:
            wt = w.transpose(3, 2, 0, 1)
            group, cout = 1, w.shape[3]
        if padding == "SAME":
            pt, pb = same_pads(h, kh, strides[0], dil[0])
            pl, pr = same_pads(wd, kw, strides[1], dil[1])
        elif padding == "VALID":
            pt = pb = pl = pr = 0
        elif padding == "EXPLICIT":
            ep = self.attr(node, "explicit_paddings")
            pt, pb, pl, pr = ep[2], ep[3], ep[4], ep[5]
        else:
            raise NotImplementedError(padding)
        inputs = [x[0], self.const(wt.astype(np.float32), "w")]
        fused = self.attr(node, "fused_ops", [])
        extra = ins[2:]
        if fused and fused[0] == "BiasAdd":
            inputs.append(self.const(np.asarray(self.get(extra[0])).astype(np.float32).reshape(-1), "b"))
        elif fused:
            raise NotImplementedError(f"fused {fused}")
        out = self.emit("Conv", inputs, node["name"], strides=strides, dilations=dil,
                        pads=[pt, pl, pb, pr], group=group, kernel_shape=[kh, kw])
        oh = (h + pt + pb - ((kh - 1) * dil[0] + 1)) // strides[0] + 1
        ow = (wd + pl + pr - ((kw - 1) * dil[1] + 1)) // strides[1] + 1
        res = (out, "nchw", [1, cout, oh, ow])
        for act in fused[1:]:
            skip_relu = depthwise and act == "Relu" and "unfuse_depthwise_relu" in self.fixes
            if skip_relu:
                continue
            res = self._activation(act, res, extra[1:])
        return res

    def _activation(self, act, x, args):
        if act == "Relu":
            return (self.emit("Relu", [x[0]], "relu"), x[1], x[2])
        if act == "Relu6":
            return (self.emit("Clip", [x[0], self.const(np.float32(0)), self.const(np.float32(6))], "relu6"), x[1], x[2])
        if act == "Prelu":
            alpha = np.asarray(self.get(args[0]), dtype=np.float32).reshape(-1)
            slope = alpha.reshape(-1, 1, 1) if x[1] == "nchw" else alpha
            return (self.emit("PRelu", [x[0], self.const(slope)], "prelu"), x[1], x[2])
        raise NotImplementedError(act)

    def op_FusedConv2D(self, node, ins):
        return self._conv(node, ins, depthwise=False)

    op_Conv2D = op_FusedConv2D

    def op_FusedDepthwiseConv2dNative(self, node, ins):
        return self._conv(node, ins, depthwise=True)

    op_DepthwiseConv2dNative = op_FusedDepthwiseConv2dNative

    def op_Relu(self, node, ins):
        return self._activation("Relu", self.get(ins[0]), [])

    def op_Prelu(self, node, ins):
        return self._activation("Prelu", self.get(ins[0]), ins[1:])

    def _unary(onnx_op):
        def f(self, node, ins):
            x = self.get(ins[0])
            if not isinstance(x, tuple):
                raise NotImplementedError("constant unary")
            return (self.emit(onnx_op, [x[0]], node["name"]), x[1], x[2])
        return f

    op_Abs = _unary("Abs")
    op_Sigmoid = _unary("Sigmoid")
    op_Sqrt = _unary("Sqrt")
    op_Tanh = _unary("Tanh")

    def op_Square(self, node, ins):
        x = self.get(ins[0])
        return (self.emit("Mul", [x[0], x[0]], node["name"]), x[1], x[2])

    def op_Rsqrt(self, node, ins):
        x = self.get(ins[0])
        s = self.emit("Sqrt", [x[0]], node["name"] + "_sqrt")
        return (self.emit("Reciprocal", [s], node["name"]), x[1], x[2])

    def _binary(onnx_op, np_fn):
        def f(self, node, ins):
            a, b = self.get(ins[0]), self.get(ins[1])
            if not isinstance(a, tuple) and not isinstance(b, tuple):
                return np_fn(np.asarray(a), np.asarray(b))
            if isinstance(a, tuple) and isinstance(b, tuple) and a[1] != b[1]:
                a, b = self.to_nchw(a), self.to_nchw(b)
            act = a if isinstance(a, tuple) else b
            out = self.emit(onnx_op, [self.as_tensor(a, act), self.as_tensor(b, act)], node["name"])
            shape = act[2]
            if isinstance(a, tuple) and isinstance(b, tuple):
                shape = [max(x, y) for x, y in zip(a[2], b[2])] if len(a[2]) == len(b[2]) else act[2]
            return (out, act[1], shape)
        return f

    op_Add = _binary("Add", np.add)
    op_AddV2 = op_Add
    op_Sub = _binary("Sub", np.subtract)
    op_Mul = _binary("Mul", np.multiply)
    op_RealDiv = _binary("Div", np.divide)
    op_Maximum = _binary("Max", np.maximum)
    op_Minimum = _binary("Min", np.minimum)

    def op_Pad(self, node, ins):
        x = self.to_nchw(self.get(ins[0]))
        p = np.asarray(self.get(ins[1])).reshape(4, 2)
        # NHWC pairs -> NCHW begin..., end...
        order = [0, 3, 1, 2]
        begins = [int(p[i][0]) for i in order]
        ends = [int(p[i][1]) for i in order]
        out = self.emit("Pad", [x[0], self.const(np.array(begins + ends, dtype=np.int64))], node["name"], mode="constant")
        shape = [s + b + e for s, b, e in zip(x[2], begins, ends)]
        return (out, "nchw", shape)

    def op_MaxPool(self, node, ins):
        x = self.to_nchw(self.get(ins[0]))
        k = self.attr(node, "ksize")[1:3]
        s = self.attr(node, "strides")[1:3]
        _, c, h, w = x[2]
        if self.attr(node, "padding") == "SAME":
            pt, pb = same_pads(h, k[0], s[0])
            pl, pr = same_pads(w, k[1], s[1])
        else:
            pt = pb = pl = pr = 0
        out = self.emit("MaxPool", [x[0]], node["name"], kernel_shape=k, strides=s, pads=[pt, pl, pb, pr])
        oh = (h + pt + pb - k[0]) // s[0] + 1
        ow = (w + pl + pr - k[1]) // s[1] + 1
        return (out, "nchw", [1, c, oh, ow])

    def op_Reshape(self, node, ins):
        x = self.to_plain(self.get(ins[0]))
        shape = [int(v) for v in np.asarray(self.get(ins[1])).reshape(-1)]
        shape = [1 if (i == 0 and v == -1) else v for i, v in enumerate(shape)]
        total = int(np.prod(x[2]))
        if -1 in shape:
            known = int(np.prod([v for v in shape if v != -1]))
            shape = [total // known if v == -1 else v for v in shape]
        out = self.emit("Reshape", [x[0], self.const(np.array(shape, dtype=np.int64))], node["name"])
        return (out, "plain", shape)

    def _axes(self, x, axes):
        axes = [a % len(x[2]) for a in axes]
        if x[1] == "nchw":
            axes = [NHWC_TO_NCHW_AXIS[a] for a in axes]
        return axes

    def _reduce(self, node, ins, onnx_op):
        x = self.get(ins[0])
        axes = self._axes(x, [int(a) for a in np.asarray(self.get(ins[1])).reshape(-1)])
        keep = self.attr(node, "keep_dims", False)
        if onnx_op == "ReduceSum":  # opset 13: ReduceSum takes axes as an input, the others as an attribute
            out = self.emit(onnx_op, [x[0], self.const(np.array(axes, dtype=np.int64))], node["name"], keepdims=int(keep))
        else:
            out = self.emit(onnx_op, [x[0]], node["name"], axes=axes, keepdims=int(keep))
        if keep:
            shape = [1 if i in axes else s for i, s in enumerate(x[2])]
            return (out, x[1], shape)
        shape = [s for i, s in enumerate(x[2]) if i not in axes]
        # dropping spatial axes of an NCHW tensor leaves [N,C], same as TF's [N,C]
        return (out, "plain", shape)

    def op_Sum(self, node, ins):
        return self._reduce(node, ins, "ReduceSum")

    def op_Mean(self, node, ins):
        return self._reduce(node, ins, "ReduceMean")

    def op_Squeeze(self, node, ins):
        x = self.get(ins[0])
        axes = self._axes(x, self.attr(node, "squeeze_dims"))
        out = self.emit("Squeeze", [x[0], self.const(np.array(axes, dtype=np.int64))], node["name"])
        shape = [s for i, s in enumerate(x[2]) if i not in axes]
        return (out, "plain", shape)

    def op_MatMul(self, node, ins):
        a = self.to_plain(self.get(ins[0]))
        b = self.get(ins[1])
        if self.attr(node, "transpose_a", False):
            raise NotImplementedError("transpose_a")
        bw = np.asarray(b, dtype=np.float32)
        if self.attr(node, "transpose_b", False):
            bw = bw.T
        out = self.emit("MatMul", [a[0], self.const(bw, "mm")], node["name"])
        res = (out, "plain", [a[2][0], bw.shape[1]])
        fused = self.attr(node, "fused_ops", [])
        if fused and fused[0] == "BiasAdd":
            bias = np.asarray(self.get(ins[2]), dtype=np.float32)
            res = (self.emit("Add", [res[0], self.const(bias)], node["name"] + "_bias"), "plain", res[2])
            for act in fused[1:]:
                res = self._activation(act, res, ins[3:])
        elif fused:
            raise NotImplementedError(fused)
        return res

    op_FusedMatMul = op_MatMul

    def op_ConcatV2(self, node, ins):
        # the last input is the axis; the tensors share a layout (the iris
        # model concatenates two 1x1 conv heads along channels)
        n = self.attr(node, "N", len(ins) - 1)
        xs = [self.get(i) for i in ins[:n]]
        axis = int(np.asarray(self.get(ins[n])).reshape(-1)[0])
        layout = xs[0][1]
        xs = [x if x[1] == layout else self.to_plain(x) for x in xs]
        if any(x[1] != layout for x in xs):
            layout = "plain"
            xs = [self.to_plain(x) for x in xs]
        ax = self._axes(xs[0], [axis])[0]
        shape = list(xs[0][2])
        shape[ax] = sum(x[2][ax] for x in xs)
        out = self.emit("Concat", [x[0] for x in xs], node["name"], axis=ax)
        return (out, layout, shape)

    def op_Softmax(self, node, ins):
        x = self.to_plain(self.get(ins[0]))
        return (self.emit("Softmax", [x[0]], node["name"], axis=-1), "plain", x[2])

    def build(self, model_name):
        outputs = []
        for i, ref in enumerate(self.output_names):
            v = self.get(ref)
            v = self.to_plain(v)
            name = f"output{i}"
            self.onnx_nodes.append(helper.make_node("Identity", [v[0]], [name], name=name))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, v[2]))
        h, w = self.input_hw
        graph = helper.make_graph(
            self.onnx_nodes, model_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
            outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="facegate-tfjs-to-onnx")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def convert(model_json_path, out_path, input_hw, outputs, fixes=()):
    with open(model_json_path) as f:
        mj = json.load(f)
    conv = Converter(mj, os.path.dirname(model_json_path), input_hw, outputs, fixes)
    model = conv.build(os.path.basename(model_json_path).replace(".json", ""))
    # deterministic bytes: no doc strings or timestamps in the proto
    data = model.SerializeToString(deterministic=True)
    with open(out_path, "wb") as f:
        f.write(data)
    return out_path


if __name__ == "__main__":
    src, dst, h, w = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    outs = sys.argv[5].split(",")
    fixes = sys.argv[6].split(",") if len(sys.argv) > 6 else ()
    convert(src, dst, (h, w), outs, fixes)
    print(dst)
