"""Per-op channel propagation rules: What must pin (graph boundaries, unknown ops, leaking shape values),
and regressions from odd graphs.

Each test checks the channel spaces `build_channel_graph` finds and the zero-oracle (see rule_checks.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import GraphBuilder
from onnx import TensorProto, helper, numpy_helper
from rule_checks import (
    QUICK_RUNS,
    channel_graph,
    conv1_space,
    head_model,
    init_of,
    input_value,
    pinned,
    prunable,
    retarget_conv2,
    sandwich,
    zero_oracle,
)

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
    proto = retarget_conv2(proto, 16)
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

    proto = head_model(flatten, spatial=1)
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
