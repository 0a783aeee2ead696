"""Calibration data, activation criteria and compensation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from graphs import GraphBuilder
from oracle import check_valid, run

from onnxprune import InvalidOptionError, Model, PruneOptions, prune
from onnxprune.calib.data import load_calibration
from onnxprune.check.inputs import model_input_specs


def _linear_pair_model(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """x[N,8] -> MatMul W1 [8,6] -> MatMul W2 [6,5]: hidden channels 4 and 5 are linear
    combinations of channels 0..3 with small W1 columns, so their group L1 norm is the lowest and
    they are the ones removed, yet their contribution through W2 is large."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 6)).astype(np.float32)
    mix = rng.standard_normal((4, 2)).astype(np.float32) * 0.1
    w1[:, 4:] = w1[:, :4] @ mix
    w2 = rng.standard_normal((6, 5)).astype(np.float32)
    g = GraphBuilder()
    x = g.input(["N", 8])
    h = g.op("MatMul", [x, g.const(w1, "w1")], name="fc1")
    g.output(g.op("MatMul", [h, g.const(w2, "w2")], name="fc2"))
    return g.model(), rng.standard_normal((256, 8)).astype(np.float32)


def test_compensation_restores_outputs_when_removed_channels_are_combinations(tmp_path):
    proto, data = _linear_pair_model()
    source = tmp_path / "in.onnx"
    onnx.save(proto, source)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=data)
    feed = {"x": np.random.default_rng(9).standard_normal((16, 8)).astype(np.float32)}
    expected = run(source, feed)
    errors = {}
    for compensate in (True, False):
        out = tmp_path / f"out_{compensate}.onnx"
        report = prune(source, out, PruneOptions(structured=0.34, calib=str(calib), compensate=compensate,
                                                 criterion="l1", validate=False))
        removed = next(space["removed"] for space in report["spaces"] if space["removed"])
        assert removed == [4, 5]
        check_valid(out)
        got = run(out, feed)
        errors[compensate] = max(float(np.abs(got[k] - v).max() / np.abs(v).max()) for k, v in expected.items())
    assert errors[True] < 1e-4, errors
    assert errors[False] > 1e-2, errors


