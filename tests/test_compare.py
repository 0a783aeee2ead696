import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.check import runtime
from onnxprune.check.compare import OutputAccumulator, compare_batches, compare_outputs, summarize
from onnxprune.errors import InvalidOptionError, ValidationError
from onnxprune.measure.latency import LatencyStats, measure_interleaved, speedup


def test_identical_outputs() -> None:
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    (diff,) = compare_outputs({"y": x}, {"y": x.copy()})
    assert diff.ok and diff.reason is None
    assert diff.max_abs == diff.mean_abs == diff.max_rel == diff.rel_to_max == 0.0
    assert diff.cosine == pytest.approx(1.0)
    assert diff.top1_agreement == 1.0


def test_perturbed_outputs() -> None:
    ref = np.array([[1.0, -4.0, 0.0, 2.0]], np.float32)
    got = np.array([[1.5, -4.0, 0.1, 2.0]], np.float32)
    (diff,) = compare_outputs({"y": ref}, {"y": got})
    assert diff.ok
    assert diff.max_abs == pytest.approx(0.5)
    assert diff.mean_abs == pytest.approx(0.6 / 4)
    assert diff.rel_to_max == pytest.approx(0.5 / 4.0)
    # Polygraphy: a zero in the reference is replaced by float64 epsilon.
    assert diff.max_rel == pytest.approx(np.float32(0.1) / np.finfo(np.float64).eps)
    expected_cos = float(ref.ravel() @ got.ravel()) / (
        np.linalg.norm(ref) * np.linalg.norm(got)
    )
    assert diff.cosine == pytest.approx(expected_cos)
    assert diff.top1_agreement == 1.0


def test_top1_disagreement_and_non_classifier() -> None:
    ref = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    got = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    (diff,) = compare_outputs({"logits": ref}, {"logits": got})
    assert diff.top1_agreement == 0.5
    (diff,) = compare_outputs({"y": ref[:, :1]}, {"y": got[:, :1]})
    assert diff.top1_agreement is None


def test_embedding_outputs_are_not_judged_by_argmax() -> None:
    # Two sentence embeddings whose largest feature swaps while the vectors stay close: a top-1
    # figure would call this a collapse; an embedding is judged by its rows' cosine instead.
    ref = np.array([[1.0, 0.99, 0.1], [0.99, 1.0, 0.2]], np.float32)
    got = np.array([[0.99, 1.0, 0.1], [1.0, 0.99, 0.2]], np.float32)
    for name in ("sentence_embedding", "pooler_output", "last_hidden_state_mean", "image_features"):
        (diff,) = compare_outputs({name: ref}, {name: got})
        assert diff.top1_agreement is None, name
        assert diff.cosine > 0.99
    (diff,) = compare_outputs({"scores": ref}, {"scores": got})
    assert diff.top1_agreement == 0.0  # not named as an embedding: still a classifier
    declared = OutputAccumulator("sentence_embedding", classifier=True)
    declared.add(ref, got)
    assert declared.result().top1_agreement == 0.0  # declared a classifier: the name does not overrule


def test_all_zero_outputs() -> None:
    zeros = np.zeros((3, 3), np.float32)
    (diff,) = compare_outputs({"y": zeros}, {"y": zeros})
    assert diff.cosine == 1.0 and diff.rel_to_max == 0.0
    (diff,) = compare_outputs({"y": zeros}, {"y": zeros + 1})
    assert diff.cosine == 0.0 and diff.rel_to_max == float("inf")


def test_nan_in_same_place_is_agreement() -> None:
    ref = np.array([np.nan, 1.0, np.inf], np.float32)
    (diff,) = compare_outputs({"y": ref}, {"y": ref.copy()})
    assert diff.ok
    assert (diff.ref_nan, diff.ref_inf, diff.got_nan, diff.got_inf) == (1, 1, 1, 1)
    assert diff.max_abs == 0.0


def test_nan_only_in_pruned_output() -> None:
    ref = np.array([1.0, 2.0, 3.0], np.float32)
    got = np.array([1.0, np.nan, 3.5], np.float32)
    (diff,) = compare_outputs({"y": ref}, {"y": got})
    assert not diff.ok
    assert "NaN/Inf" in diff.reason
    assert (diff.ref_nan, diff.got_nan) == (0, 1)
    # Figures cover the elements finite in both.
    assert diff.max_abs == pytest.approx(0.5)


def test_shape_mismatch_missing_and_extra_outputs() -> None:
    ref = {"a": np.zeros((2, 3)), "b": np.zeros(1)}
    got = {"a": np.zeros((2, 4)), "c": np.zeros(1)}
    diffs = {d.name: d for d in compare_outputs(ref, got)}
    assert not diffs["a"].ok and "2x4" in diffs["a"].reason
    assert diffs["a"].max_abs is None
    assert not diffs["b"].ok and "missing" in diffs["b"].reason
    assert not diffs["c"].ok and "not an output of the reference" in diffs["c"].reason
    json.dumps([d.to_dict() for d in diffs.values()])


