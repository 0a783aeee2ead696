"""Channel alignment for the target runtime (--device, --round-to) that keeps the budget asked for, and the
per-layer latency model behind --target-latency."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import check_valid

from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.measure.alignment import alignment_for
from onnxprune.measure.latency_model import layer_latencies
from onnxprune.plan import align_removals


def _spaces(rng, sizes):
    return {index: rng.random(size) for index, size in enumerate(sizes)}


@pytest.mark.parametrize("seed", range(5))
def test_aligned_counts_are_multiples_and_keep_the_cost_removed(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.choice([24, 32, 48, 64, 96, 128, 256], size=20)
    scores = _spaces(rng, sizes)
    costs = {space: float(rng.uniform(1, 100)) for space in scores}
    wanted = {space: int(0.4 * size) for space, size in enumerate(sizes)}
    counts = align_removals(wanted, scores, dict.fromkeys(scores, 8), costs)
    for space, count in counts.items():
        kept = sizes[space] - count
        assert kept % 8 == 0 and kept >= 8
    goal = sum(wanted[s] * costs[s] for s in scores)
    got = sum(counts[s] * costs[s] for s in scores)
    assert abs(got - goal) / goal < 0.05
    # Rounding every space's kept count up, as --round-to did, misses the goal by far more.
    up = sum((sizes[s] - int(np.ceil((sizes[s] - wanted[s]) / 8) * 8)) * costs[s] for s in scores)
    assert abs(up - goal) > abs(got - goal)


def test_alignment_moves_the_cheapest_channels():
    """Two equal spaces; the one whose next channels score lower gives them up."""
    low = np.concatenate([np.full(8, 0.01), np.full(8, 0.02), np.ones(16)])
    high = np.concatenate([np.full(8, 0.01), np.full(8, 5.0), np.ones(16)])
    counts = align_removals({0: 12, 1: 12}, {0: low, 1: high}, {0: 8, 1: 8}, {0: 1.0, 1: 1.0})
    assert counts == {0: 16, 1: 8}


def test_unaligned_spaces_and_small_spaces_are_left_exact():
    scores = {0: np.arange(10.0), 1: np.arange(6.0)}
    assert align_removals({0: 4, 1: 2}, scores, {}, {0: 1.0, 1: 1.0}) == {0: 4, 1: 2}
    # A space smaller than its multiple keeps everything.
    assert align_removals({1: 2}, {1: np.arange(6.0)}, {1: 8}, {1: 1.0}) == {1: 0}


def test_device_alignment_on_a_net(zoo, tmp_path):
    """--device cpu (the default) aligns the spaces big enough for it and reports it; --round-to 1 does not."""
    out = tmp_path / "out.onnx"
    report = prune(zoo("resnet"), out, PruneOptions(structured=0.4, validate=False))
    check_valid(out)
    alignment = report["budget"]["alignment"]
    cpu = alignment_for("cpu")
    assert alignment["device"] == "cpu" and alignment["spaces"]
    sizes = {space["id"]: space["size"] for space in report["spaces"]}
    removed = {space["id"]: len(space["removed"] or ()) for space in report["spaces"]}
    for space, value in alignment["spaces"].items():
        # Conv spaces take the NCHWc block; the space feeding the classifier's Gemm takes the GEMM strip.
        assert value in (cpu.conv, cpu.gemm) and (sizes[int(space)] - removed[int(space)]) % value == 0
    exact = prune(zoo("resnet"), tmp_path / "exact.onnx", PruneOptions(structured=0.4, validate=False, round_to=1))
    assert "alignment" not in exact["budget"]
    graph = build_channel_graph(Model.load(zoo("resnet")))
    assert sum(removed.values()) > 0 and len(graph.prunable) > 0
    # The FLOPs removed stay about what the exact plan removes.
    kept, kept_exact = (r["after"]["flops"] / r["before"]["flops"] for r in (report, exact))
    assert abs(kept - kept_exact) < 0.05


def test_layer_latencies_are_measured_once_and_cached(zoo, tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    model = Model.load(zoo("mlp"))
    first = layer_latencies(model, {"input": (4, 64)}, runs=3)
    assert first and all(seconds > 0 for seconds in first.values())
    assert (tmp_path / "latency" / "layers.json").exists()
    import onnxruntime

    def no_sessions(*args, **kwargs):
        raise AssertionError("a cached layer was timed again")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_sessions)
    assert layer_latencies(model, {"input": (4, 64)}, runs=3) == first


def test_activation_ops_are_timed_with_their_real_small_inputs(tmp_path, monkeypatch):
    """`activations` also times the ops whose time follows their channels; a Resize keeps its real scales
    (random ones are negative and ORT refuses the node), a big weight is random of its shape."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((64, 16, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Resize", ["r", "", "scales"], ["y"], mode="nearest")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight, scales])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    model = Model.load(path)
    assert set(layer_latencies(model, {"x": (1, 16, 32, 32)}, runs=3)) == {"c"}
    timed = layer_latencies(model, {"x": (1, 16, 32, 32)}, runs=3, activations=True)
    assert set(timed) == {"c", "r", "y"} and all(seconds > 0 for seconds in timed.values())
