"""Block-by-block calibration through fused residual norms (issue 17): ORT-optimized and GenAI decoders
carry the residual stream and its normalized copy out of one SkipSimplifiedLayerNormalization, so no
point of their graph has a single live state tensor. A cut after that node (both tensors, one producer)
keeps calibration per block; without it the model was 5 stages and every SparseGPT or compensation wave
reran most of it (the genai form's FFN 20% ran over 15 minutes, against ~2 for the plain export).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import Model
from onnxprune.calib.capture import capture
from onnxprune.calib.stages import StagedRunner, plan_stages

D, LAYERS = 16, 4


def _fused_residual_stack() -> onnx.ModelProto:
    """x -> MatMul -> LAYERS x (MatMul -> SkipSimplifiedLayerNormalization(block out, residual)) -> MatMul."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(np.ones(D, np.float32), "gamma"),
               numpy_helper.from_array(rng.normal(0, 0.3, (D, D)).astype(np.float32), "w_in")]
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["h"])]  # the residual stream starts as a state
    normed, residual = "h", "h"
    for layer in range(LAYERS):
        weights.append(numpy_helper.from_array(rng.normal(0, 0.3, (D, D)).astype(np.float32), f"w{layer}"))
        nodes.append(helper.make_node("MatMul", [normed, f"w{layer}"], [f"block{layer}"]))
        nodes.append(helper.make_node("SkipSimplifiedLayerNormalization", [f"block{layer}", residual, "gamma"],
                                      [f"normed{layer}", "", "", f"sum{layer}"], domain="com.microsoft",
                                      epsilon=1e-5))
        normed, residual = f"normed{layer}", f"sum{layer}"
    weights.append(numpy_helper.from_array(rng.normal(0, 0.3, (D, 8)).astype(np.float32), "head"))
    nodes.append(helper.make_node("MatMul", [normed, "head"], ["y"]))
    graph = helper.make_graph(nodes, "fused_residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                       ["batch", D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _assert_staged_capture_is_exact(model: Model, op_types: tuple[str, ...]) -> None:
    """The staged runner's values of every `op_types` output equal the whole model's, bit for bit."""
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=(3, D)).astype(np.float32)} for _ in range(2)]
    names = [node.output[0] for node in model.graph.node if node.op_type in op_types]
    got = {(name, index): value for index, values in StagedRunner(model, feeds).capture(names)
           for name, value in values.items()}
    reference = list(capture(model, names, feeds))
    assert len(got) == len(names) * len(feeds)
    for (name, index), value in got.items():
        np.testing.assert_array_equal(value, reference[index][name])


def test_fused_residual_norm_is_a_cut_and_staged_capture_is_exact():
    model = Model.from_proto(_fused_residual_stack())
    stages = plan_stages(model)
    ends = [stage.nodes[-1] for stage in stages]
    fused = [node for node in model.graph.node if node.op_type == "SkipSimplifiedLayerNormalization"]
    assert all(any(node is end for end in ends) for node in fused), [[n.op_type for n in s.nodes] for s in stages]
    assert len(stages) == LAYERS + 2  # the input projection, one stage per layer, the head
    for stage in stages[1:-2]:  # the last layer's sum is read by nothing after it
        assert len(stage.crosses) == 2, stage.crosses  # the residual sum and its normalized copy
    _assert_staged_capture_is_exact(model, ("MatMul",))


def test_a_spilled_weight_is_not_a_change(monkeypatch):
    """The Model moves its oldest changed weights to a spill file beyond a memory budget: a new array
    object with the same values. The runner must not rerun the stages before the one that changed."""
    from onnxprune.calib import stages as stages_module
    from onnxprune.io import spill

    monkeypatch.setattr(spill, "MIN_SPILL_BYTES", 0)
    model = Model.from_proto(_fused_residual_stack())
    model.held.budget = 2 * D * D * 4  # two changed weights held: the third change spills the first
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.normal(size=(3, D)).astype(np.float32)}]
    built = []
    real_session = stages_module._session
    monkeypatch.setattr(stages_module, "_session", lambda proto: built.append(proto.graph.name) or real_session(proto))
    runner = StagedRunner(model, feeds)
    matmuls = [node for node in model.graph.node if node.op_type == "MatMul"]
    for layer, node in enumerate(matmuls[1:-1]):  # change each layer's weight, then capture the next input
        model.set_weight(node.input[1], np.asarray(model.weight(node.input[1])) * 0.5)
        built.clear()
        got = [values[matmuls[layer + 2].input[0]] for _, values in runner.capture([matmuls[layer + 2].input[0]])]
        assert (model.weights[matmuls[1].input[1]].spilled is not None) == (layer >= 2)
        assert len(built) <= 2, built  # the stage that changed and the next, never back to the start
        reference = list(capture(model, [matmuls[layer + 2].input[0]], feeds))
        np.testing.assert_array_equal(got[0], reference[0][matmuls[layer + 2].input[0]])


def _pyramid(depth: int = 30, taps: tuple[int, ...] = (3, 6, 9)) -> onnx.ModelProto:
    """A chain of `depth` MatMuls whose outputs at `taps` are added back at the end, as a detector's
    feature pyramid keeps its backbone scales live up to the neck: no single-state cut after the first tap."""
    rng = np.random.default_rng(0)
    weights, nodes, h = [], [], "x"
    for layer in range(depth):
        weights.append(numpy_helper.from_array(rng.normal(0, 0.3, (D, D)).astype(np.float32), f"w{layer}"))
        nodes.append(helper.make_node("MatMul", [h, f"w{layer}"], [f"h{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"h{layer}"], [f"a{layer}"]))
        h = f"a{layer}"
    for tap in taps:
        nodes.append(helper.make_node("Add", [h, f"a{tap}"], [f"merge{tap}"]))
        h = f"merge{tap}"
    graph = helper.make_graph(nodes, "pyramid", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", D])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", D])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_long_stages_are_cut_where_a_few_states_are_live(monkeypatch):
    """Where no single-state cut exists for more than LONG_STAGE weight layers, the plan also cuts where at
    most FEW_STATES states are live, and a capture through those stages is exactly the whole model's."""
    import onnxprune.calib.stages as staging

    model = Model.from_proto(_pyramid())
    stages = plan_stages(model)
    longest = max(sum(node.op_type == "MatMul" for node in stage.nodes) for stage in stages)
    assert longest <= staging.LONG_STAGE and max(len(stage.crosses) for stage in stages) <= staging.FEW_STATES
    monkeypatch.setattr(staging, "LONG_STAGE", 10**9)
    single = plan_stages(model)
    assert max(sum(node.op_type == "MatMul" for node in stage.nodes) for stage in single) > staging.FEW_STATES * 4
    assert len(stages) > len(single)
    monkeypatch.undo()
    _assert_staged_capture_is_exact(model, ("MatMul", "Add"))