def test_dtype_mismatch_is_flagged_but_measured() -> None:
    ref = np.ones(4, np.float32)
    (diff,) = compare_outputs({"y": ref}, {"y": ref.astype(np.float16)})
    assert not diff.ok and "dtype" in diff.reason
    assert diff.max_abs == 0.0


def test_summarize() -> None:
    ref = {"a": np.array([1.0, 2.0]), "b": np.array([4.0, 0.0]), "c": np.zeros(2)}
    got = {"a": np.array([1.0, 2.2]), "b": np.array([4.0, 0.0]), "c": np.zeros(3)}
    summary = summarize(compare_outputs(ref, got))
    assert summary["outputs"] == 3
    assert summary["ok"] is False
    assert [f["name"] for f in summary["failed"]] == ["c"]
    assert summary["worst_output"] == "a"
    assert summary["worst_rel_to_max"] == pytest.approx(0.1)
    assert summary["min_cosine"] < 1.0
    assert summary["min_top1_agreement"] is None


def _save_scale_model(path: Path, scale: float) -> None:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        initializer=[numpy_helper.from_array(np.float32(scale), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_runtime_compare_and_latency_end_to_end(tmp_path: Path) -> None:
    _save_scale_model(tmp_path / "a.onnx", 1.0)
    _save_scale_model(tmp_path / "b.onnx", 1.01)
    sessions = {
        "original": runtime.create_session(tmp_path / "a.onnx", threads=1),
        "pruned": runtime.create_session(tmp_path / "b.onnx"),
    }
    feed = {"x": np.ones((2, 4), np.float32)}
    ref = runtime.run(sessions["original"], feed)
    got = runtime.run(sessions["pruned"], feed)
    assert list(ref) == ["y"]
    (diff,) = compare_outputs(ref, got)
    assert diff.rel_to_max == pytest.approx(0.01, rel=1e-4)

    stats = measure_interleaved(
        sessions, dict.fromkeys(sessions, feed), warmup=1, runs=5
    )
    assert set(stats) == {"original", "pruned"}
    for s in stats.values():
        assert s.runs == 5 and 0 < s.min_ms <= s.median_ms <= s.p90_ms
    assert speedup(stats["original"], stats["pruned"]) > 0


def test_runtime_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValidationError, match=r"bad\.onnx") as info:
        runtime.create_session(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidOptionError, match="NoSuchExecutionProvider"):
        runtime.create_session(bad, providers=["NoSuchExecutionProvider"])
    with pytest.raises(InvalidOptionError, match="--threads"):
        runtime.create_session(bad, threads=0)

    _save_scale_model(tmp_path / "a.onnx", 1.0)
    session = runtime.create_session(tmp_path / "a.onnx")
    with pytest.raises(ValidationError, match="'orig'") as info:
        runtime.run(session, {"x": np.ones((2, 5), np.float32)}, label="orig")
    assert "\n" not in str(info.value)


def test_speedup_and_latency_options() -> None:
    slow = LatencyStats(median_ms=4.0, p90_ms=5.0, mean_ms=4.2, min_ms=3.9, runs=10)
    fast = LatencyStats(median_ms=2.0, p90_ms=2.5, mean_ms=2.1, min_ms=1.9, runs=10)
    assert speedup(slow, fast) == 2.0
    assert fast.to_dict()["median_ms"] == 2.0
    with pytest.raises(InvalidOptionError, match="--runs"):
        measure_interleaved({}, {}, runs=0)


def test_top1_only_for_floating_point_class_scores() -> None:
    # Integer [batch, k] outputs (indices, masks) are not class scores: no top-1 figure.
    ids = np.array([[0, 3], [2, 1]], np.int64)
    (diff,) = compare_outputs({"ids": ids}, {"ids": ids[:, ::-1].copy()})
    assert diff.top1_agreement is None and diff.max_abs == 3.0


def test_pooled_outputs_are_found_in_the_graph_whatever_their_name() -> None:
    from onnxprune.check.fidelity import pooled_outputs

    # paraphrase-MiniLM's embedding '461' is Concat(Div(ReduceSum(Mul(hidden, mask)), count)); logits come
    # from a MatMul. Only the first is an embedding.
    nodes = [
        helper.make_node("ReduceSum", ["h", "axes"], ["s"], keepdims=0),
        helper.make_node("Div", ["s", "count"], ["mean"]),
        helper.make_node("Concat", ["mean"], ["461"], axis=1),
        helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        helper.make_node("Identity", ["logits"], ["462"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 5, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("461", "462")],
        [numpy_helper.from_array(np.array([1], np.int64), "axes"),
         numpy_helper.from_array(np.array(5.0, np.float32), "count"),
         numpy_helper.from_array(np.ones((4, 3), np.float32), "w")])
    assert pooled_outputs(graph) == {"461"}
    ref = np.array([[1.0, 0.99, 0.1], [0.99, 1.0, 0.2]], np.float32)
    got = np.array([[0.99, 1.0, 0.1], [1.0, 0.99, 0.2]], np.float32)
    diffs = {d.name: d for d in compare_batches([({"461": ref, "462": ref}, {"461": got, "462": got})], {"461"})}
    assert diffs["461"].top1_agreement is None and diffs["462"].top1_agreement == 0.0
