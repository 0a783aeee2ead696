"""Per-op channel propagation rules: Conv, Gemm/MatMul, normalization and activation rules.

Each test checks the channel spaces `build_channel_graph` finds and the zero-oracle (see rule_checks.py).
"""

from __future__ import annotations

import onnx
import pytest
from graphs import GraphBuilder
from onnx import TensorProto
from rule_checks import (
    QUICK_RUNS,
    attr_of,
    channel_graph,
    conv1_space,
    init_of,
    node_of,
    pinned,
    prunable,
    retarget_conv2,
    sandwich,
    zero_oracle,
)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_chain(tmp_path, bias):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Relu", [g.conv(x, 3, 8, bias=bias, name="conv1")])
    t = g.op("Relu", [g.conv(t, 8, 6, bias=bias, name="conv2")])
    g.output(g.conv(t, 6, 4, k=1, bias=bias, name="conv3"))
    proto = g.model()
    graph = channel_graph(proto)
    b = {("conv1_B", 0, 0)} if bias else set()
    first = prunable(graph, "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv2_W", 1, 0)} | b)
    assert first.label == "Conv 'conv1' output channels"
    b = {("conv2_B", 0, 0)} if bias else set()
    prunable(graph, "conv2_W", 0, 6, members={("conv2_W", 0, 0), ("conv3_W", 1, 0)} | b)
    pinned(graph, "conv1_W", 1, "graph input")
    pinned(graph, "conv3_W", 0, "graph output 'conv3'")
    assert len(graph.prunable) == 2
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        assert init_of(pruned, "conv1_W").shape[0] == init_of(pruned, "conv2_W").shape[1]
        assert init_of(pruned, "conv3_W").shape == (4, init_of(pruned, "conv2_W").shape[0], 1, 1)


def test_depthwise_conv_updates_group(tmp_path):
    proto = sandwich(lambda g, t: g.op("Relu", [g.conv(t, 8, 8, group=8, name="dw")]))
    graph = channel_graph(proto)
    conv1_space(graph, extra={("dw_W", 0, 0), ("dw_B", 0, 0)})
    for plan, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        kept = init_of(pruned, "dw_W").shape[0]
        assert attr_of(node_of(pruned, "dw"), "group") == kept == 8 - sum(len(v) for v in plan.values())


@pytest.mark.parametrize("group", [2, 4])
def test_grouped_conv_ties_in_group_indices(tmp_path, group):
    proto = sandwich(lambda g, t: g.op("Relu", [g.conv(t, 8, 12, group=group, name="gconv")]))
    proto = retarget_conv2(proto, 12)
    graph = channel_graph(proto)
    cin, cout = 8 // group, 12 // group
    prunable(graph, "conv1_W", 0, cin,
             members={("gconv_W", 1, 0)} | {(w, 0, i * cin) for w in ("conv1_W", "conv1_B") for i in range(group)})
    prunable(graph, "gconv_W", 0, cout,
             members={(w, a, i * cout) for w, a in (("gconv_W", 0), ("gconv_B", 0), ("conv2_W", 1))
                      for i in range(group)})
    for _, _, out in zero_oracle(proto, tmp_path):
        node = node_of(onnx.load(out), "gconv")
        assert attr_of(node, "group") == group


