"""--drop-layers through residual adds fused into Skip(Simplified)LayerNormalization (ORT-optimized, GenAI)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxprune.passes.layers import find_blocks

from onnxprune.api import PruneOptions, prune
from onnxprune.io.model import Model

HIDDEN = 8


def _fused_model(simplified: bool) -> onnx.ModelProto:
    """x -> norm -> MatMul(w0) -> Skip*Norm(x, f0) -> MatMul(w1) -> Skip*Norm(sum0, f1) -> y: two blocks."""
    rng = np.random.default_rng(0)
    op = "SkipSimplifiedLayerNormalization" if simplified else "SkipLayerNormalization"
    plain = "SimplifiedLayerNormalization" if simplified else "LayerNormalization"
    norm_params = ["g"] if simplified else ["g", "b"]
    nodes = [helper.make_node(plain, ["x", *norm_params], ["n0"], axis=-1, epsilon=1e-5),
             helper.make_node("MatMul", ["n0", "w0"], ["f0"]),
             helper.make_node(op, ["x", "f0", *norm_params], ["n1", "", "", "sum0"], domain="com.microsoft",
                              epsilon=1e-5),
             helper.make_node("MatMul", ["n1", "w1"], ["f1"]),
             helper.make_node(op, ["f1", "sum0", *norm_params], ["y"], domain="com.microsoft", epsilon=1e-5)]
    weights = [numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32), name)
               for name in ("w0", "w1")]
    weights.append(numpy_helper.from_array((1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32), "g"))
    weights.append(numpy_helper.from_array((0.1 * rng.standard_normal(HIDDEN)).astype(np.float32), "b"))
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, HIDDEN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, HIDDEN])], weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize("simplified", [True, False])
def test_a_fused_block_is_removed_exactly_as_its_zeroed_branch(tmp_path, simplified):
    proto = _fused_model(simplified)
    blocks = find_blocks(Model.from_proto(proto))
    assert [(b.skip, b.branch, b.fused) for b in blocks] == [("x", "f0", True), ("sum0", "f1", True)]

    source, calib = tmp_path / "in.onnx", tmp_path / "calib.npz"
    onnx.save(proto, source)
    x = np.random.default_rng(1).standard_normal((4, 1, 5, HIDDEN)).astype(np.float32)
    np.savez(calib, x=x.reshape(4, 5, HIDDEN))
    report = prune(source, tmp_path / "out.onnx", PruneOptions(drop_layers=1, calib=str(calib)))
    [removed] = report["layers"]["removed"]
    weight = {"n1": "w0", "y": "w1"}[removed]

    out = onnx.load(tmp_path / "out.onnx")
    if not simplified:  # SimplifiedLayerNormalization is ORT's, in the default domain: the input fails the checker
        onnx.checker.check_model(out, full_check=True)
    assert weight not in {t.name for t in out.graph.initializer}
    zeroed = onnx.load(source)
    for tensor in zeroed.graph.initializer:
        if tensor.name == weight:
            tensor.CopyFrom(numpy_helper.from_array(np.zeros((HIDDEN, HIDDEN), np.float32), weight))
    feed = {"x": x[0]}
    want = ort.InferenceSession(zeroed.SerializeToString()).run(None, feed)[0]
    got = ort.InferenceSession(out.SerializeToString()).run(None, feed)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_fused_norm_that_adds_a_bias_is_not_a_block():
    proto = _fused_model(True)
    proto.graph.node[2].input.append("g")  # SkipSimplifiedLayerNormalization's 4th input: a bias in the sum
    assert [b.branch for b in find_blocks(Model.from_proto(proto))] == ["f1"]
