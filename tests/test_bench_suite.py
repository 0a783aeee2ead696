"""bench.suite: the quick mode end to end on the MLP, and its budget matching.

Needs the `bench` extra (onnxsim, torch_pruning); skipped without it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxsim")
pytest.importorskip("torch_pruning")

from bench import _suite_rows, suite


def test_rows_quick_and_sparse_switch():
    full = {row["method"] for row in _suite_rows.rows_for("minilm", 0.3, quick=False, sparse=False)}
    assert {"onnxprune heads", "onnxsim heads", "onnxprune drop 1", "onnxsim blocks", "tp taylor"} <= full
    assert not any("2:4" in method for method in full)
    sparse = [row for row in _suite_rows.rows_for("resnet", 0.3, quick=False, sparse=True) if row["group"] == "2:4"]
    assert {row["tool"] for row in sparse} == {"onnxprune-cli", "onnxsim"}
    quick = [row["method"] for row in _suite_rows.rows_for("mlp", 0.3, quick=True, sparse=True)]
    assert quick == ["onnxprune l1", "onnxprune wanda+comp", "tp l1", "onnxsim l1"]


def test_quick_suite_on_mlp(tmp_path):
    suite.main(["--quick", "--models", "mlp", "--methods", "onnxprune l1,tp l1,onnxsim l1", "--latency-runs", "2",
                "--eval-samples", "4", "--calib-samples", "8", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "suite.json").read_text())
    rows = {row["method"]: row for row in results["mlp"]["rows"]}
    assert list(rows) == ["onnxprune l1", "tp l1", "onnxsim l1"]
    dense = results["mlp"]["dense"]
    for row in rows.values():
        assert row["run"]["ok"], row["run"]
        assert row["valid"] and row["checker"] == "ok" and row["ort"] == "ok"
        assert row["run"]["tool_s"] > 0 and row["run"]["peak_rss_mb"] > row["run"]["rss_before_mb"] > 0
        assert 0 < row["flops"] < dense["flops"]
        assert -1 <= row["fidelity"]["mean_cosine"] <= 1
        assert row["latency"]["median_ms"] > 0
        assert row["speedup_per_flops_reduction"] == pytest.approx(row["latency"]["speedup"] / row["flops_reduction"])
    # Torch-Pruning removes onnxprune's channels group by group: the same counts exactly
    assert rows["tp l1"]["params"] == rows["onnxprune l1"]["params"]
    assert rows["tp l1"]["flops"] == rows["onnxprune l1"]["flops"]
    assert rows["tp l1"]["run"]["export_max_abs_diff"] < 1e-4
    # onnxsim's sparsity was searched towards onnxprune l1's FLOPs, and the call is recorded
    search = rows["onnxsim l1"]["search"]
    assert search["target_kept_flops"] == pytest.approx(rows["onnxprune l1"]["flops"] / dense["flops"])
    assert abs(search["kept_flops"] - search["target_kept_flops"]) <= min(abs(k - search["target_kept_flops"])
                                                                         for _, k in search["probes"]) + 1e-12
    assert rows["onnxsim l1"]["call"].startswith("onnxsim.apply_structured_pruning(model, importance_norm='l1'")
    summary = (tmp_path / "suite.md").read_text()
    assert "| channels | onnxsim l1 |" in summary and "**mlp:" in summary


def test_failed_tool_is_one_line_not_a_crash(tmp_path):
    import models

    dense = models.build("mlp", "torchscript", tmp_path / "mlp.onnx")
    job = {"tool": "onnxsim", "source": str(dense), "target": str(tmp_path / "out.onnx"),
           "function": "apply_structured_pruning", "kwargs": {"sparsity": 1.5}}
    result = _suite_rows.run_child(job, tmp_path, "bad")
    assert not result["ok"]
    assert result["error"].startswith("ValueError: sparsity must be in [0, 1)")
    assert "\n" not in result["error"]
