"""Export Silent-Face-Anti-Spoofing's MiniFASNet (V2 and V1SE) state dicts to ONNX.

The upstream repository ships PyTorch state dicts only. The architecture is
re-derived here from the state dict's own names and shapes (conv widths,
which blocks have an SE module) plus the fixed layout of upstream's
MiniFASNet.py (3x3 kernels, padding 1, strides 2 at conv1/conv_23/conv_34/
conv_45, a 5x5 depthwise head for 80x80 input). Batch norms are folded into
the preceding convolution (inference mode, eps 1e-5).

Contract of the exported model: input `input` float32 [1,3,80,80], BGR, raw
0..255 values (upstream's transform skips the /255); output `output0` [1,3]
softmax probabilities, class 1 = bona fide (real face), 0 and 2 = attacks.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import torch_legacy

EPS = 1e-5


class Builder:
    def __init__(self, sd):
        self.sd = {k.replace("module.", "", 1): v.astype(np.float32) for k, v in sd.items()
                   if not k.endswith("num_batches_tracked")}
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def init(self, arr, base):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), nm))
        return nm

    def node(self, op, ins, base, **attrs):
        out = self.name(base)
        self.nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def bn_fold(self, prefix):
        g, b = self.sd[prefix + ".weight"], self.sd[prefix + ".bias"]
        m, v = self.sd[prefix + ".running_mean"], self.sd[prefix + ".running_var"]
        scale = g / np.sqrt(v + EPS)
        return scale, b - m * scale

    def conv_bn(self, x, prefix, stride=1, pad=None, prelu=True, bn="bn", conv="conv"):
        w = self.sd[f"{prefix}.{conv}.weight"]
        cout, cin_g, kh, kw = w.shape
        scale, bias = self.bn_fold(f"{prefix}.{bn}")
        w = w * scale[:, None, None, None]
        group = cout if cin_g == 1 and cout > 1 and kh > 1 else 1
        p = (kh // 2) if pad is None else pad
        y = self.node("Conv", [x, self.init(w, "w"), self.init(bias, "b")], prefix,
                      kernel_shape=[kh, kw], strides=[stride, stride], pads=[p, p, p, p], group=group)
        if prelu:
            slope = self.sd[f"{prefix}.prelu.weight"].reshape(-1, 1, 1)
            y = self.node("PRelu", [y, self.init(slope, "slope")], prefix + "_prelu")
        return y

    def depth_wise(self, x, prefix, stride, residual):
        y = self.conv_bn(x, prefix + ".conv", pad=0)
        y = self.conv_bn(y, prefix + ".conv_dw", stride=stride, pad=1)
        y = self.conv_bn(y, prefix + ".project", pad=0, prelu=False)
        if f"{prefix}.se_module.fc1.weight" in self.sd:
            y = self.se(y, prefix + ".se_module")
        if residual:
            y = self.node("Add", [x, y], prefix + "_res")
        return y

    def se(self, x, prefix):
        s = self.node("GlobalAveragePool", [x], prefix + "_pool")
        s = self.conv_bn(s, prefix, pad=0, prelu=False, bn="bn1", conv="fc1")
        s = self.node("Relu", [s], prefix + "_relu")
        s = self.conv_bn(s, prefix, pad=0, prelu=False, bn="bn2", conv="fc2")
        s = self.node("Sigmoid", [s], prefix + "_sig")
        return self.node("Mul", [x, s], prefix + "_scale")

    def residual(self, x, prefix):
        i = 0
        while f"{prefix}.model.{i}.conv.conv.weight" in self.sd:
            x = self.depth_wise(x, f"{prefix}.model.{i}", 1, True)
            i += 1
        return x

    def build(self):
        x = "input"
        x = self.conv_bn(x, "conv1", stride=2, pad=1)
        x = self.conv_bn(x, "conv2_dw", stride=1, pad=1)
        x = self.depth_wise(x, "conv_23", 2, False)
        x = self.residual(x, "conv_3")
        x = self.depth_wise(x, "conv_34", 2, False)
        x = self.residual(x, "conv_4")
        x = self.depth_wise(x, "conv_45", 2, False)
        x = self.residual(x, "conv_5")
        x = self.conv_bn(x, "conv_6_sep", pad=0)
        x = self.conv_bn(x, "conv_6_dw", pad=0, prelu=False)
        x = self.node("Flatten", [x], "flatten", axis=1)
        # linear (no bias) followed by BatchNorm1d, folded into one Gemm
        scale, bias = self.bn_fold("bn")
        lw = self.sd["linear.weight"] * scale[:, None]
        x = self.node("Gemm", [x, self.init(lw, "lin"), self.init(bias, "linb")], "linear", transB=1)
        x = self.node("Gemm", [x, self.init(self.sd["prob.weight"], "prob")], "prob", transB=1)
        x = self.node("Softmax", [x], "softmax", axis=1)
        self.nodes.append(helper.make_node("Identity", [x], ["output0"], name="output0"))
        graph = helper.make_graph(
            self.nodes, "minifasnet",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 80, 80])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                  producer_name="facegate-minifasnet")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def convert(pth, out):
    model = Builder(torch_legacy.load_state_dict(pth)).build()
    with open(out, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    return out


if __name__ == "__main__":
    print(convert(sys.argv[1], sys.argv[2]))