def test_grouped_conv_fed_by_uneven_concat_cuts_atoms(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    cat = g.op("Concat", [g.conv(x, 3, 3, name="ca"), g.conv(x, 3, 5, name="cb")], axis=1)
    t = g.conv(cat, 8, 8, group=2, name="gconv")
    g.output(g.conv(t, 8, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    # In-group index i < 3 is ca channel i and cb channel 1 + i; index 3 is cb channels 0 and 4.
    prunable(graph, "ca_W", 0, 3, members={("ca_W", 0, 0), ("ca_B", 0, 0), ("cb_W", 0, 1), ("cb_B", 0, 1),
                                           ("gconv_W", 1, 0)})
    prunable(graph, "cb_W", 0, 1, members={("cb_W", 0, 0), ("cb_B", 0, 0), ("cb_W", 0, 4), ("cb_B", 0, 4),
                                           ("gconv_W", 1, 3)})
    zero_oracle(proto, tmp_path)


def test_conv_transpose(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Relu", [g.conv(x, 3, 8, name="conv1")])
    w, b = g.weight((8, 6, 2, 2), "convt_W"), g.weight((6,), "convt_B")
    t = g.op("Relu", [g.op("ConvTranspose", [t, w, b], name="convt", strides=[2, 2])])
    g.output(g.conv(t, 6, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("convt_W", 0, 0)})
    prunable(graph, "convt_W", 1, 6, members={("convt_W", 1, 0), ("convt_B", 0, 0), ("conv2_W", 1, 0)})
    zero_oracle(proto, tmp_path)


def test_depthwise_conv_transpose_updates_group(tmp_path):
    def middle(g, t):
        w, b = g.weight((8, 1, 3, 3), "dwt_W"), g.weight((8,), "dwt_B")
        return g.op("ConvTranspose", [t, w, b], name="dwt", group=8, pads=[1, 1, 1, 1])

    proto = sandwich(middle)
    conv1_space(channel_graph(proto), extra={("dwt_W", 0, 0), ("dwt_B", 0, 0)})
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        assert attr_of(node_of(pruned, "dwt"), "group") == init_of(pruned, "dwt_W").shape[0]


def test_grouped_conv_transpose_pins(tmp_path):
    def middle(g, t):
        return g.op("ConvTranspose", [t, g.weight((8, 4, 3, 3), "gt_W")], name="gt", group=2, pads=[1, 1, 1, 1])

    proto = sandwich(middle)
    graph = channel_graph(proto)
    pinned(graph, "conv1_W", 0, "grouped ConvTranspose", "gt")
    pinned(graph, "conv2_W", 1, "grouped ConvTranspose")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


def test_conv_with_computed_weight_pins(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    # Scaled by a value of the input: computed at run time (an Identity of a weight is a view of it).
    w = g.op("Mul", [g.weight((4, 8, 1, 1), "w2"), g.op("ReduceMax", [x], keepdims=0)], name="w2_scaled")
    g.output(g.op("Conv", [t, w], name="conv2"))
    graph = channel_graph(g.model())
    pinned(graph, "conv1_W", 0, "computed at run time", "conv2")


# ---------------------------------------------------------------------------------------- Gemm, MatMul


def test_gemm_trans_b_and_bias_shapes(tmp_path):
    g = GraphBuilder()
    x = g.input([2, 5])
    t = g.op("Relu", [g.op("Gemm", [x, g.weight((8, 5), "g1_W"), g.weight((8,), "g1_C")], name="g1", transB=1)])
    t = g.op("Relu", [g.op("Gemm", [t, g.weight((8, 6), "g2_W"), g.weight((1, 6), "g2_C")], name="g2")])
    g.output(g.op("Gemm", [t, g.weight((3, 6), "g3_W"), g.weight((3,), "g3_C")], name="g3", transB=1))
    proto = g.model()
    graph = channel_graph(proto)
    assert prunable(graph, "g1_W", 0, 8, members={("g1_W", 0, 0), ("g1_C", 0, 0), ("g2_W", 0, 0)}).label == (
        "Gemm 'g1' output features")
    prunable(graph, "g2_W", 1, 6, members={("g2_W", 1, 0), ("g2_C", 1, 0), ("g3_W", 1, 0)})
    pinned(graph, "g1_W", 1, "graph input")
    pinned(graph, "g3_W", 0, "graph output")
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        assert init_of(pruned, "g2_C").shape == (1, init_of(pruned, "g2_W").shape[1])


def test_gemm_trans_a(tmp_path):
    g = GraphBuilder()
    x = g.input([2, 5])
    t = g.op("Gemm", [x, g.weight((5, 8), "g1_W"), g.weight((8,), "g1_C")], name="g1")
    t = g.op("Transpose", [g.op("Relu", [t])], perm=[1, 0])
    g.output(g.op("Gemm", [t, g.weight((8, 3), "g2_W")], name="g2", transA=1))
    proto = g.model()
    prunable(channel_graph(proto), "g1_W", 1, 8, members={("g1_W", 1, 0), ("g1_C", 0, 0), ("g2_W", 0, 0)})
    zero_oracle(proto, tmp_path)


def test_gemm_bias_with_batch_rows(tmp_path):
    g = GraphBuilder()
    x = g.input([2, 5])
    t = g.op("Relu", [g.op("Gemm", [x, g.weight((5, 8), "g1_W"), g.weight((2, 8), "g1_C")], name="g1")])
    g.output(g.op("Gemm", [t, g.weight((8, 3), "g2_W")], name="g2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "g1_W", 1, 8, members={("g1_W", 1, 0), ("g1_C", 1, 0), ("g2_W", 0, 0)})
    pinned(graph, "g1_C", 0, "graph input")
    zero_oracle(proto, tmp_path)


def test_gemm_of_two_activations_pins():
    g = GraphBuilder()
    x = g.input([2, 5])
    a = g.op("Gemm", [x, g.weight((5, 8), "ga_W")], name="ga")
    b = g.op("Gemm", [x, g.weight((5, 8), "gb_W")], name="gb")
    g.output(g.op("Gemm", [a, b], name="gab", transB=1))
    graph = channel_graph(g.model())
    pinned(graph, "ga_W", 1, "Gemm whose B", "gab")
    pinned(graph, "gb_W", 1, "Gemm whose B", "gab")


def test_matmul_constant_weight_on_3d_input(tmp_path):
    g = GraphBuilder()
    x = g.input([2, 3, 5])
    t = g.op("Add", [g.op("MatMul", [x, g.weight((5, 8), "mm1_W")], name="mm1"), g.weight((8,), "mm1_B")])
    t = g.op("Relu", [t])
    g.output(g.op("MatMul", [t, g.weight((8, 4), "mm2_W")], name="mm2"))
    proto = g.model()
    graph = channel_graph(proto)
    space = prunable(graph, "mm1_W", 1, 8, members={("mm1_W", 1, 0), ("mm1_B", 0, 0), ("mm2_W", 0, 0)})
    assert space.label == "MatMul 'mm1' output features"
    pinned(graph, "mm1_W", 0, "graph input")
    pinned(graph, "mm2_W", 1, "graph output")
    zero_oracle(proto, tmp_path)


def test_matmul_constant_weight_as_left_operand(tmp_path):
    g = GraphBuilder()
    x = g.input([2, 5, 6])
    t = g.op("Add", [g.op("MatMul", [g.weight((8, 5), "mm1_W"), x], name="mm1"), g.weight((8, 1), "mm1_B")])
    t = g.op("Relu", [t])
    g.output(g.op("MatMul", [g.weight((4, 8), "mm2_W"), t], name="mm2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "mm1_W", 0, 8, members={("mm1_W", 0, 0), ("mm1_B", 0, 0), ("mm2_W", 1, 0)})
    pinned(graph, "mm1_W", 1, "graph input")
    pinned(graph, "mm2_W", 0, "graph output")
    zero_oracle(proto, tmp_path)


def test_matmul_of_two_activations_ties_the_contraction_axis(tmp_path):
    """q @ k^T: a feature removed from both q and k leaves the dot products of the rest unchanged."""
    g = GraphBuilder()
    x = g.input([2, 3, 5])
    q = g.op("MatMul", [x, g.weight((5, 8), "q_W")], name="q")
    k = g.op("MatMul", [x, g.weight((5, 8), "k_W")], name="k")
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 2, 1])], name="qk")
    g.output(g.op("MatMul", [scores, g.weight((3, 4), "o_W")], name="o"))
    proto = g.model()
    prunable(channel_graph(proto), "q_W", 1, 8, members={("q_W", 1, 0), ("k_W", 1, 0)})
    zero_oracle(proto, tmp_path)


# ---------------------------------------------------------------------------------------- normalization


def _batch_norm(g, t):
    params = [g.weight((8,), "bn_scale"), g.weight((8,), "bn_B"), g.weight((8,), "bn_mean"),
              g.weight((8,), "bn_var", positive=True)]
    return g.op("Relu", [g.op("BatchNormalization", [t, *params], name="bn")])


def _instance_norm(g, t):
    return g.op("Relu", [g.op("InstanceNormalization", [t, g.weight((8,), "in_scale"), g.weight((8,), "in_B")],
                              name="inorm")])


@pytest.mark.parametrize("middle", [_batch_norm, _instance_norm], ids=["BatchNormalization", "InstanceNormalization"])
def test_normalization_keeps_channels_prunable(tmp_path, middle):
    proto = sandwich(middle)
    prefix = "bn" if middle is _batch_norm else "in"
    params = ("scale", "B", "mean", "var") if middle is _batch_norm else ("scale", "B")
    conv1_space(channel_graph(proto), extra={(f"{prefix}_{p}", 0, 0) for p in params})
    for plan, _, out in zero_oracle(proto, tmp_path):
        kept = 8 - sum(len(v) for v in plan.values())
        assert all(init_of(onnx.load(out), f"{prefix}_{p}").shape == (kept,) for p in params)


def test_batchnorm_training_mode_pins():
    def middle(g, t):
        params = [g.weight((8,), "bn_scale"), g.weight((8,), "bn_B"), g.weight((8,), "bn_mean"),
                  g.weight((8,), "bn_var", positive=True)]
        return g.op("BatchNormalization", [t, *params], outputs=3, name="bn", training_mode=1)[0]

    pinned(channel_graph(sandwich(middle)), "conv1_W", 0, "training mode", "bn")


def test_layernorm_over_channels_pins(tmp_path):
    def middle(g, t):
        t = g.op("Transpose", [t], perm=[0, 2, 3, 1])
        t = g.op("LayerNormalization", [t, g.weight((8,), "ln_scale"), g.weight((8,), "ln_B")], name="ln", axis=-1)
        return g.op("Transpose", [t], perm=[0, 3, 1, 2])

    proto = sandwich(middle)
    pinned(channel_graph(proto), "conv1_W", 0, "LayerNormalization computes statistics", "ln")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


def test_layernorm_over_spatial_axes_passes_channels(tmp_path):
    def middle(g, t):
        return g.op("LayerNormalization", [t, g.weight((6, 6), "ln_scale"), g.weight((6, 6), "ln_B")], name="ln",
                    axis=2)

    proto = sandwich(middle, spatial=6)
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path)


def test_group_norm_pins():
    def middle(g, t):
        return g.op("GroupNormalization", [t, g.weight((2,), "gn_scale"), g.weight((2,), "gn_B")], name="gn",
                    num_groups=2)

    pinned(channel_graph(sandwich(middle, opset=18)), "conv1_W", 0, "GroupNormalization", "gn")


# ---------------------------------------------------------------------------------------- activations


def _silu(g, t):
    return g.op("Mul", [t, g.op("Sigmoid", [t])])


def _erf_gelu(g, t):
    inner = g.op("Erf", [g.op("Div", [t, g.scalar(1.4142135)])])
    return g.op("Mul", [g.op("Mul", [t, g.op("Add", [inner, g.scalar(1.0)])]), g.scalar(0.5)])


ACTIVATIONS = {
    "Relu": lambda g, t: g.op("Relu", [t]),
    "Clip": lambda g, t: g.op("Clip", [t, g.scalar(-0.5), g.scalar(0.7)]),
    "ClipMaxOnly": lambda g, t: g.op("Clip", [t, "", g.scalar(0.7)]),
    "Sigmoid": lambda g, t: g.op("Sigmoid", [t]),
    "HardSigmoid": lambda g, t: g.op("HardSigmoid", [t], alpha=0.3, beta=0.4),
    "HardSwish": lambda g, t: g.op("HardSwish", [t]),
    "SiLU": _silu,
    "ErfGelu": _erf_gelu,
    "Tanh": lambda g, t: g.op("Tanh", [t]),
    "LeakyRelu": lambda g, t: g.op("LeakyRelu", [t], alpha=0.2),
    "PRelu": lambda g, t: g.op("PRelu", [t, g.weight((8, 1, 1), "slope")]),
    "PReluShared": lambda g, t: g.op("PRelu", [t, g.weight((1,), "slope")]),
    "Elu": lambda g, t: g.op("Elu", [t]),
    "Softplus": lambda g, t: g.op("Softplus", [t]),
    "IdentityDropoutCast": lambda g, t: g.op("Cast", [g.op("Dropout", [g.op("Identity", [t])])], to=TensorProto.FLOAT),
    "DropoutWithMask": lambda g, t: g.op("Dropout", [t, g.scalar(0.3)], outputs=2)[0],
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_passes_channels(tmp_path, name):
    proto = sandwich(ACTIVATIONS[name])
    extra = {("slope", 0, 0)} if name == "PRelu" else set()
    conv1_space(channel_graph(proto), extra=extra)
    zero_oracle(proto, tmp_path, runs=QUICK_RUNS)


def test_gelu_opset20(tmp_path):
    proto = sandwich(lambda g, t: g.op("Gelu", [t], approximate="tanh"), opset=20)
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path, runs=QUICK_RUNS)


def test_prelu_slope_is_sliced(tmp_path):
    proto = sandwich(ACTIVATIONS["PRelu"])
    for plan, _, out in zero_oracle(proto, tmp_path):
        assert init_of(onnx.load(out), "slope").shape == (8 - sum(len(v) for v in plan.values()), 1, 1)


