"""Per-op channel propagation rules: Resize, pooling, Pad, Flatten/Reshape, Transpose/Squeeze,
Softmax and Reduce rules.

Each test checks the channel spaces `build_channel_graph` finds and the zero-oracle (see rule_checks.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import GraphBuilder
from rule_checks import (
    QUICK_RUNS,
    channel_graph,
    conv1_space,
    head_model,
    init_of,
    input_value,
    pinned,
    prunable,
    sandwich,
    zero_oracle,
)

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


def test_flatten_after_global_pool_into_gemm(tmp_path):
    proto = head_model(lambda g, t: g.op("Flatten", [g.op("GlobalAveragePool", [t])], name="flat"), spatial=1)
    prunable(channel_graph(proto), "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("fc_W", 1, 0)})
    zero_oracle(proto, tmp_path)


def test_flatten_over_spatial_dims_keeps_channel_blocks(tmp_path):
    """Flatten of [1, 8, 4, 4] at axis 1: NCHW order makes each channel a block of 16 features."""
    proto = head_model(lambda g, t: g.op("Flatten", [t], name="flat"), spatial=4)
    space = prunable(channel_graph(proto), "conv1_W", 0, 8)
    assert {(m.tensor, m.block) for m in space.weight_members if m.tensor == "fc_W"} == {("fc_W", 16)}
    zero_oracle(proto, tmp_path)


def test_flatten_of_channels_with_batch_pins(tmp_path):
    """Flatten at axis 2 of [N, 8, 4, 4] with a symbolic N: the channel axis merges with the batch."""
    proto = head_model(lambda g, t: g.op("Reshape", [g.op("Flatten", [t], name="flat", axis=2),
                                                g.ints([-1, 128], "back")]), spatial=4, batch="N")
    pinned(channel_graph(proto), "conv1_W", 0, "Flatten mixes this axis", "flat")


@pytest.mark.parametrize("target", [[1, 8], [1, -1], [-1, 8], [0, 8]])
def test_reshape_after_global_pool(tmp_path, target):
    proto = head_model(lambda g, t: g.op("Reshape", [g.op("GlobalAveragePool", [t]), g.ints(target, "target")],
                                    name="reshape"), spatial=1)
    prunable(channel_graph(proto), "conv1_W", 0, 8, members={("conv1_W", 0, 0), ("conv1_B", 0, 0), ("fc_W", 1, 0)})
    for _, _, out in zero_oracle(proto, tmp_path):
        pruned = onnx.load(out)
        kept = init_of(pruned, "conv1_W").shape[0]
        expected = [kept if d == 8 else d for d in target]
        assert list(input_value(pruned, "reshape", 1)) == expected


def test_reshape_with_dynamic_batch(tmp_path):
    proto = head_model(lambda g, t: g.op("Reshape", [g.op("GlobalAveragePool", [t]), g.ints([-1, 8], "target")],
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

    proto = head_model(flatten, spatial=1)
    prunable(channel_graph(proto), "conv1_W", 0, 8)
    zero_oracle(proto, tmp_path)


def test_reshape_with_target_from_shape_and_dynamic_batch(tmp_path):
    """The same with a symbolic batch: the target is only partly known, which is enough."""
    def flatten(g, t):
        pooled = g.op("GlobalAveragePool", [t])
        batch = g.op("Unsqueeze", [g.op("Gather", [g.op("Shape", [pooled]), g.ints(0)], axis=0), g.ints([0])])
        target = g.op("Concat", [batch, g.ints([-1], "minus_one")], axis=0)
        return g.op("Reshape", [pooled, target], name="reshape")

    proto = head_model(flatten, spatial=1, batch="N")
    prunable(channel_graph(proto), "conv1_W", 0, 8)
    zero_oracle(proto, tmp_path)


def test_reshape_merging_channels_with_spatial_keeps_channel_blocks(tmp_path):
    """[1, 8, 4, 4] -> [1, 128]: channel c is the block c*16..c*16+15 of the flat axis."""
    proto = head_model(lambda g, t: g.op("Reshape", [t, g.ints([1, 128], "target")], name="reshape"), spatial=4)
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


