"""Odd graph kinds prune correctly or are left alone, and never crash (issue 7, items 4 and 5).

Control flow (If/Loop/Scan): the main graph is pruned, every space that reaches into a subgraph is
pinned by the If/Loop/Scan node, and subgraphs come out byte-identical. QDQ models: per-channel scales
and zero points are sliced with their weight axis, per-tensor ones kept, blocked quantization pins.
float16, bfloat16, Constant-node weights and opsets 11..21. Each graph also goes through every mode.

The zero-oracle here applies an explicit plan with RemoveChannels (so it checks the dependency graph
and the rewrite whatever the criterion scores), and for float32/float16 graphs also through `prune`
with the L1 criterion, which must then remove exactly the zeroed channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import odd_graphs as og
import onnx
import pytest
import tiny
from onnx import TensorProto, helper, numpy_helper
from onnxprune.passes import RemoveChannels
from oracle import check_valid, choose_channels, max_relative_error, random_feed, run, zero_channels

from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.errors import OnnxPruneError
from onnxprune.io.saving import save_model
from onnxprune.pipeline import Context

# ---------------------------------------------------------------------------------------- helpers


def save(proto: onnx.ModelProto, path: Path) -> Path:
    onnx.save(proto, path)
    return path


def feeds(model: Model) -> list[dict[str, np.ndarray]]:
    """Random feeds and their negation: the If conditions (mean of x > 0) take both branches."""
    first = random_feed(model, 0)
    return [first, {name: -value for name, value in first.items()}, random_feed(model, 1)]


def as_float32(path: Path, target: Path) -> Path:
    """A float32 copy of a (bfloat16) model, for ONNX Runtime, which has no CPU bfloat16 Conv."""
    return save(og.cast_float(onnx.load(path), TensorProto.FLOAT), target)


def compare(reference: Path, result: Path, model: Model, tolerance: float, tmp_path: Path) -> None:
    if any(w.header.data_type == TensorProto.BFLOAT16 for w in model.weights.values()):
        reference = as_float32(reference, tmp_path / f"{reference.stem}_f32.onnx")
        result = as_float32(result, tmp_path / f"{result.stem}_f32.onnx")
        model = Model.load(reference)
    for feed in feeds(model):
        error = max_relative_error(run(reference, feed), run(result, feed))
        assert error < tolerance, f"relative error {error}"


def apply_plan(proto: onnx.ModelProto, plan: dict[int, np.ndarray], target: Path) -> Path:
    model = Model.from_proto(proto)
    context = Context(model)
    context.plan = {space: np.asarray(indices) for space, indices in plan.items()}
    RemoveChannels().run(context)
    return save_model(model, target)


def oracle(proto: onnx.ModelProto, tmp_path: Path, tolerance: float = 1e-5, through_prune: bool = True) -> None:
    """Zero random channels of every prunable space; removing them must not move any output."""
    for index, (ratio, seed) in enumerate([(0.4, 0), (None, 1)]):
        model = Model.from_proto(proto)
        plan = choose_channels(model, ratio, seed)
        assert plan, "nothing was prunable"
        zero_channels(model, plan)
        zeroed = save_model(model, tmp_path / f"zeroed{index}.onnx")
        direct = apply_plan(model.to_proto(), plan, tmp_path / f"direct{index}.onnx")
        check_valid(direct)
        compare(zeroed, direct, model, tolerance, tmp_path)
        assert og.subgraphs(onnx.load(direct)) == og.subgraphs(proto)
        if through_prune:
            total = sum(space.size for space in build_channel_graph(model).prunable)
            out = tmp_path / f"pruned{index}.onnx"
            report = prune(zeroed, out, PruneOptions(structured=sum(map(len, plan.values())) / total,
                                                     global_ranking=True, validate=False, round_to=1))
            removed = {space["id"]: space["removed"] for space in report["spaces"] if space["removed"]}
            assert removed == {k: [int(i) for i in v] for k, v in plan.items()}, "plan not followed"
            check_valid(out)
            compare(zeroed, out, model, tolerance, tmp_path)


def space_of(proto_or_model, tensor: str, axis: int):
    model = proto_or_model if isinstance(proto_or_model, Model) else Model.from_proto(proto_or_model)
    for space in build_channel_graph(model).spaces:
        if any((m.tensor, m.axis) == (tensor, axis) for m in space.members):
            return space
    raise AssertionError(f"no space holds '{tensor}' axis {axis}")


def pinned_by(proto, tensor: str, axis: int, *words: str) -> None:
    space = space_of(proto, tensor, axis)
    reasons = [str(pin) for pin in space.pins]
    assert any(all(word in reason for word in words) for reason in reasons), f"{words} not in {reasons}"


def members(proto, tensor: str, axis: int) -> set[tuple[str, int]]:
    space = space_of(proto, tensor, axis)
    assert space.prunable, [str(p) for p in space.pins]
    return {(m.tensor, m.axis) for m in space.weight_members}


def initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def constants_model(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer written as a Constant node instead (as paddle2onnx exports)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    nodes = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t) for t in out.graph.initializer]
    del out.graph.initializer[:]
    nodes += list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


# ---------------------------------------------------------------------------------------- control flow


@pytest.mark.parametrize("name, expect_pinned, expect_prunable", [
    ("if_outer", [("conv2_W", 0, "If 'branch'", "subgraphs are kept unchanged")], [("conv1_W", 0), ("conv3_W", 0)]),
    ("if_feeds", [("conv1_W", 0, "If 'branch'")], [("conv2_W", 0)]),
    ("loop", [("conv1_W", 0, "Loop 'loop'", "subgraphs are kept unchanged"),
              ("conv2_W", 0, "defines 'conv2_W' again", "Loop 'loop'")],
     [("conv3_W", 0)]),
    ("scan", [("W1", 1, "Scan 'scan'"), ("W2", 1, "defines 'W2' again", "Scan 'scan'")], [("W0", 1)]),
])
def test_control_flow_pins_what_reaches_a_subgraph(tmp_path, name, expect_pinned, expect_prunable):
    proto = og.CONTROL_FLOW[name]()
    for tensor, axis, *words in expect_pinned:
        pinned_by(proto, tensor, axis, *words)
    for tensor, axis in expect_prunable:
        assert space_of(proto, tensor, axis).prunable
    oracle(proto, tmp_path)


def test_remove_unused_keeps_what_only_subgraphs_read(tmp_path):
    proto = og.loop_with_conv_body()
    proto.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "dead"))
    model = Model.from_proto(proto)
    model.remove_unused()
    assert "outer_bias" in model.weights  # read only by an If nested in the Loop body
    assert "trips" in model.weights and "dead" not in model.weights
    report = prune(save(proto, tmp_path / "in.onnx"), tmp_path / "out.onnx", PruneOptions(structured=0.4,
                                                                                           validate=False))
    assert report["channels_removed"] > 0
    assert "outer_bias" in initializers(tmp_path / "out.onnx")
    check_valid(tmp_path / "out.onnx")


# ---------------------------------------------------------------------------------------- QDQ


def test_qdq_per_channel_parameters_join_their_weight_axis():
    proto = og.qdq_convnet()
    conv1 = {("conv1_W_q", 0), ("conv1_W_scale", 0), ("conv1_W_zp", 0), ("conv1_B_q", 0), ("conv1_B_scale", 0),
             ("conv1_B_zp", 0), ("conv2_W_q", 1)}
    assert members(proto, "conv1_W_q", 0) == conv1
    assert space_of(proto, "conv1_W_q", 0).label == "Conv 'conv1' output channels"
    assert {"conv1", "conv2", "conv1_W_dq"} <= set(space_of(proto, "conv1_W_q", 0).nodes)  # for --exclude
    # MatMul B quantized on axis 1 (output features); Gemm(transB) B on axis 0.
    assert members(proto, "fc1_W_q", 1) == {("fc1_W_q", 1), ("fc1_W_scale", 0), ("fc1_W_zp", 0), ("fc2_W_q", 1)}
    pinned_by(proto, "fc2_W_q", 0, "graph output")
    # Per input axis: W1's scales go with the channels W0 produces; a per-tensor scale joins nothing.
    proto = og.qdq_input_axis()
    assert members(proto, "W0_q", 1) == {("W0_q", 1), ("W0_scale", 0), ("W0_zp", 0), ("W1_q", 0), ("W1_scale", 0),
                                         ("W1_zp", 0)}
    assert members(proto, "W1_q", 1) == {("W1_q", 1), ("W2_q", 0)}


def test_qdq_blocked_quantization_pins():
    proto = og.qdq_blocked()
    pinned_by(proto, "W0_q", 1, "blocked", "DequantizeLinear 'W1_dq'")
    assert space_of(proto, "W2_q", 1).prunable  # the rest of the model still prunes


def test_qdq_packed_int4_weight_pins():
    proto = og.qdq_int4()
    pinned_by(proto, "W1_q", 0, "'h0'", "no tracked channels")  # mm0's output features: W0 is left whole
    assert members(proto, "W1_q", 1) == {("W1_q", 1), ("W1_scale", 0), ("W1_zp", 0), ("W2_q", 0)}


@pytest.mark.parametrize("build", [og.qdq_convnet, og.qdq_input_axis, og.qdq_blocked, og.qdq_int4])
def test_qdq_zero_oracle(tmp_path, build):
    # Zeroed int8 values with zero point 0 (and scale 0) dequantize to exactly 0; the L1 criterion
    # scores integer weights dequantized, so `prune` finds exactly the zeroed channels.
    oracle(build(), tmp_path)


def test_qdq_slices_per_channel_and_keeps_per_tensor(tmp_path):
    proto = og.qdq_convnet()
    out = tmp_path / "out.onnx"
    prune(save(proto, tmp_path / "in.onnx"), out, PruneOptions(structured=0.5, validate=False))
    after = initializers(out)
    kept1, kept2 = after["conv1_W_q"].shape[0], after["conv2_W_q"].shape[0]
    assert (kept1, kept2) == (4, 6)
    assert after["conv1_W_scale"].shape == after["conv1_W_zp"].shape == after["conv1_B_q"].shape == (kept1,)
    assert after["conv2_W_q"].shape[1] == kept1 and after["conv2_B_scale"].shape == (kept2,)
    assert after["fc1_W_q"].shape == (kept2, 5) and after["fc1_W_scale"].shape == (5,)
    assert after["conv2_W_q"].dtype == np.int8 and after["conv2_B_q"].dtype == np.int32
    for name in ("x_s", "x_z", "r1_s", "r1_z"):  # per-tensor activation parameters stay scalars
        assert after[name].shape == ()
    check_valid(out)


@pytest.fixture(scope="module")
def ort_qdq(tmp_path_factory) -> onnx.ModelProto:
    return og.ort_quantized(tmp_path_factory.mktemp("ort_qdq"))


def test_onnxruntime_quantized_model(tmp_path, ort_qdq):
    dq = {node.input[0]: node for node in ort_qdq.graph.node if node.op_type == "DequantizeLinear"}
    weight_q = next(name for name in dq if name.startswith("conv1_W"))
    space = space_of(ort_qdq, weight_q, 0)
    assert space.prunable and (dq[weight_q].input[1], 0) in {(m.tensor, m.axis) for m in space.members}
    oracle(ort_qdq, tmp_path, through_prune=False)


# ------------------------------------------------------------------------------ float types, constants, opsets


def test_float16(tmp_path):
    oracle(og.cast_float(og.residual_concat(), TensorProto.FLOAT16), tmp_path, tolerance=2e-3)


def test_bfloat16(tmp_path):
    """ONNX Runtime has no CPU bfloat16 Conv: outputs are compared on float32 copies (see compare)."""
    oracle(og.cast_float(og.residual_concat(22), TensorProto.BFLOAT16), tmp_path, tolerance=2e-2,
           through_prune=False)


def test_bfloat16_weights_are_scored(tmp_path):
    oracle(og.cast_float(og.residual_concat(22), TensorProto.BFLOAT16), tmp_path, tolerance=2e-2)


def test_constant_node_weights(tmp_path):
    """Weights in Constant nodes (paddle2onnx): lifted on load, pruned, written back as initializers."""
    proto = og.residual_concat()
    model = Model.from_proto(proto)
    plan = choose_channels(model, 0.4, 0)
    zero_channels(model, plan)
    zeroed = save_model(model, tmp_path / "zeroed.onnx")
    source = save(constants_model(model.to_proto()), tmp_path / "constants.onnx")
    assert not onnx.load(source).graph.initializer
    out = tmp_path / "out.onnx"
    report = prune(source, out, PruneOptions(structured=0.4, validate=False))
    assert {s["id"]: s["removed"] for s in report["spaces"] if s["removed"]} == {
        k: [int(i) for i in v] for k, v in plan.items()}
    check_valid(out)
    compare(zeroed, out, model, 1e-5, tmp_path)
    oracle(tiny.tiny_model(constants=True), tmp_path)


@pytest.mark.parametrize("opset", range(11, 22))
def test_opsets(tmp_path, opset):
    proto = og.opset_model(opset)
    assert proto.opset_import[0].version == opset
    onnx.checker.check_model(proto, full_check=True)
    oracle(proto, tmp_path)


# ---------------------------------------------------------------------------------------- every mode

MODES = {
    "structured": dict(structured=0.4),
    "heads": dict(heads=0.5),
    "drop-layers": dict(drop_layers=1),
    "wanda-compensate": dict(structured=0.4, criterion="wanda", compensate=True),
    "target-flops": dict(target_flops=0.7),
    "sparse-2:4": dict(sparse="2:4"),
}

GRAPHS = {
    **{name: build for name, build in og.CONTROL_FLOW.items()},
    "qdq": og.qdq_convnet,
    "qdq_input_axis": og.qdq_input_axis,
    "qdq_blocked": og.qdq_blocked,
    "qdq_int4": og.qdq_int4,
    "ort_qdq": None,  # the module fixture
    "float16": lambda: og.cast_float(og.residual_concat(), TensorProto.FLOAT16),
    "bfloat16": lambda: og.cast_float(og.residual_concat(22), TensorProto.BFLOAT16),
    "constants": lambda: constants_model(og.residual_concat()),
    **{f"opset{o}": (lambda o=o: og.opset_model(o)) for o in (11, 13, 18, 21)},
}
# Residual blocks layers.py finds (QDQ graphs have none it recognizes: their Adds read DequantizeLinear outputs).
RESIDUAL_BLOCKS = {"float16": 2, "bfloat16": 2, "constants": 2, **{f"opset{o}": 2 for o in (11, 13, 18, 21)}}
NEEDS_RUNTIME = ("drop-layers", "wanda-compensate", "target-flops")


def element_count(path: Path) -> int:
    """Weight elements of every type (stats' params count only floating-point ones), Constant nodes included."""
    return sum(int(np.prod(w.shape)) for w in Model.load(path).weights.values())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("graph", GRAPHS)
def test_every_mode(tmp_path, request, ort_qdq, graph, mode):
    proto = ort_qdq if graph == "ort_qdq" else GRAPHS[graph]()
    source, out = save(proto, tmp_path / "in.onnx"), tmp_path / "out.onnx"
    options = PruneOptions(validate=False, **MODES[mode])
    bf16 = graph == "bfloat16"
    if bf16 and mode in NEEDS_RUNTIME:
        with pytest.raises(OnnxPruneError, match="Conv"):  # no CPU bfloat16 Conv in ONNX Runtime
            prune(source, out, options)
        return
    report = prune(source, out, options)
    check_valid(out)
    assert og.subgraphs(onnx.load(out)) == og.subgraphs(proto)
    reference = as_float32(source, tmp_path / "in32.onnx") if bf16 else source
    result = as_float32(out, tmp_path / "out32.onnx") if bf16 else out
    for feed in feeds(Model.load(reference))[:2]:
        expected, got = run(reference, feed), run(result, feed)
        assert {k: v.shape for k, v in expected.items()} == {k: v.shape for k, v in got.items()}
    before, after = element_count(source), element_count(out)

    if mode in ("structured", "wanda-compensate"):
        assert report["channels_removed"] > 0 and after < before
    elif mode == "heads":  # no attention in these graphs: the mode reports it removed nothing
        assert report["channels_removed"] == 0 and after == before
    elif mode == "drop-layers":
        blocks = RESIDUAL_BLOCKS.get(graph, 0)
        assert len(report["layers"]["blocks"]) == blocks
        if blocks:
            assert len(report["layers"]["removed"]) == 1 and after < before
        else:  # nothing to drop: the report says no block was found, and the model is unchanged
            assert report["layers"]["removed"] == [] and after == before
    elif mode == "target-flops":
        if report["channels_removed"] == 0:  # says why: FLOPs it cannot count past a Loop
            assert report["before"]["flops_unknown_nodes"] and report["budget"]["achieved"] == 1.0, report["budget"]
        else:
            assert report["after"]["flops"] < report["before"]["flops"]
    else:
        sparsity = report["sparsity"]
        assert sparsity["weights"], "no candidate weight listed"
        if sparsity["sparse_weights"] == 0:
            assert any("no weight is eligible" in note for note in report["notes"])
        assert all(w["pattern_ok"] for w in sparsity["weights"] if w["eligible"])

    if graph in og.CONTROL_FLOW and mode in ("structured", "wanda-compensate", "target-flops"):
        control = {"if_outer": "If", "if_feeds": "If", "loop": "Loop", "scan": "Scan"}[graph]
        reasons = [reason for space in report["spaces"] for reason in space["pinned_by"]]
        assert any(f"{control} '" in reason for reason in reasons), reasons
    if graph.startswith("qdq") or graph == "ort_qdq":
        _check_qdq_parameters(out)


def _check_qdq_parameters(path: Path) -> None:
    """Every DequantizeLinear still matches its weight: a per-axis scale as long as the axis."""
    proto = onnx.load(path)
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in values and node.input[1] in values:
            q, scale = values[node.input[0]], values[node.input[1]]
            blocked = any(a.name == "block_size" and a.i for a in node.attribute)
            if scale.ndim == 1 and not blocked:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                assert scale.shape[0] == q.shape[axis], f"{node.name}: scale {scale.shape} vs weight {q.shape}"
