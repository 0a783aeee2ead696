"""Per-op channel propagation rules: Broadcasting elementwise ops, Concat, Split and Slice rules.

Each test checks the channel spaces `build_channel_graph` finds and the zero-oracle (see rule_checks.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import GraphBuilder
from rule_checks import (
    QUICK_RUNS,
    attr_of,
    channel_graph,
    conv1_space,
    init_of,
    node_of,
    pinned,
    prunable,
    sandwich,
    space_of,
    weight_members,
    zero_oracle,
)

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


