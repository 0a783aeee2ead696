"""Per-op channel propagation rules, on tiny hand-built graphs.

Each test checks (a) the channel spaces `build_channel_graph` finds: which are prunable, their sizes,
their weight members and, for things that must pin, that the pin names the right node or op; and (b)
the zero-oracle: zero random channels of every prunable space, prune exactly those with the L1
criterion (local ratio, and global ranking with the zeroed fraction), and the outputs must not move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import GraphBuilder
from onnx import TensorProto, helper, numpy_helper
from oracle import check_valid, choose_channels, max_relative_error, random_feed, run, zero_channels

from onnxprune import ChannelGraph, ChannelSpace, Model, PruneOptions, build_channel_graph, prune
from onnxprune.io.saving import save_model

# ---------------------------------------------------------------------------------------- helpers


def channel_graph(proto: onnx.ModelProto) -> ChannelGraph:
    return build_channel_graph(Model.from_proto(proto))


def describe(graph: ChannelGraph) -> str:
    lines = []
    for space in graph.spaces:
        members = [(m.tensor, m.axis, m.offset) for m in space.weight_members]
        lines.append(f"  #{space.id} size={space.size} pins={[str(p) for p in space.pins]} members={members}")
    return "\n".join(lines)


def space_of(graph: ChannelGraph, tensor: str, axis: int, offset: int = 0) -> ChannelSpace:
    for space in graph.spaces:
        for member in space.members:
            if (member.tensor, member.axis, member.offset) == (tensor, axis, offset):
                return space
    raise AssertionError(f"no space holds '{tensor}' axis {axis} offset {offset}:\n{describe(graph)}")


def weight_members(space: ChannelSpace) -> set[tuple[str, int, int]]:
    return {(m.tensor, m.axis, m.offset) for m in space.weight_members}


def prunable(graph: ChannelGraph, tensor: str, axis: int, size: int, offset: int = 0,
             members: set[tuple[str, int, int]] | None = None) -> ChannelSpace:
    space = space_of(graph, tensor, axis, offset)
    assert space.prunable, f"'{tensor}' axis {axis} is pinned by {[str(p) for p in space.pins]}\n{describe(graph)}"
    assert space.size == size, describe(graph)
    if members is not None:
        assert weight_members(space) == members, describe(graph)
    return space


def pinned(graph: ChannelGraph, tensor: str, axis: int, *words: str, offset: int = 0) -> ChannelSpace:
    """The space is pinned, and one of its pins mentions every word (op type, node name...)."""
    space = space_of(graph, tensor, axis, offset)
    assert not space.prunable, f"'{tensor}' axis {axis} should be pinned\n{describe(graph)}"
    reasons = [str(pin) for pin in space.pins]
    assert any(all(word in reason for word in words) for reason in reasons), f"{words} not in one of {reasons}"
    return space


# (plan ratio, seed, global ranking): None draws a random ratio in [0.1, 0.7] per space.
ORACLE_RUNS = [(0.4, 0, False), (0.4, 1, True), (None, 2, True), (None, 3, True), (None, 4, True)]
QUICK_RUNS = [(0.4, 0, False), (None, 1, True)]


def zero_oracle(proto: onnx.ModelProto, tmp_path: Path, expect_pruned: bool = True, runs=ORACLE_RUNS,
                tolerance: float = 1e-5, full_check: bool = True) -> list[tuple[dict, dict, Path]]:
    """Zero planned channels, prune them, compare; returns (plan, report, pruned path) per run.

    full_check=False only for ops whose ONNX function body onnx's own strict inference rejects.
    """
    results = []
    for index, (plan_ratio, seed, global_ranking) in enumerate(runs):
        model = Model.from_proto(proto)
        plan = choose_channels(model, plan_ratio, seed)
        zero_channels(model, plan)
        zeroed, out = tmp_path / f"zeroed{index}.onnx", tmp_path / f"pruned{index}.onnx"
        save_model(model, zeroed)
        ratio = plan_ratio
        if global_ranking:
            total = sum(space.size for space in build_channel_graph(model).prunable)
            ratio = sum(len(v) for v in plan.values()) / total if total else 0.0
        report = prune(zeroed, out, PruneOptions(structured=ratio, global_ranking=global_ranking, validate=False))
        removed = {space["id"]: space["removed"] for space in report["spaces"] if space["removed"]}
        assert removed == {k: [int(i) for i in v] for k, v in plan.items()}, f"run {index}: plan not followed"
        for feed_seed in (0, 1):
            feed = random_feed(model, feed_seed)
            error = max_relative_error(run(zeroed, feed), run(out, feed))
            assert error < tolerance, f"run {index} (ratio {plan_ratio}, seed {seed}): relative error {error}"
        if full_check:
            check_valid(out)
        else:
            onnx.checker.check_model(str(out))
        if plan:
            assert report["after"]["params"] < report["before"]["params"]
        results.append((plan, report, out))
    if expect_pruned:
        assert any(plan for plan, _, _ in results), "nothing was prunable"
    return results


def node_of(proto: onnx.ModelProto, name: str) -> onnx.NodeProto:
    for node in proto.graph.node:
        if node.name == name:
            return node
    raise AssertionError(f"no node '{name}'")


def init_of(proto: onnx.ModelProto, name: str) -> np.ndarray:
    for tensor in proto.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    raise AssertionError(f"no initializer '{name}'")


def input_value(proto: onnx.ModelProto, node_name: str, index: int) -> np.ndarray:
    return init_of(proto, node_of(proto, node_name).input[index])


def attr_of(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def sandwich(middle, opset: int = 17, channels: int = 8, spatial: int = 8) -> onnx.ModelProto:
    """x -> conv1 (3 -> channels) -> middle(g, t) -> conv2 (-> 4, 1x1) -> output."""
    g = GraphBuilder(opset)
    x = g.input([1, 3, spatial, spatial])
    t = g.conv(x, 3, channels, name="conv1")
    t = middle(g, t)
    g.output(g.conv(t, channels, 4, k=1, name="conv2"))
    return g.model()


def conv1_space(graph: ChannelGraph, size: int = 8, extra: set | None = None) -> ChannelSpace:
    members = {("conv1_W", 0, 0), ("conv1_B", 0, 0), ("conv2_W", 1, 0)} | (extra or set())
    return prunable(graph, "conv1_W", 0, size, members=members)


# ---------------------------------------------------------------------------------------- Conv


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
    proto = _retarget_conv2(proto, 12)
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


def _retarget_conv2(proto: onnx.ModelProto, channels: int) -> onnx.ModelProto:
    """sandwich() builds conv2 for 8 input channels; give it `channels` instead."""
    for tensor in proto.graph.initializer:
        if tensor.name == "conv2_W":
            array = np.random.default_rng(5).standard_normal((4, channels, 1, 1)).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(array, "conv2_W"))
    del proto.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(proto)


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
    w = g.op("Identity", [g.weight((4, 8, 1, 1), "w2")], name="w2_copy")
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


# ---------------------------------------------------------------------------------------- element-wise n-ary


def test_residual_add_ties_both_convs(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    a = g.op("Relu", [g.conv(x, 3, 8, name="conv1")])
    b = g.conv(a, 8, 8, name="conv2")
    t = g.op("Relu", [g.op("Add", [a, b])])
    g.output(g.conv(t, 8, 4, k=1, name="conv3"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("conv2_W", 1, 0),
                                              ("conv2_W", 0, 0), ("conv2_B", 0, 0), ("conv3_W", 1, 0)})
    assert len(graph.prunable) == 1
    zero_oracle(proto, tmp_path)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Max", "Min", "Sum"])
def test_two_branches_are_tied(tmp_path, op):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op(op, [g.conv(x, 3, 8, name="ca"), g.conv(x, 3, 8, k=1, name="cb")])
    g.output(g.conv(t, 8, 4, k=1, name="conv2"))
    proto = g.model()
    prunable(channel_graph(proto), "ca_W", 0, 8, members={("ca_W", 0, 0), ("ca_B", 0, 0), ("cb_W", 0, 0),
                                                          ("cb_B", 0, 0), ("conv2_W", 1, 0)})
    zero_oracle(proto, tmp_path, runs=QUICK_RUNS)


@pytest.mark.parametrize("shape", [(1, 8, 1, 1), (8, 1, 1)])
def test_constant_operand_joins_the_space(tmp_path, shape):
    proto = sandwich(lambda g, t: g.op("Mul", [g.op("Add", [t, g.weight(shape, "bias")]), g.scalar(2.0)]))
    conv1_space(channel_graph(proto), extra={("bias", len(shape) - 3, 0)})
    zero_oracle(proto, tmp_path, runs=QUICK_RUNS)


def test_add_of_graph_input_pins(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Add", [g.conv(x, 3, 3, name="conv1"), x], name="residual")
    g.output(g.conv(t, 3, 4, k=1, name="conv2"))
    proto = g.model()
    pinned(channel_graph(proto), "conv1_W", 0, "graph input")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


def test_where_with_constant_condition(tmp_path):
    def middle(g, t):
        cond = g.const(np.random.default_rng(1).random((1, 8, 1, 1)) > 0.5, "cond")
        return g.op("Where", [cond, t, g.op("Neg", [t])])

    proto = sandwich(middle)
    conv1_space(channel_graph(proto), extra={("cond", 1, 0)})
    zero_oracle(proto, tmp_path, runs=QUICK_RUNS)


# ---------------------------------------------------------------------------------------- Concat


def test_concat_of_two_convs(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Concat", [g.conv(x, 3, 4, name="ca"), g.conv(x, 3, 6, name="cb")], name="cat", axis=1)
    g.output(g.conv(t, 10, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "ca_W", 0, 4, members={("ca_W", 0, 0), ("ca_B", 0, 0), ("conv2_W", 1, 0)})
    prunable(graph, "cb_W", 0, 6, members={("cb_W", 0, 0), ("cb_B", 0, 0), ("conv2_W", 1, 4)})
    zero_oracle(proto, tmp_path)


def test_concat_with_graph_input_part(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Concat", [x, g.conv(x, 3, 5, name="ca")], name="cat", axis=-3)
    g.output(g.conv(t, 8, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    pinned(graph, "conv2_W", 1, "graph input")
    prunable(graph, "ca_W", 0, 5, members={("ca_W", 0, 0), ("ca_B", 0, 0), ("conv2_W", 1, 3)})
    zero_oracle(proto, tmp_path)


def test_concat_on_spatial_axis_ties_channels(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Concat", [g.conv(x, 3, 8, name="ca"), g.conv(x, 3, 8, name="cb")], axis=2)
    g.output(g.conv(t, 8, 4, k=1, name="conv2"))
    proto = g.model()
    prunable(channel_graph(proto), "ca_W", 0, 8, members={("ca_W", 0, 0), ("ca_B", 0, 0), ("cb_W", 0, 0),
                                                          ("cb_B", 0, 0), ("conv2_W", 1, 0)})
    zero_oracle(proto, tmp_path, runs=QUICK_RUNS)


def test_concat_with_constant_part(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Concat", [g.conv(x, 3, 5, name="ca"), g.weight((1, 2, 8, 8), "extra")], axis=1)
    g.output(g.conv(t, 7, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "ca_W", 0, 5, members={("ca_W", 0, 0), ("ca_B", 0, 0), ("conv2_W", 1, 0)})
    prunable(graph, "extra", 1, 2, members={("extra", 1, 0), ("conv2_W", 1, 5)})
    zero_oracle(proto, tmp_path)


# ---------------------------------------------------------------------------------------- Split


def _split_model(opset: int, sizes=(3, 5), how: str = "input") -> onnx.ModelProto:
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, sum(sizes), name="conv1")
    if how == "input":
        parts = g.op("Split", [t, g.ints(sizes, "sizes")], outputs=2, name="split", axis=1)
    elif how == "attribute":
        parts = g.op("Split", [t], outputs=2, name="split", axis=1, split=list(sizes))
    elif how == "num_outputs":
        parts = g.op("Split", [t], outputs=2, name="split", axis=1, num_outputs=2)
    else:  # equal split, nothing said
        parts = g.op("Split", [t], outputs=2, name="split", axis=1)
    a = g.conv(parts[0], sizes[0], 4, k=1, name="ca")
    b = g.conv(parts[1], sizes[1], 4, k=1, name="cb")
    g.output(g.op("Add", [a, b]))
    return g.model()


SPLITS = {
    "opset13-input": (13, (3, 5), "input"),
    "opset11-attribute": (11, (3, 5), "attribute"),
    "opset11-equal": (11, (4, 4), "equal"),
    "opset13-equal": (13, (4, 4), "equal"),
    "opset18-num_outputs": (18, (4, 4), "num_outputs"),
    "opset18-num_outputs-uneven": (18, (4, 3), "num_outputs"),
    "opset18-input": (18, (2, 6), "input"),
}


@pytest.mark.parametrize("case", list(SPLITS))
def test_split_cuts_the_channel_space(tmp_path, case):
    opset, sizes, how = SPLITS[case]
    proto = _split_model(opset, sizes, how)
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, sizes[0], members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("ca_W", 1, 0)})
    prunable(graph, "conv1_W", 0, sizes[1], offset=sizes[0],
             members={("conv1_W", 0, sizes[0]), ("conv1_B", 0, sizes[0]), ("cb_W", 1, 0)})
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        widths = [init_of(pruned, "ca_W").shape[1], init_of(pruned, "cb_W").shape[1]]
        node = node_of(pruned, "split")
        if opset >= 13 and len(node.input) > 1 and node.input[1]:
            assert list(init_of(pruned, node.input[1])) == widths
        elif attr_of(node, "split") is not None:
            assert list(attr_of(node, "split")) == widths
        else:  # still an implicit split: it must give the widths the consumers now take
            total, piece = sum(widths), -(-sum(widths) // 2)
            assert widths == ([piece, total - piece] if attr_of(node, "num_outputs") else [total // 2] * 2)


# ---------------------------------------------------------------------------------------- Slice


def _slice_model(starts, ends, axes=(1,), steps=None, opset: int = 17) -> onnx.ModelProto:
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    inputs = [t, g.ints(starts, "starts"), g.ints(ends, "ends"), g.ints(axes, "axes")]
    if steps is not None:
        inputs.append(g.ints(steps, "steps"))
    s = g.op("Slice", inputs, name="slice")
    width = len(range(8)[slice(starts[0], ends[0], (steps or [1])[0])])
    g.output(g.conv(s, width, 4, k=1, name="conv2"))
    return g.model()


@pytest.mark.parametrize(("starts", "ends", "axes"), [
    ([2], [7], [1]),
    ([-6], [-1], [-3]),
    ([3], [2**63 - 1], [1]),
    ([0], [5], [1]),
])
def test_slice_on_channel_axis(tmp_path, starts, ends, axes):
    proto = _slice_model(starts, ends, axes)
    graph = channel_graph(proto)
    begin, end, _ = slice(starts[0], ends[0]).indices(8)
    prunable(graph, "conv1_W", 0, end - begin, offset=begin,
             members={("conv1_W", 0, begin), ("conv1_B", 0, begin), ("conv2_W", 1, 0)})
    if begin:  # the discarded prefix is dead weight: prunable on its own
        prunable(graph, "conv1_W", 0, begin, members={("conv1_W", 0, 0), ("conv1_B", 0, 0)})
    if end < 8:
        prunable(graph, "conv1_W", 0, 8 - end, offset=end, members={("conv1_W", 0, end), ("conv1_B", 0, end)})
    zero_oracle(proto, tmp_path)


def test_slice_with_step_on_channel_axis_pins(tmp_path):
    proto = _slice_model([0], [8], [1], steps=[2])
    pinned(channel_graph(proto), "conv1_W", 0, "Slice with a step", "slice")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


def test_slice_on_spatial_axes_passes_channels(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    s = g.op("Slice", [t, g.ints([1, 0]), g.ints([7, -2]), g.ints([2, 3]), g.ints([2, 1])], name="slice")
    g.output(g.conv(s, 8, 4, k=1, name="conv2"))
    proto = g.model()
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path)


def test_slice_cuts_a_tied_class(tmp_path):
    """Slicing one member of a residual pair cuts every tied copy at the same offsets."""
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    a, b = g.conv(x, 3, 8, name="ca"), g.conv(x, 3, 8, k=1, name="cb")
    total = g.op("Add", [a, b])
    s = g.op("Slice", [a, g.ints([2]), g.ints([6]), g.ints([1])], name="slice")
    g.output(g.conv(total, 8, 4, k=1, name="c_total"), g.conv(s, 4, 4, k=1, name="c_slice"))
    proto = g.model()
    graph = channel_graph(proto)
    for offset, size in ((0, 2), (2, 4), (6, 2)):
        space = prunable(graph, "ca_W", 0, size, offset=offset)
        assert {("cb_W", 0, offset), ("c_total_W", 1, offset)} <= weight_members(space)
    assert ("c_slice_W", 1, 0) in weight_members(space_of(graph, "ca_W", 0, 2))
    zero_oracle(proto, tmp_path)


def _chunk_model() -> onnx.ModelProto:
    """torch.chunk(t, 2, dim=1) as exported: bounds computed from Shape -> Gather -> Add -> Div."""
    g = GraphBuilder(17)
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    channels = g.op("Gather", [g.op("Shape", [t], name="shape"), g.ints(1, "one")], name="gather", axis=0)
    half = g.op("Div", [g.op("Add", [channels, g.ints(1, "plus")], name="add"), g.ints(2, "two")], name="div")
    half = g.op("Unsqueeze", [half, g.ints([0], "axis0")], name="unsq")
    end = g.op("Mul", [half, g.ints([2], "times")], name="mul")
    axes = g.ints([1], "axes")
    a = g.op("Slice", [t, g.ints([0], "zero"), half, axes], name="slice_a")
    b = g.op("Slice", [t, half, end, axes], name="slice_b")
    g.output(g.op("Add", [g.conv(a, 4, 4, k=1, name="ca"), g.conv(b, 4, 4, k=1, name="cb")]))
    return g.model()


def test_slice_bounds_from_shape_like_torch_chunk(tmp_path):
    proto = _chunk_model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 4, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("ca_W", 1, 0)})
    prunable(graph, "conv1_W", 0, 4, offset=4, members={("conv1_W", 0, 4), ("conv1_B", 0, 4), ("cb_W", 1, 0)})
    for plan, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        if plan:  # the bounds are constants now: the shape arithmetic is gone
            assert not {n.op_type for n in pruned.graph.node} & {"Shape", "Gather", "Div"}


# ---------------------------------------------------------------------------------------- Resize, pooling, Pad


@pytest.mark.parametrize("opset", [11, 13, 19])
def test_resize_with_scales(tmp_path, opset):
    def middle(g, t):
        roi = g.const(np.zeros(0, np.float32), "roi") if opset == 11 else ""  # Resize-11 needs roi and scales
        return g.op("Resize", [t, roi, g.const(np.array([1, 1, 2, 2], np.float32), "scales")], name="resize",
                    mode="nearest")

    proto = sandwich(middle, opset=opset)
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path)


def test_resize_scaling_channels_pins():
    proto = sandwich(lambda g, t: g.op("Resize", [t, "", g.const(np.array([1, 2, 1, 1], np.float32), "scales")],
                                       name="resize", mode="nearest"))
    pinned(channel_graph(proto), "conv1_W", 0, "Resize rescales this axis", "resize")


@pytest.mark.parametrize("opset", [11, 17])
def test_resize_with_constant_sizes_updates_them(tmp_path, opset):
    def middle(g, t):
        empty = g.const(np.zeros(0, np.float32), "empty") if opset == 11 else ""
        return g.op("Resize", [t, empty, empty, g.ints([1, 8, 16, 16], "sizes")], name="resize")

    proto = sandwich(middle, opset=opset)
    conv1_space(channel_graph(proto))
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        kept = init_of(pruned, "conv1_W").shape[0]
        assert list(input_value(pruned, "resize", 3)) == [1, kept, 16, 16]


def test_resize_with_sizes_from_shape_like_upsample(tmp_path):
    """F.interpolate(size=...): sizes = Concat(Shape(t)[0:2], [16, 16])."""
    def middle(g, t):
        head = g.op("Slice", [g.op("Shape", [t], name="shape"), g.ints([0]), g.ints([2])], name="head")
        sizes = g.op("Concat", [head, g.ints([16, 16], "hw")], name="sizes", axis=0)
        return g.op("Resize", [t, "", "", sizes], name="resize", mode="linear")

    proto = sandwich(middle)
    conv1_space(channel_graph(proto))
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        assert "Shape" not in {n.op_type for n in pruned.graph.node}
        kept = init_of(pruned, "conv1_W").shape[0]
        assert list(input_value(pruned, "resize", 3)) == [1, kept, 16, 16]


POOLS = {
    "MaxPool": lambda g, t: g.op("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool": lambda g, t: g.op("AveragePool", [t], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    "GlobalAveragePool": lambda g, t: g.op("GlobalAveragePool", [t]),
    "GlobalMaxPool": lambda g, t: g.op("GlobalMaxPool", [t]),
    "LpPool": lambda g, t: g.op("LpPool", [t], kernel_shape=[2, 2], p=2),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_pooling_passes_channels(tmp_path, name):
    proto = sandwich(POOLS[name])
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path, runs=QUICK_RUNS)


def test_maxpool_with_indices_pins():
    proto = sandwich(lambda g, t: g.op("MaxPool", [t], outputs=2, name="pool", kernel_shape=[2, 2])[0])
    pinned(channel_graph(proto), "conv1_W", 0, "MaxPool indices", "pool")


@pytest.mark.parametrize(("opset", "pads", "axes"), [
    (17, [0, 0, 1, 2, 0, 0, 2, 1], None),
    (11, [0, 0, 1, 1, 0, 0, 1, 1], None),
    (18, [1, 2, 0, 1], [2, -1]),
])
def test_pad_of_spatial_axes_passes_channels(tmp_path, opset, pads, axes):
    def middle(g, t):
        inputs = [t, g.ints(pads, "pads"), g.scalar(0.5, "value")]
        if axes is not None:
            inputs.append(g.ints(axes, "pad_axes"))
        return g.op("Pad", inputs, name="pad")

    proto = sandwich(middle, opset=opset)
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path)


def test_pad_of_channel_axis_pins(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Pad", [g.conv(x, 3, 8, name="conv1"), g.ints([0, 1, 0, 0, 0, 0, 0, 0], "pads")], name="pad")
    g.output(g.conv(t, 9, 4, k=1, name="conv2"))
    proto = g.model()
    pinned(channel_graph(proto), "conv1_W", 0, "Pad adds channels", "pad")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


# ---------------------------------------------------------------------------------------- Flatten, Reshape


def _head(flatten, channels: int = 8, spatial: int = 8, batch=1) -> onnx.ModelProto:
    """x -> conv1 -> flatten(g, t) -> Gemm(transB) -> output."""
    g = GraphBuilder()
    x = g.input([batch, 3, spatial, spatial])
    t = flatten(g, g.conv(x, 3, channels, name="conv1"))
    width = channels if spatial == 1 else None
    features = width or channels * spatial * spatial
    g.output(g.op("Gemm", [t, g.weight((5, features), "fc_W"), g.weight((5,), "fc_C")], name="fc", transB=1))
    return g.model()


def test_flatten_after_global_pool_into_gemm(tmp_path):
    proto = _head(lambda g, t: g.op("Flatten", [g.op("GlobalAveragePool", [t])], name="flat"), spatial=1)
    prunable(channel_graph(proto), "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("fc_W", 1, 0)})
    zero_oracle(proto, tmp_path)


def test_flatten_over_spatial_dims_keeps_channel_blocks(tmp_path):
    """Flatten of [1, 8, 4, 4] at axis 1: NCHW order makes each channel a block of 16 features."""
    proto = _head(lambda g, t: g.op("Flatten", [t], name="flat"), spatial=4)
    space = prunable(channel_graph(proto), "conv1_W", 0, 8)
    assert {(m.tensor, m.block) for m in space.weight_members if m.tensor == "fc_W"} == {("fc_W", 16)}
    zero_oracle(proto, tmp_path)


def test_flatten_of_channels_with_batch_pins(tmp_path):
    """Flatten at axis 2 of [N, 8, 4, 4] with a symbolic N: the channel axis merges with the batch."""
    proto = _head(lambda g, t: g.op("Reshape", [g.op("Flatten", [t], name="flat", axis=2),
                                                g.ints([-1, 128], "back")]), spatial=4, batch="N")
    pinned(channel_graph(proto), "conv1_W", 0, "Flatten mixes this axis", "flat")


@pytest.mark.parametrize("target", [[1, 8], [1, -1], [-1, 8], [0, 8]])
def test_reshape_after_global_pool(tmp_path, target):
    proto = _head(lambda g, t: g.op("Reshape", [g.op("GlobalAveragePool", [t]), g.ints(target, "target")],
                                    name="reshape"), spatial=1)
    prunable(channel_graph(proto), "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("fc_W", 1, 0)})
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        kept = init_of(pruned, "conv1_W").shape[0]
        expected = [kept if d == 8 else d for d in target]
        assert list(input_value(pruned, "reshape", 1)) == expected


def test_reshape_with_dynamic_batch(tmp_path):
    proto = _head(lambda g, t: g.op("Reshape", [g.op("GlobalAveragePool", [t]), g.ints([-1, 8], "target")],
                                    name="reshape"), spatial=1, batch="N")
    prunable(channel_graph(proto), "conv1_W", 0, 8)
    zero_oracle(proto, tmp_path)


def test_reshape_with_target_from_shape(tmp_path):
    """x.view(x.size(0), -1) with a static batch: the target reads only the batch size, so it may
    stay a run-time computation (the channel position is -1)."""
    def flatten(g, t):
        pooled = g.op("GlobalAveragePool", [t])
        batch = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [pooled]), g.ints(0)], axis=0), g.ints([0])])
        target = g.op("Concat", [batch, g.ints([-1], "minus_one")], axis=0)
        return g.op("Reshape", [pooled, target], name="reshape")

    proto = _head(flatten, spatial=1)
    prunable(channel_graph(proto), "conv1_W", 0, 8)
    zero_oracle(proto, tmp_path)


def test_reshape_with_target_from_shape_and_dynamic_batch(tmp_path):
    """The same with a symbolic batch: the target is only partly known, which is enough."""
    def flatten(g, t):
        pooled = g.op("GlobalAveragePool", [t])
        batch = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [pooled]), g.ints(0)], axis=0), g.ints([0])])
        target = g.op("Concat", [batch, g.ints([-1], "minus_one")], axis=0)
        return g.op("Reshape", [pooled, target], name="reshape")

    proto = _head(flatten, spatial=1, batch="N")
    prunable(channel_graph(proto), "conv1_W", 0, 8)
    zero_oracle(proto, tmp_path)


def test_reshape_merging_channels_with_spatial_keeps_channel_blocks(tmp_path):
    """[1, 8, 4, 4] -> [1, 128]: channel c is the block c*16..c*16+15 of the flat axis."""
    proto = _head(lambda g, t: g.op("Reshape", [t, g.ints([1, 128], "target")], name="reshape"), spatial=4)
    space = prunable(channel_graph(proto), "conv1_W", 0, 8)
    assert {(m.tensor, m.axis, m.block) for m in space.weight_members if m.tensor == "fc_W"} == {("fc_W", 1, 16)}
    zero_oracle(proto, tmp_path)


def test_reshape_keeping_channels_between_spatial(tmp_path):
    """[1, 8, 4, 4] -> [1, 8, 16]: the channel axis survives; the 8 in the target is rewritten."""
    def middle(g, t):
        flat = g.op("Reshape", [t, g.ints([1, 8, 16], "to3d")], name="flatten_hw")
        flat = g.op("Relu", [flat])
        return g.op("Reshape", [flat, g.ints([1, 8, 4, 4], "to4d")], name="unflatten_hw")

    proto = sandwich(middle, spatial=4)
    conv1_space(channel_graph(proto))
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        kept = init_of(pruned, "conv1_W").shape[0]
        assert list(input_value(pruned, "flatten_hw", 1)) == [1, kept, 16]
        assert list(input_value(pruned, "unflatten_hw", 1)) == [1, kept, 4, 4]


def test_reshape_shape_constant_shared_by_two_spaces(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    target = g.ints([1, 8], "target")
    outs = []
    for branch in ("a", "b"):
        pooled = g.op("GlobalAveragePool", [g.conv(x, 3, 8, name=f"c{branch}")])
        flat = g.op("Reshape", [pooled, target], name=f"reshape_{branch}")
        outs.append(g.op("Gemm", [flat, g.weight((5, 8), f"fc{branch}_W")], name=f"fc{branch}", transB=1))
    g.output(g.op("Add", outs))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "ca_W", 0, 8)
    prunable(graph, "cb_W", 0, 8)
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        for branch in ("a", "b"):
            kept = init_of(pruned, f"c{branch}_W").shape[0]
            assert list(input_value(pruned, f"reshape_{branch}", 1)) == [1, kept]


# ---------------------------------------------------------------------------------------- Transpose, (Un)Squeeze


def test_transpose_to_nhwc_then_matmul(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 4, 4])
    t = g.op("Transpose", [g.conv(x, 3, 8, name="conv1")], perm=[0, 2, 3, 1])
    t = g.op("Relu", [g.op("MatMul", [t, g.weight((8, 6), "mm_W")], name="mm")])
    t = g.op("Transpose", [t], perm=[0, 3, 1, 2])
    g.output(g.conv(t, 6, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("mm_W", 0, 0)})
    prunable(graph, "mm_W", 1, 6, members={("mm_W", 1, 0), ("conv2_W", 1, 0)})
    zero_oracle(proto, tmp_path)


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_squeeze_unsqueeze_around_channels(tmp_path, opset):
    g = GraphBuilder(opset)
    x = g.input([2, 3, 8, 8])
    pooled = g.op("GlobalAveragePool", [g.conv(x, 3, 8, name="conv1")])
    if opset >= 13:
        flat = g.op("Squeeze", [pooled, g.ints([2, 3], "sq_axes")], name="squeeze")
    else:
        flat = g.op("Squeeze", [pooled], name="squeeze", axes=[-1, 2])
    hidden = g.op("Gemm", [flat, g.weight((6, 8), "fc_W"), g.weight((6,), "fc_C")], name="fc", transB=1)
    if opset >= 13:
        back = g.op("Unsqueeze", [hidden, g.ints([-1, 2], "unsq_axes")], name="unsqueeze")
    else:
        back = g.op("Unsqueeze", [hidden], name="unsqueeze", axes=[2, 3])
    g.output(g.conv(back, 6, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("fc_W", 1, 0)})
    prunable(graph, "fc_W", 0, 6, members={("fc_W", 0, 0), ("fc_C", 0, 0), ("conv2_W", 1, 0)})
    zero_oracle(proto, tmp_path)


def _squeeze_all(opset: int) -> onnx.ModelProto:
    g = GraphBuilder(opset)
    x = g.input([1, 3, 4, 4])
    pooled = g.op("GlobalAveragePool", [g.conv(x, 3, 2, name="conv1")])  # [1, 2, 1, 1]
    flat = g.op("Squeeze", [pooled], name="squeeze")  # no axes: every size-1 axis goes -> [2]
    g.output(g.op("MatMul", [g.op("Unsqueeze", [flat, g.ints([0])] if opset >= 13 else [flat], axes=None
                                  if opset >= 13 else [0]), g.weight((2, 3), "mm_W")], name="mm"))
    return g.model()


@pytest.mark.parametrize("opset", [11, 17])
def test_squeeze_without_axes_tracks_channels(opset):
    prunable(channel_graph(_squeeze_all(opset)), "conv1_W", 0, 2,
             members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("mm_W", 0, 0)})


@pytest.mark.parametrize("opset", [11, 17])
def test_squeeze_without_axes_survives_one_kept_channel(tmp_path, opset):
    zero_oracle(_squeeze_all(opset), tmp_path, runs=[(0.5, 0, False)])


def test_squeeze_excitation(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    y = g.op("Relu", [g.conv(x, 3, 8, name="conv1")])
    s = g.op("Relu", [g.conv(g.op("GlobalAveragePool", [y]), 8, 3, k=1, name="se_reduce")])
    s = g.op("Sigmoid", [g.conv(s, 3, 8, k=1, name="se_expand")])
    g.output(g.conv(g.op("Mul", [y, s], name="scale"), 8, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    conv1_space(graph, extra={("se_reduce_W", 1, 0), ("se_expand_W", 0, 0), ("se_expand_B", 0, 0)})
    prunable(graph, "se_reduce_W", 0, 3, members={("se_reduce_W", 0, 0), ("se_reduce_B", 0, 0),
                                                  ("se_expand_W", 1, 0)})
    assert len(graph.prunable) == 2
    zero_oracle(proto, tmp_path)


# ---------------------------------------------------------------------------------------- reductions, softmax


@pytest.mark.parametrize(("opset", "axis"), [(17, 1), (17, -3), (11, 1), (11, -3)])
def test_softmax_over_channels_pins(tmp_path, opset, axis):
    proto = sandwich(lambda g, t: g.op("Softmax", [t], name="softmax", axis=axis), opset=opset)
    pinned(channel_graph(proto), "conv1_W", 0, "Softmax normalizes across this axis", "softmax")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


@pytest.mark.parametrize(("op", "opset", "axis"), [("Softmax", 17, -1), ("LogSoftmax", 17, 2), ("Softmax", 11, 2),
                                                  ("LogSoftmax", 11, -1)])
def test_softmax_over_spatial_axis_passes(tmp_path, op, opset, axis):
    """Before opset 13 the input is flattened at `axis`: axis 2 normalizes over H*W, per channel."""
    proto = sandwich(lambda g, t: g.op(op, [t], axis=axis), opset=opset)
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path, runs=QUICK_RUNS)


@pytest.mark.parametrize("opset", [17, 18])
def test_reduce_mean_over_channels_pins(tmp_path, opset):
    def middle(g, t):
        if opset >= 18:
            reduced = g.op("ReduceMean", [t, g.ints([1], "axes")], name="mean")
        else:
            reduced = g.op("ReduceMean", [t], name="mean", axes=[1])
        return g.op("Mul", [t, reduced])

    proto = sandwich(middle, opset=opset)
    pinned(channel_graph(proto), "conv1_W", 0, "ReduceMean reduces across this axis", "mean")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_over_spatial_axes_passes(tmp_path, opset, keepdims):
    g = GraphBuilder(opset)
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    if opset >= 18:
        t = g.op("ReduceMean", [t, g.ints([-1, 2], "axes")], name="mean", keepdims=keepdims)
    else:
        t = g.op("ReduceMean", [t], name="mean", axes=[-1, 2], keepdims=keepdims)
    if keepdims:
        t = g.op("Flatten", [t])
    g.output(g.op("Gemm", [t, g.weight((5, 8), "fc_W")], name="fc", transB=1))
    proto = g.model()
    prunable(channel_graph(proto), "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("fc_W", 1, 0)})
    zero_oracle(proto, tmp_path)


# ---------------------------------------------------------------------------------------- things that must pin


def test_graph_output_and_input_pin():
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    g.output(g.conv(x, 3, 8, name="conv1"))
    graph = channel_graph(g.model())
    pinned(graph, "conv1_W", 0, "graph output 'conv1'")
    pinned(graph, "conv1_W", 1, "axis 1 of 'x' (a graph input)", "conv1")
    assert not graph.prunable


def test_intermediate_that_is_also_a_graph_output_pins(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Relu", [g.conv(x, 3, 8, name="conv1")], name="features")
    g.output(g.conv(t, 8, 4, k=1, name="conv2"), "features")
    proto = g.model()
    pinned(channel_graph(proto), "conv1_W", 0, "graph output 'features'")


def test_unknown_custom_domain_op_pins():
    g = GraphBuilder()
    g.domains["com.example"] = 1
    x = g.input([1, 3, 8, 8])
    t = g.op("Swizzle", [g.conv(x, 3, 8, name="conv1")], name="swizzle", domain="com.example")
    g.output(g.conv(t, 8, 4, k=1, name="conv2"))
    graph = channel_graph(g.model())
    pinned(graph, "conv1_W", 0, "Swizzle from domain 'com.example' is not understood", "swizzle")
    pinned(graph, "conv2_W", 1, "unknown", "conv2")  # nothing infers the custom op's output shape


def test_op_without_rule_pins(tmp_path):
    def middle(g, t):
        return g.op("TopK", [t, g.ints([8], "k")], outputs=2, name="topk", axis=1)[0]

    proto = sandwich(middle)
    graph = channel_graph(proto)
    pinned(graph, "conv1_W", 0, "no channel rule for TopK", "topk")
    pinned(graph, "conv2_W", 1, "no channel rule for TopK")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


def test_shape_value_read_by_arithmetic_pins(tmp_path):
    """t / C with C read from Shape at run time: removing channels would change C."""
    def middle(g, t):
        channels = g.op("Gather", [g.op("Shape", [t], name="shape"), g.ints(1, "one")], axis=0)
        return g.op("Div", [t, g.op("Cast", [channels], name="to_float", to=TensorProto.FLOAT)])

    proto = sandwich(middle)
    pinned(channel_graph(proto), "conv1_W", 0, "its size is read at run time by Cast 'to_float'")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


def test_shape_value_into_constant_of_shape_pins(tmp_path):
    def middle(g, t):
        shape = g.op("Shape", [t], name="shape")
        ones = g.op("ConstantOfShape", [shape], name="ones",
                    value=numpy_helper.from_array(np.array([1.5], np.float32)))
        return g.op("Mul", [t, ones])

    proto = sandwich(middle)
    pinned(channel_graph(proto), "conv1_W", 0, "read at run time by ConstantOfShape 'ones'")
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


def test_shape_value_that_is_a_graph_output_pins():
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    g.output(g.conv(t, 8, 4, k=1, name="conv2"))
    g.output(g.op("Shape", [t], name="shape"), elem_type=TensorProto.INT64)
    pinned(channel_graph(g.model()), "conv1_W", 0, "its size is a graph output ('shape')")


def test_initializer_listed_as_graph_input_pins(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Relu", [g.conv(x, 3, 8, name="conv1")])
    t = g.op("Relu", [g.conv(t, 8, 6, name="conv2")])
    g.output(g.conv(t, 6, 4, k=1, name="conv3"))
    g.inputs.append(helper.make_tensor_value_info("conv2_W", TensorProto.FLOAT, [6, 8, 3, 3]))
    proto = g.model()
    graph = channel_graph(proto)
    pinned(graph, "conv1_W", 0, "initializer 'conv2_W' is also a graph input")
    pinned(graph, "conv2_W", 0, "initializer 'conv2_W' is also a graph input")
    assert not graph.prunable
    zero_oracle(proto, tmp_path, expect_pruned=False, runs=QUICK_RUNS[:1])


# ---------------------------------------------------------------------------------------- atoms


def test_split_then_swapped_concat_added_to_itself(tmp_path):
    """t + concat(t[4:], t[:4]) ties channel i with channel i + 4: one space of size 4, two offsets."""
    g = GraphBuilder(13)
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    a, b = g.op("Split", [t, g.ints([4, 4], "halves")], outputs=2, name="split", axis=1)
    t = g.op("Add", [t, g.op("Concat", [b, a], axis=1)])
    g.output(g.conv(t, 8, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 4, members={(w, a, o) for w, a in (("conv1_W", 0), ("conv1_B", 0), ("conv2_W", 1))
                                              for o in (0, 4)})
    assert len(graph.prunable) == 1
    zero_oracle(proto, tmp_path)


def test_grouped_conv_in_a_residual_block(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.op("Relu", [g.conv(x, 3, 8, name="conv1")])
    t = g.op("Add", [t, g.conv(t, 8, 8, group=2, name="gconv")])
    g.output(g.conv(t, 8, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 4, members={
        (w, a, o) for w, a in (("conv1_W", 0), ("conv1_B", 0), ("gconv_W", 0), ("gconv_B", 0), ("conv2_W", 1))
        for o in (0, 4)} | {("gconv_W", 1, 0)})
    assert len(graph.prunable) == 1
    zero_oracle(proto, tmp_path)


def test_concat_of_a_tensor_with_itself(tmp_path):
    proto = sandwich(lambda g, t: g.op("Concat", [t, t], axis=1), channels=8)
    proto = _retarget_conv2(proto, 16)
    prunable(channel_graph(proto), "conv1_W", 0, 8,
             members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("conv2_W", 1, 0), ("conv2_W", 1, 8)})
    zero_oracle(proto, tmp_path)


def test_slice_across_a_concat_boundary(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    cat = g.op("Concat", [g.conv(x, 3, 4, name="ca"), g.conv(x, 3, 6, name="cb")], axis=1)
    s = g.op("Slice", [cat, g.ints([2]), g.ints([7]), g.ints([1])], name="slice")
    g.output(g.conv(s, 5, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "ca_W", 0, 2, offset=2, members={("ca_W", 0, 2), ("ca_B", 0, 2), ("conv2_W", 1, 0)})
    prunable(graph, "cb_W", 0, 3, members={("cb_W", 0, 0), ("cb_B", 0, 0), ("conv2_W", 1, 2)})
    prunable(graph, "cb_W", 0, 3, offset=3, members={("cb_W", 0, 3), ("cb_B", 0, 3)})
    zero_oracle(proto, tmp_path)


def test_split_sizes_constant_shared_by_two_splits(tmp_path):
    g = GraphBuilder(13)
    x = g.input([1, 3, 8, 8])
    sizes = g.ints([3, 5], "sizes")
    outs = []
    for branch in ("a", "b"):
        parts = g.op("Split", [g.conv(x, 3, 8, name=f"c{branch}"), sizes], outputs=2, name=f"split_{branch}", axis=1)
        outs += [g.conv(parts[0], 3, 4, k=1, name=f"{branch}0"), g.conv(parts[1], 5, 4, k=1, name=f"{branch}1")]
    g.output(g.op("Sum", outs))
    proto = g.model()
    assert len(channel_graph(proto).prunable) == 4
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        for branch in ("a", "b"):
            widths = [init_of(pruned, f"{branch}{i}_W").shape[1] for i in (0, 1)]
            assert list(input_value(pruned, f"split_{branch}", 1)) == widths


def test_split_with_negative_axis_and_a_discarded_part(tmp_path):
    g = GraphBuilder(13)
    x = g.input([1, 3, 8, 8])
    kept, _ = g.op("Split", [g.conv(x, 3, 8, name="conv1"), g.ints([6, 2], "sizes")], outputs=2, name="split",
                   axis=-3)
    g.output(g.conv(kept, 6, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 6, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("conv2_W", 1, 0)})
    prunable(graph, "conv1_W", 0, 2, offset=6, members={("conv1_W", 0, 6), ("conv1_B", 0, 6)})
    zero_oracle(proto, tmp_path)


def test_conv1d_chain(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 16])
    t = g.op("Relu", [g.op("Conv", [x, g.weight((8, 3, 3), "conv1_W"), g.weight((8,), "conv1_B")], name="conv1",
                           pads=[1, 1])])
    t = g.op("MaxPool", [t], kernel_shape=[2], strides=[2])
    g.output(g.op("Conv", [t, g.weight((4, 8, 1), "conv2_W")], name="conv2"))
    proto = g.model()
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path)


def test_transpose_without_perm_reverses_axes(tmp_path):
    g = GraphBuilder()
    x = g.input([2, 5])
    t = g.op("Gemm", [x, g.weight((8, 5), "g1_W"), g.weight((8,), "g1_C")], name="g1", transB=1)
    t = g.op("Transpose", [g.op("Tanh", [t])])  # [8, 2]
    g.output(g.op("MatMul", [g.weight((4, 8), "mm_W"), t], name="mm"))
    proto = g.model()
    prunable(channel_graph(proto), "g1_W", 0, 8, members={("g1_W", 0, 0), ("g1_C", 0, 0), ("mm_W", 1, 0)})
    zero_oracle(proto, tmp_path)


@pytest.mark.parametrize(("axis", "then"), [(0, None), (2, [1, 0])])
def test_flatten_axis_variants(tmp_path, axis, then):
    def flatten(g, t):
        flat = g.op("Flatten", [g.op("GlobalAveragePool", [t])], name="flat", axis=axis)
        return flat if then is None else g.op("Transpose", [flat], perm=then)

    proto = _head(flatten, spatial=1)
    prunable(channel_graph(proto), "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("fc_W", 1, 0)})
    zero_oracle(proto, tmp_path)


def test_flatten_axis0_with_static_batch_repeats_the_channels(tmp_path):
    """[2, 8, 1, 1] flattened at axis 0 is [1, 16]: channel c sits at columns c and 8 + c."""
    g = GraphBuilder()
    x = g.input([2, 3, 8, 8])
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [g.conv(x, 3, 8, name="conv1")])], name="flat", axis=0)
    g.output(g.op("Gemm", [flat, g.weight((5, 16), "fc_W")], name="fc", transB=1))
    space = prunable(channel_graph(g.model()), "conv1_W", 0, 8)
    assert {(m.offset, m.block) for m in space.weight_members if m.tensor == "fc_W"} == {(0, 1), (8, 1)}
    zero_oracle(g.model(), tmp_path)


NORMALIZING = {
    "MeanVarianceNormalization": (lambda g, t: g.op("MeanVarianceNormalization", [t], name="norm"), True),
    "MVN-over-channels": (lambda g, t: g.op("MeanVarianceNormalization", [t], name="norm", axes=[1, 2, 3]), False),
    "LRN": (lambda g, t: g.op("LRN", [t], name="norm", size=3), False),
    "LpNormalization-channels": (lambda g, t: g.op("LpNormalization", [t], name="norm", axis=1), False),
    "LpNormalization-width": (lambda g, t: g.op("LpNormalization", [t], name="norm", axis=-1), True),
    "Hardmax-channels": (lambda g, t: g.op("Hardmax", [t], name="norm", axis=1), False),
    "ArgMax-channels": (lambda g, t: g.op("Cast", [g.op("ArgMax", [t], name="norm", axis=1)], to=TensorProto.FLOAT),
                        False),
    "ReduceSum13-spatial": (lambda g, t: g.op("ReduceSum", [t, g.ints([2, 3])], name="norm"), True),
    "ReduceMax-channels": (lambda g, t: g.op("ReduceMax", [t], name="norm", axes=[1]), False),
    "ReduceL2-all": (lambda g, t: g.op("ReduceL2", [t], name="norm"), False),
}


@pytest.mark.parametrize("name", list(NORMALIZING))
def test_statistics_ops(tmp_path, name):
    middle, passes = NORMALIZING[name]

    def full(g, t):
        out = middle(g, t)
        if not passes:  # whatever came out has no channel axis worth pruning: broadcast it back
            out = g.op("Mul", [t, out])
        return out

    proto = sandwich(full)
    graph = channel_graph(proto)
    if passes:
        conv1_space(graph)
    else:
        pinned(graph, "conv1_W", 0, "norm")
    # onnx's strict inference trips over MeanVarianceNormalization's own function body (Constant node).
    zero_oracle(proto, tmp_path, expect_pruned=passes, runs=QUICK_RUNS if passes else QUICK_RUNS[:1],
                full_check="MeanVariance" not in name)


def test_shape_of_spatial_axes_only_keeps_channels_prunable(tmp_path):
    """Shape(t, start=2) reads H and W only: a run-time use of it must not pin the channels."""
    def middle(g, t):
        hw = g.op("Cast", [g.op("Shape", [t], name="shape", start=2)], name="to_float", to=TensorProto.FLOAT)
        return g.op("Div", [t, g.op("ReduceSum", [hw], keepdims=0)])

    proto = sandwich(middle)
    conv1_space(channel_graph(proto))
    zero_oracle(proto, tmp_path)


def test_chunk_with_constant_nodes_and_dynamic_batch(tmp_path):
    """The torch.chunk pattern again, with Constant nodes (as exporters write them) and a symbolic batch."""
    g = GraphBuilder(17)
    x = g.input(["N", 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")

    def constant(values, name):
        return g.op("Constant", [], name=name, value=numpy_helper.from_array(np.asarray(values, np.int64)))

    channels = g.op("Gather", [g.op("Shape", [t], name="shape"), constant(1, "one")], name="gather", axis=0)
    half = g.op("Unsqueeze", [g.op("Div", [channels, constant(2, "two")], name="div"), constant([0], "axis0")])
    end = g.op("Mul", [half, constant([2], "times")], name="mul")
    axes = constant([1], "axes")
    a = g.op("Slice", [t, constant([0], "zero"), half, axes], name="slice_a")
    b = g.op("Slice", [t, half, end, axes], name="slice_b")
    g.output(g.op("Add", [g.conv(a, 4, 4, k=1, name="ca"), g.conv(b, 4, 4, k=1, name="cb")]))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "conv1_W", 0, 4, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("ca_W", 1, 0)})
    prunable(graph, "conv1_W", 0, 4, offset=4, members={("conv1_W", 0, 4), ("conv1_B", 0, 4), ("cb_W", 1, 0)})
    zero_oracle(proto, tmp_path)


def test_if_reading_a_channel_tensor_pins_it(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    flag = g.input([], "flag", TensorProto.BOOL)
    t = g.conv(x, 3, 8, name="conv1")
    out_type = helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, [1, 8, 8, 8])
    then_graph = helper.make_graph([helper.make_node("Relu", [t], ["branch_out"])], "then", [], [out_type])
    else_graph = helper.make_graph([helper.make_node("Neg", [t], ["branch_out"])], "else", [], [out_type])
    chosen = g.op("If", [flag], name="choose", then_branch=then_graph, else_branch=else_graph)
    other = g.op("Relu", [g.conv(x, 3, 6, name="other")])
    g.output(g.conv(chosen, 8, 4, k=1, name="conv2"), g.conv(other, 6, 4, k=1, name="conv3"))
    proto = g.model()
    graph = channel_graph(proto)
    pinned(graph, "conv1_W", 0, "no channel rule for If", "choose")
    prunable(graph, "other_W", 0, 6)
    zero_oracle(proto, tmp_path)


def _int32_slice_model(shared_starts: bool) -> onnx.ModelProto:
    """Slice bounds in int32 (Tind allows it; some converters write them so)."""
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    starts, axes = g.const(np.array([2], np.int32), "starts"), g.const(np.array([1], np.int32), "axes")
    s = g.op("Slice", [t, starts, g.const(np.array([7], np.int32), "ends"), axes], name="slice")
    outputs = [g.conv(s, 5, 4, k=1, name="conv2")]
    if shared_starts:  # a second user of `starts` forces a fresh constant rather than an in-place update
        outputs.append(g.op("Slice", [x, starts, g.const(np.array([3], np.int32)), axes], name="slice_x"))
    g.output(*outputs)
    return g.model()


@pytest.mark.parametrize("shared_starts", [False, True])
def test_int32_slice_bounds_spaces(shared_starts):
    graph = channel_graph(_int32_slice_model(shared_starts))
    prunable(graph, "conv1_W", 0, 5, offset=2, members={("conv1_W", 0, 2), ("conv1_B", 0, 2), ("conv2_W", 1, 0)})
    prunable(graph, "conv1_W", 0, 2, members={("conv1_W", 0, 0), ("conv1_B", 0, 0)})


@pytest.mark.parametrize("shared_starts", [False, True])
def test_int32_slice_bounds_oracle(tmp_path, shared_starts):
    zero_oracle(_int32_slice_model(shared_starts), tmp_path, runs=[(0.5, 0, False)])


def _int32_chunk_model() -> onnx.ModelProto:
    """Chunk bounds computed from Shape, then Cast to int32 next to int32 constant bounds."""
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    t = g.conv(x, 3, 8, name="conv1")
    channels = g.op("Gather", [g.op("Shape", [t]), g.ints(1)], axis=0)
    half = g.op("Cast", [g.op("Div", [channels, g.ints(2)])], name="to_int32", to=TensorProto.INT32)
    half = g.op("Unsqueeze", [half, g.ints([0])])
    axes = g.const(np.array([1], np.int32), "axes")
    a = g.op("Slice", [t, g.const(np.array([0], np.int32), "zero"), half, axes], name="slice_a")
    b = g.op("Slice", [t, half, g.const(np.array([8], np.int32), "eight"), axes], name="slice_b")
    g.output(g.op("Add", [g.conv(a, 4, 4, k=1, name="ca"), g.conv(b, 4, 4, k=1, name="cb")]))
    return g.model()


def test_int32_shape_derived_slice_bounds_spaces():
    graph = channel_graph(_int32_chunk_model())
    prunable(graph, "conv1_W", 0, 4, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("ca_W", 1, 0)})
    prunable(graph, "conv1_W", 0, 4, offset=4, members={("conv1_W", 0, 4), ("conv1_B", 0, 4), ("cb_W", 1, 0)})


def test_int32_shape_derived_slice_bounds_oracle(tmp_path):
    zero_oracle(_int32_chunk_model(), tmp_path, runs=[(0.4, 0, False)])


def test_conv_weight_shared_by_two_inputs_ties_their_spaces(tmp_path):
    g = GraphBuilder()
    x = g.input([1, 3, 8, 8])
    a = g.op("Relu", [g.conv(x, 3, 8, name="ca")])
    b = g.op("Sigmoid", [g.conv(x, 3, 8, k=1, name="cb")])
    shared = g.weight((6, 8, 3, 3), "shared_W")
    ya = g.op("Conv", [a, shared], name="sa", pads=[1, 1, 1, 1])
    yb = g.op("Conv", [b, shared], name="sb", pads=[1, 1, 1, 1])
    g.output(g.conv(g.op("Relu", [g.op("Add", [ya, yb])]), 6, 4, k=1, name="conv2"))
    proto = g.model()
    graph = channel_graph(proto)
    prunable(graph, "ca_W", 0, 8, members={("ca_W", 0, 0), ("ca_B", 0, 0), ("cb_W", 0, 0), ("cb_B", 0, 0),
                                           ("shared_W", 1, 0)})
    prunable(graph, "shared_W", 0, 6, members={("shared_W", 0, 0), ("conv2_W", 1, 0)})
    zero_oracle(proto, tmp_path)


def test_tile_repeats_the_channel_layout(tmp_path):
    """Tile [1, 2, 1, 1]: channel c of conv1 is channels c and 4 + c of the tiled tensor."""
    g = GraphBuilder()
    tiled = g.op("Tile", [g.conv(g.input([1, 3, 8, 8]), 3, 4, name="conv1"), g.ints([1, 2, 1, 1], "repeats")])
    g.output(g.op("Conv", [tiled, g.weight((5, 8, 1, 1), "w2")], name="conv2"))
    proto = g.model()
    space = prunable(channel_graph(proto), "conv1_W", 0, 4)
    assert {(m.offset, m.block) for m in space.weight_members if m.tensor == "w2"} == {(0, 1), (4, 1)}
    zero_oracle(proto, tmp_path)