def test_bias_compensation_moves_the_removed_mean_into_a_new_bias(tmp_path):
    """A removed channel that is constant (ReLU of a large positive bias) is pure bias: compensation
    adds a bias to the consumer and the outputs stay exact; the bias slot survives the cleanup."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((4, 3)).astype(np.float32)
    w1[:, 2] = 0.0
    b1 = np.array([0.0, 0.0, 0.5], np.float32)
    w2 = rng.standard_normal((3, 2)).astype(np.float32)
    w2[2] = 0.01
    g = GraphBuilder()
    x = g.input(["N", 4])
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.const(w1, "w1")], name="fc1"), g.const(b1, "b1")])])
    g.output(g.op("MatMul", [h, g.const(w2, "w2")], name="fc2"))
    source = tmp_path / "in.onnx"
    onnx.save(g.model(), source)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=rng.standard_normal((64, 4)).astype(np.float32))
    out = tmp_path / "out.onnx"
    prune(source, out, PruneOptions(structured=0.34, calib=str(calib), criterion="l1", validate=False))
    feed = {"x": rng.standard_normal((8, 4)).astype(np.float32)}
    expected, got = run(source, feed), run(out, feed)
    assert all(np.allclose(got[k], v, atol=1e-4) for k, v in expected.items())
    assert any(n.op_type == "Add" and "fc2" in n.name for n in onnx.load(str(out)).graph.node)
    check_valid(out)


@pytest.mark.parametrize("criterion", ["wanda", "fluctuation", "obs", "contribution"])
def test_activation_criteria_run_and_are_recorded(zoo, tmp_path, criterion):
    import models

    source = zoo("mlp3d")
    calib = tmp_path / "calib.npz"
    np.savez(calib, **models.example_inputs("mlp3d", batch=32))
    report = prune(source, tmp_path / "out.onnx", PruneOptions(structured=0.4, calib=str(calib),
                                                               criterion=criterion, validate=False))
    assert report["criterion"] == criterion
    assert report["calibration"]["samples"] == 32
    assert report["compensation"]["layers_refit"] >= 2
    check_valid(tmp_path / "out.onnx")


def test_calibration_with_compensation_beats_magnitude_on_a_cnn(zoo, tmp_path):
    import models

    source = zoo("resnet")
    calib = tmp_path / "calib.npz"
    np.savez(calib, **models.example_inputs("resnet", batch=64))
    feed = models.example_inputs("resnet", batch=16, seed=5)
    expected = run(source, feed)["logits"]

    def cosine(options):
        out = tmp_path / "out.onnx"
        prune(source, out, options)
        got = run(out, feed)["logits"]
        return float(np.mean(np.sum(got * expected, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected,
                                                                                                      axis=1)))

    magnitude = cosine(PruneOptions(structured=0.3, validate=False))
    calibrated = cosine(PruneOptions(structured=0.3, calib=str(calib), validate=False))
    assert calibrated > magnitude, (calibrated, magnitude)


def test_loader_script_and_errors(tmp_path):
    proto, data = _linear_pair_model()
    model = Model.from_proto(proto)
    specs = model_input_specs(model.proto)
    script = tmp_path / "loader.py"
    script.write_text("import numpy as np\n\ndef load_data():\n    for i in range(3):\n"
                      "        yield {'x': np.full((2, 8), i, np.float32)}\n")
    data = load_calibration(script, specs, {"x": (1, 8)})
    assert len(data) == 3 and data.samples == 6
    bad = tmp_path / "bad.npz"
    np.savez(bad, y=np.zeros((2, 8), np.float32))
    with pytest.raises(InvalidOptionError, match="no array for input"):
        load_calibration(bad, specs, {"x": (1, 8)})
    with pytest.raises(InvalidOptionError, match="does not exist"):
        load_calibration(tmp_path / "missing.npz", specs, {"x": (1, 8)})
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InvalidOptionError, match=r"\.npz file or a \.py script"):
        load_calibration(tmp_path / "x.txt", specs, {"x": (1, 8)})
    random = load_calibration(None, specs, {"x": (2, 8)}, random_batches=3)
    assert random.source == "random" and len(random) == 3


def test_target_flops_and_params_are_reached_by_sensitivity_allocation(zoo, tmp_path):
    import models

    source = zoo("yolo")
    calib = tmp_path / "calib.npz"
    np.savez(calib, **models.example_inputs("yolo", batch=8))
    for metric in ("flops", "params"):
        out = tmp_path / f"{metric}.onnx"
        options = PruneOptions(calib=str(calib), validate=False, **{f"target_{metric}": 0.6})
        report = prune(source, out, options)
        kept = report["after"][metric] / report["before"][metric]
        assert abs(kept - 0.6) < 0.05, (metric, kept, report["target_search"])
        assert report["sensitivity"] and all(c["ratios"] for c in report["sensitivity"])
        ratios = set(report["budget"]["ratios"].values())
        assert len(ratios) > 1, "allocation should differ between spaces"
        check_valid(out)


def test_sensitivity_command_writes_curves_and_plot(zoo, tmp_path):
    import json
    import subprocess
    import sys

    import models

    calib = tmp_path / "calib.npz"
    np.savez(calib, **models.example_inputs("resnet", batch=8))
    result = subprocess.run([sys.executable, "-m", "onnxprune", "sensitivity", str(zoo("resnet")), "--calib",
                             str(calib), "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    curves = json.loads((tmp_path / "s.json").read_text())["curves"]
    assert curves and all(len(c["errors"]) == len(c["ratios"]) > 0 for c in curves)
    # Removing more of a space never helps much: errors grow with the ratio (on average).
    assert np.mean([c["errors"][-1] >= c["errors"][0] for c in curves]) > 0.8
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_target_latency_search_converges_on_a_timer_that_follows_flops(zoo, tmp_path, monkeypatch):
    """The search logic, on a deterministic timer: a model's 'latency' is its FLOPs (wall-clock
    timings belong in bench/, and on a shared 2-core machine they are too noisy to assert on)."""
    from onnxprune.passes import latency_target

    from onnxprune.check import runtime
    from onnxprune.check.stats import model_stats

    class Timed:
        def __init__(self, path, *args, **kwargs):
            self.path = path

    def flops_as_latency(original, candidate, feed, runs):
        flops = [float(model_stats(Model.load(s.path), {"input": (8, 64)})["flops"]) for s in (original, candidate)]
        return flops[1] / flops[0]

    monkeypatch.setattr(runtime, "create_session", Timed)
    monkeypatch.setattr(latency_target, "timed_ratio", flops_as_latency)
    out = tmp_path / "out.onnx"
    report = prune(zoo("mlp"), out, PruneOptions(target_latency=0.7, shapes={"input": (8, 64)}, validate=False))
    trials = report["latency_search"]["trials"]
    assert 1 <= len(trials) <= 8  # sensitivity once, then a few timed corrections: no five full prunes
    chosen = report["after"]["flops"] / report["before"]["flops"]
    best = max(t["latency_ratio"] for t in trials if t["latency_ratio"] <= 0.7)
    assert chosen == pytest.approx(best, abs=1e-3) and 0.6 < chosen <= 0.7  # the largest model that meets it
    check_valid(out)


def test_target_latency_with_real_ort_timings_writes_a_valid_model(zoo, tmp_path):
    """The real timer, with a goal any 5% FLOPs model meets, so noise cannot fail it."""
    out = tmp_path / "out.onnx"
    report = prune(zoo("mlp"), out, PruneOptions(target_latency=0.95, shapes={"input": (4096, 64)},
                                                 validate=False, latency_runs=5))
    assert report["latency_search"]["trials"] and report["latency_model"]["layers_timed"] == 3
    assert report["latency_model"]["activation_ops_timed"] > 0  # the Relus: their time follows the channels
    check_valid(out)
