"""The blocks random_graphs.py strings together: one function per block kind, on top of GraphBuilder.

`cnn_block` and `mlp_block` take the current tensor, its channel count (and spatial size) and return
the new ones; residual blocks record their `Add` and the weights that, zeroed, make f(x) == 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from graphs import GraphBuilder

if TYPE_CHECKING:
    from random_graphs import Recipe

SPATIAL = 8
SEQ = 4


class Net:
    """The tensor being built, its channel count and spatial size, on top of GraphBuilder."""

    def __init__(self, recipe: Recipe):
        self.g = GraphBuilder(recipe.opset, recipe.seed)
        self.opset = recipe.opset
        self.residuals: list[tuple[str, tuple[str, ...]]] = []
        self.dynamic = recipe.dynamic
        self._targets: dict[tuple, str] = {}

    def act(self, x: str, name: str) -> str:
        if name == "LeakyRelu":
            return self.g.op(name, [x], alpha=0.1)
        return self.g.op(name, [x])

    def bn(self, x: str, channels: int) -> str:
        g = self.g
        params = [g.weight((channels,), "bn_scale", positive=True), g.weight((channels,), "bn_bias"),
                  g.weight((channels,), "bn_mean"), g.weight((channels,), "bn_var", positive=True)]
        return g.op("BatchNormalization", [x, *params])

    def linear(self, x: str, cin: int, cout: int, name: str = "fc") -> str:
        g = self.g
        product = g.op("MatMul", [x, g.weight((cin, cout), f"{name}_W")], name=name)
        return g.op("Add", [product, g.weight((cout,), f"{name}_B")], name=f"{name}_bias")

    def target(self, x: str, leading: int, rest: list[int]) -> str:
        """A Reshape target: the first `leading` sizes of x (read at run time when dynamic), then `rest`.

        Dynamic targets are built once per (x, leading, rest), so Q, K and V share one, as exported."""
        if not self.dynamic:
            return self.g.ints([1, SEQ][:leading] + rest, "shape")
        key = (x, leading, tuple(rest))
        if key not in self._targets:
            shape = self.g.op("Shape", [x])
            sizes = [self.unsqueeze(self.g.op("Gather", [shape, self.g.ints(i, "index")], axis=0), [0])
                     for i in range(leading)]
            self._targets[key] = self.g.op("Concat", [*sizes, self.g.ints(rest, "sizes")], axis=0)
        return self._targets[key]

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        return self.g.op("Unsqueeze", [x, self.g.ints(axes, "axes")])

    def axes_op(self, op_type: str, x: str, axes: list[int], **attrs) -> str:
        """ReduceMean takes axes as an input from opset 18 on, an attribute before."""
        if self.opset >= 18:
            return self.g.op(op_type, [x, self.g.ints(axes, "axes")], **attrs)
        return self.g.op(op_type, [x], axes=axes, **attrs)


def cnn_block(net: Net, block: tuple, x: str, c: int, spatial: int) -> tuple[str, int, int]:
    g, kind = net.g, block[0]
    if kind == "conv":
        _, width, act, bn, k = block
        y = g.conv(x, c, width, k=k, bias=not bn)
        return net.act(net.bn(y, width) if bn else y, act), width, spatial
    if kind == "group":
        _, width, groups, act = block
        return net.act(g.conv(x, c, width, group=groups, name="gconv"), act), width, spatial
    if kind == "residual":
        _, hidden, act, bn, swap = block
        y = net.act(g.conv(x, c, hidden, name="res_a"), act)
        y = g.conv(y, hidden, c, name="res_b", bias=not bn)
        if bn:
            y = net.bn(y, c)
        out = g.op("Add", [y, x] if swap else [x, y], name="res_add")
        last = g.nodes[-2]  # res_b (weight, bias) or its BatchNormalization (scale, bias)
        net.residuals.append((out, (last.input[1], last.input[2])))
        return out, c, spatial
    if kind == "concat":
        _, w1, w2, act, axis = block
        a = net.act(g.conv(x, c, w1, name="left"), act)
        b = g.conv(x, c, w2, k=1, name="right")
        return g.op("Concat", [a, b], axis=axis), w1 + w2, spatial
    if kind == "dense":
        _, growth, act = block
        return g.op("Concat", [x, net.act(g.conv(x, c, growth, name="dense"), act)], axis=1), c + growth, spatial
    if kind == "split":
        _, sizes, mode, width, act = block
        parts = g.op("Split", [x, g.ints(list(sizes), "split")], outputs=len(sizes), axis=1)
        if mode == "sum":
            branches = [g.conv(p, s, width, k=1, name="part") for p, s in zip(parts, sizes)]
            return g.op("Sum", branches), width, spatial
        parts = [net.act(p, act) for p in parts]
        return g.op("Concat", parts[::-1] if mode == "reorder" else parts, axis=1), c, spatial
    if kind == "split_equal":  # no sizes: equal parts (num_outputs from opset 18 on)
        _, count, act = block
        attrs = {"num_outputs": count} if net.opset >= 18 else {}
        parts = [net.act(p, act) for p in g.op("Split", [x], outputs=count, axis=1, **attrs)]
        return g.op("Concat", parts[::-1], axis=1), c, spatial
    if kind == "slice":
        _, start, end, style = block
        if style == "negative":
            bounds, axis = [start - c, end - c if end < c else c], -3
        elif style == "open":
            bounds, axis = [start, 2**63 - 1], 1
        else:
            bounds, axis = [start, end], 1
        y = g.op("Slice", [x, g.ints(bounds[:1]), g.ints(bounds[1:]), g.ints([axis])])
        return y, end - start, spatial
    if kind == "depthwise":
        _, act, k, bn = block
        y = g.conv(x, c, c, k=k, group=c, bias=not bn, name="dw")
        return net.act(net.bn(y, c) if bn else y, act), c, spatial
    if kind == "se":
        _, reduced = block
        s = g.op("GlobalAveragePool", [x])
        s = g.op("Relu", [g.conv(s, c, reduced, k=1, name="se_reduce")])
        s = g.op("Sigmoid", [g.conv(s, reduced, c, k=1, name="se_expand")])
        return g.op("Mul", [x, s], name="se_mul"), c, spatial
    if kind == "se_fc":  # the timm/torchvision-Linear variant: mean, two Gemms, Unsqueeze back to [N, C, 1, 1]
        _, reduced = block
        s = net.axes_op("ReduceMean", x, [2, 3], keepdims=0)
        s = g.op("Relu", [g.op("Gemm", [s, g.weight((reduced, c), "fc1_W"), g.weight((reduced,), "fc1_B")],
                               transB=1)])
        s = g.op("Sigmoid", [g.op("Gemm", [s, g.weight((reduced, c), "fc2_W"), g.weight((c,), "fc2_B")])])
        return g.op("Mul", [net.unsqueeze(s, [2, 3]), x], name="se_mul"), c, spatial
    if kind == "convnext":  # dw conv, to NHWC, MLP on the last axis, layer scale, back to NCHW, residual
        _, expand, act, norm = block
        y = g.op("Transpose", [g.conv(x, c, c, k=3, group=c, name="cnx_dw")], perm=[0, 2, 3, 1])
        if norm and net.opset >= 17:
            y = g.op("LayerNormalization", [y, g.weight((c,), "ln_scale", positive=True), g.weight((c,), "ln_bias")],
                     axis=-1)
        y = net.act(net.linear(y, c, expand * c, "pw1"), act)
        y = net.linear(y, expand * c, c, "pw2")
        down, bias = g.nodes[-2].input[1], g.nodes[-1].input[1]
        y = g.op("Mul", [y, g.weight((c,), "gamma")], name="layer_scale")
        out = g.op("Add", [x, g.op("Transpose", [y], perm=[0, 3, 1, 2])], name="cnx_add")
        net.residuals.append((out, (down, bias)))
        return out, c, spatial
    if kind == "tokens":  # [N, C, H, W] -> [N, H*W, C] tokens, a Linear, and back
        _, width, act = block
        t = g.op("Transpose", [g.op("Reshape", [x, net.target(x, 1, [c, spatial * spatial])])], perm=[0, 2, 1])
        t = g.op("Transpose", [net.act(net.linear(t, c, width, "token_fc"), act)], perm=[0, 2, 1])
        return g.op("Reshape", [t, net.target(t, 1, [width, spatial, spatial])]), width, spatial
    if kind == "shared":  # one weight read by two convs: both outputs are one channel space
        _, act = block
        weight, bias = g.weight((c, c, 3, 3), "shared_W"), g.weight((c,), "shared_B")
        a = g.op("Conv", [x, weight, bias], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        b = g.op("Conv", [net.act(x, act), weight, bias], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        return g.op("Add", [a, b]), c, spatial
    if kind == "gate":  # two branches joined by an element-wise op
        _, op = block
        a = g.conv(x, c, c, k=1, name="gate_a")
        b = g.op("Sigmoid", [g.conv(x, c, c, k=1, name="gate_b")])
        if op == "Div":
            b = g.op("Add", [b, g.scalar(1.0, "one")])
        return g.op(op, [a, b]), c, spatial
    if kind == "clip":  # ReLU6 as exported
        return g.op("Clip", [x, g.scalar(0.0, "lo"), g.scalar(6.0, "hi")]), c, spatial
    if kind == "instnorm":
        params = [g.weight((c,), "in_scale", positive=True), g.weight((c,), "in_bias")]
        return g.op("InstanceNormalization", [x, *params]), c, spatial
    if kind == "deconv":
        _, width, bias = block
        inputs = [x, g.weight((c, width, 2, 2), "deconv_W")] + ([g.weight((width,), "deconv_B")] if bias else [])
        return g.op("ConvTranspose", inputs, kernel_shape=[2, 2], strides=[2, 2]), width, spatial * 2
    if kind == "prelu":
        return g.op("PRelu", [x, g.weight((c, 1, 1), "slope")]), c, spatial
    if kind == "scale":
        return g.op("Mul", [x, g.weight((1, c, 1, 1), "layer_scale")], name="scale"), c, spatial
    if kind == "pad":
        y = g.op("Pad", [x, g.ints([0, 0, 1, 1, 0, 0, 1, 1])], mode="reflect")
        return g.op("MaxPool", [y], kernel_shape=[3, 3]), c, spatial
    if kind == "pool":
        return g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), c, spatial // 2
    if kind == "avgpool":
        return g.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2]), c, spatial // 2
    if kind == "resize":
        if block[1] == "scales":
            y = g.op("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")
        else:
            y = g.op("Resize", [x, "", "", g.ints([1, c, 2 * spatial, 2 * spatial], "sizes")], mode="nearest")
        return y, c, spatial * 2
    raise AssertionError(f"unknown block {block}")


def mlp_block(net: Net, block: tuple, x: str, c: int) -> tuple[str, int]:
    g, kind = net.g, block[0]
    if kind == "linear":
        _, width, act = block
        return net.act(net.linear(x, c, width), act), width
    if kind == "residual":
        _, hidden, act, norm = block
        y = net.act(net.linear(x, c, hidden, "up"), act)
        y = net.linear(y, hidden, c, "down")
        out = g.op("Add", [x, y], name="res_add")
        net.residuals.append((out, (g.nodes[-3].input[1], g.nodes[-2].input[1])))  # down MatMul and its bias
        if norm:
            out = g.op("LayerNormalization", [out, g.weight((c,), "ln_scale", positive=True),
                                              g.weight((c,), "ln_bias")], axis=-1)
        return out, c
    if kind == "attention":  # multi-head self-attention with its residual
        _, heads, size, fused = block
        inner = heads * size
        if fused:  # one QKV projection, split in three
            q, k, v = g.op("Split", [net.linear(x, c, 3 * inner, "qkv"), g.ints([inner] * 3, "split")], outputs=3,
                           axis=2)
        else:
            q, k, v = (net.linear(x, c, inner, name) for name in ("q", "k", "v"))
        shape = net.target(x, 2, [heads, size])
        q, k, v = (g.op("Transpose", [g.op("Reshape", [t, shape])], perm=[0, 2, 1, 3]) for t in (q, k, v))
        scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        probs = g.op("Softmax", [g.op("Div", [scores, g.scalar(float(np.sqrt(size)), "scale")])], axis=-1)
        y = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        y = net.linear(g.op("Reshape", [y, net.target(x, 2, [inner])]), inner, c, "o")
        out = g.op("Add", [x, y], name="attn_add")
        net.residuals.append((out, (g.nodes[-3].input[1], g.nodes[-2].input[1])))
        return out, c
    if kind == "swiglu":  # down(silu(gate(x)) * up(x)) + x
        _, hidden = block
        gate = net.linear(x, c, hidden, "gate")
        y = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), net.linear(x, c, hidden, "up")])
        y = net.linear(y, hidden, c, "down")
        out = g.op("Add", [y, x], name="mlp_add")
        net.residuals.append((out, (g.nodes[-3].input[1], g.nodes[-2].input[1])))
        return out, c
    if kind == "gelu_tanh":  # x * 0.5 * (1 + tanh(0.7978845608 * (x + 0.044715 * x^3))): an Add of x and f(x), no layer
        cube = g.op("Mul", [g.op("Pow", [x, g.scalar(3.0, "three")]), g.scalar(0.044715, "c")])
        inner = g.op("Mul", [g.op("Add", [x, cube]), g.scalar(0.7978845608, "k")])
        half = g.op("Mul", [g.op("Add", [g.op("Tanh", [inner]), g.scalar(1.0, "one")]), g.scalar(0.5, "half")])
        return g.op("Mul", [x, half]), c
    if kind == "rmsnorm":  # decomposed: statistics over the channel axis, so it pins
        mean = net.axes_op("ReduceMean", g.op("Mul", [x, x]), [-1], keepdims=1)
        scale = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [mean, g.scalar(1e-5, "eps")])])])
        return g.op("Mul", [g.op("Mul", [x, scale]), g.weight((c,), "rms_weight", positive=True)]), c
    if kind == "layernorm":
        return g.op("LayerNormalization", [x, g.weight((c,), "ln_scale", positive=True), g.weight((c,), "ln_bias")],
                    axis=-1), c
    if kind == "concat":
        _, w1, w2, act = block
        a = net.act(net.linear(x, c, w1, "left"), act)
        return g.op("Concat", [a, net.linear(x, c, w2, "right")], axis=-1), w1 + w2
    if kind == "split":
        _, sizes, mode, act = block
        parts = g.op("Split", [x, g.ints(list(sizes), "split")], outputs=len(sizes), axis=2)
        parts = [net.act(p, act) for p in parts]
        return g.op("Concat", parts[::-1] if mode == "reorder" else parts, axis=2), c
    if kind == "heads":
        _, heads, act = block
        y = net.act(g.op("Reshape", [x, net.target(x, 2, [heads, c // heads])]), act)
        return g.op("Reshape", [y, net.target(x, 2, [c])]), c
    raise AssertionError(f"unknown block {block}")
