"""Guard rails that scale cannot fool (issue 14): per-channel fidelity, gates given alone, warnings and
exit codes.

The detector-like model below is the case the issue found on YOLOv8: a head whose output concatenates
4 box rows in the hundreds with 80 sigmoid class rows in 0..1. Pruning the class branch ruins every
class score while the whole-output cosine stays at 0.99999 (all box coordinates).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.check.compare import OutputAccumulator
from onnxprune.check.fidelity import ChannelLayout, ChannelSums, choose_layout, relative_error
from onnxprune.check.gates import Gates, evaluate
from onnxprune.check.guards import prune_warnings
from onnxprune.cli.app import run
from onnxprune.report.html import render_html

ROOT = Path(__file__).resolve().parents[1]
RANDOM = "validation ran on random inputs"


def detector(path: Path, seed: int = 0) -> Path:
    """x [1, 3, 16, 16] -> output0 [1, 84, 256]: rows 0-3 box coordinates (~300 +- 170), rows 4-83
    sigmoid class scores (mostly ~0.002, some near 1). The class branch's 12 hidden channels, by
    L1 norm: 3 nearly dead (lowest), 4 that carry every class score, 5 large but never active
    (a bias of -1e4 before the ReLU). --structured 0.25 removes the 3 nearly dead ones (class
    scores move ~1e-3); --structured 0.6 also removes the 4 that matter (class scores collapse)."""
    rng = np.random.default_rng(seed)
    a, a_bias = np.zeros((12, 3, 1, 1), np.float32), np.zeros(12, np.float32)
    b, b_bias = np.zeros((80, 12, 1, 1), np.float32), np.full(80, -6.0, np.float32)
    a[0:3], b[:, 0:3] = 0.02 * rng.standard_normal((3, 3, 1, 1)), 0.02 * rng.standard_normal((80, 3, 1, 1))
    a[3:7], b[:, 3:7] = 0.4 * rng.standard_normal((4, 3, 1, 1)), 4.0 * rng.standard_normal((80, 4, 1, 1))
    a[7:12], a_bias[7:12], b[:, 7:12] = 2.0, -1e4, 3.0
    box, box_bias = 100 * rng.standard_normal((4, 3, 1, 1)), np.full(4, 300.0)
    weights = {"a": a, "ab": a_bias, "b": b, "bb": b_bias, "box": box.astype(np.float32),
               "boxb": box_bias.astype(np.float32)}
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([1, 84, -1], np.int64), "shape"))
    nodes = [helper.make_node("Conv", ["x", "box", "boxb"], ["boxes"], name="box_conv"),
             helper.make_node("Conv", ["x", "a", "ab"], ["h"], name="cls_conv1"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Conv", ["hr", "b", "bb"], ["logits"], name="cls_conv2"),
             helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
             helper.make_node("Concat", ["boxes", "scores"], ["head"], axis=1, name="concat"),
             helper.make_node("Reshape", ["head", "shape"], ["output0"], name="flatten")]
    graph = helper.make_graph(nodes, "detector",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, 256])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def onnxprune(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`onnxprune ARGS` in-process, with the console entry point's exit-code rules."""
    monkeypatch.setattr(sys, "argv", ["onnxprune", *map(str, args)])
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("onnxprune: warning: ")]


def codes(report: dict) -> list[str]:
    return [w["code"] for w in report["warnings"]]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> dict[str, Path]:
    """The detector, its near-lossless prune (0.25) and its collapsed prune (0.6), with their reports."""
    from onnxprune import PruneOptions, prune

    folder = tmp_path_factory.mktemp("guard")
    paths = {"dense": detector(folder / "det.onnx")}
    for name, ratio in (("lossless", 0.25), ("collapsed", 0.6)):
        paths[name] = folder / f"{name}.onnx"
        report = prune(paths["dense"], paths[name], PruneOptions(structured=ratio))
        (folder / f"{name}.json").write_text(json.dumps(report, default=str))
        paths[f"{name}_report"] = folder / f"{name}.json"
    return paths


def report_of(pruned: dict[str, Path], name: str) -> dict:
    return json.loads(pruned[f"{name}_report"].read_text())


# ---------------------------------------------------------------- the detector: fooled before, caught now


def test_collapsed_class_scores_fail_min_cosine_although_the_whole_output_cosine_is_high(
        pruned, tmp_path, monkeypatch, capsys) -> None:
    code, _, err = onnxprune(monkeypatch, capsys, "validate", pruned["dense"], pruned["collapsed"],
                             "--min-cosine", "0.99", "--json", tmp_path / "v.json")
    assert code == 1, err
    failure = [line for line in err.splitlines() if line.startswith("onnxprune: validate failed: ")]
    assert len(failure) == 1 and "on axis 1, the worst; whole output 0.99999" in failure[0], err
    (output,) = json.loads((tmp_path / "v.json").read_text())["outputs"]
    # The old verdict (one cosine over the output) would pass the gate: box coordinates dominate it.
    assert output["cosine"] > 0.9999
    assert (output["channel_mode"], output["channel_axis"], output["channels"]) == ("axis", 1, 84)
    assert output["worst_channel"] >= 4 and output["worst_channel_cosine"] < 0.5  # a class row
    assert output["min_channel_snr_db"] < 0 and output["min_snr_channel"] >= 4
    assert [g["gate"] for g in output["gates"] if not g["passed"]] == ["min_cosine"]


def test_collapsed_prune_warns_and_still_writes_the_model(pruned) -> None:
    report = report_of(pruned, "collapsed")
    assert codes(report) == ["fidelity-collapsed", "random-inputs"]
    message = report["warnings"][0]["message"]
    assert "output 'output0' collapsed" in message and "on axis 1" in message
    assert pruned["collapsed"].exists()
    (output,) = report["validation"]["outputs"]
    assert output["cosine"] > 0.9999 and output["worst_channel_cosine"] < 0.5


def test_near_lossless_prune_passes_the_cosine_gate_given_alone(pruned, monkeypatch, capsys) -> None:
    report = report_of(pruned, "lossless")
    assert [s["removed"] for s in report["spaces"] if s["prunable"]] == [[0, 1, 2]]  # the nearly dead channels
    assert codes(report) == ["random-inputs"]
    dense, lossless = pruned["dense"], pruned["lossless"]
    # README's gate example: the gate given alone is the gate (default atol/rtol 1e-5 no longer apply) ...
    code, out, err = onnxprune(monkeypatch, capsys, "validate", dense, lossless, "--min-cosine", "0.99")
    assert code == 0, err
    assert "element check (--atol/--rtol): off" in out
    # ... while with no gate at all, the documented default (elementwise 1e-5) judges the ~1e-3 change.
    code, out, err = onnxprune(monkeypatch, capsys, "validate", dense, lossless)
    assert code == 1 and "exceed both --atol 1e-05 and --rtol 1e-05" in err
    assert "the default gate" in out
    # Elementwise tolerances apply when asked for, next to the cosine.
    code, _, err = onnxprune(monkeypatch, capsys, "validate", dense, lossless, "--min-cosine", "0.99", "--rtol", "1e-9")
    assert code == 1 and "--rtol 1e-09" in err


def test_min_snr_gate_judges_the_worst_channel(pruned, monkeypatch, capsys) -> None:
    dense = pruned["dense"]
    assert onnxprune(monkeypatch, capsys, "validate", dense, pruned["lossless"], "--min-snr", "30")[0] == 0
    code, _, err = onnxprune(monkeypatch, capsys, "validate", dense, pruned["collapsed"], "--min-snr", "0")
    assert code == 1 and "SNR (dB) -" in err and "on axis 1, the worst" in err


def test_channel_axis_option(pruned, tmp_path, monkeypatch, capsys) -> None:
    # Judged per anchor (axis 2), each 84-vector is mostly box coordinates: the collapse hides again.
    code, _, err = onnxprune(monkeypatch, capsys, "validate", pruned["dense"], pruned["collapsed"], "--min-cosine",
                             "0.99", "--channel-axis", "output0:2", "--json", tmp_path / "v.json")
    assert code == 0, err
    (output,) = json.loads((tmp_path / "v.json").read_text())["outputs"]
    assert (output["channel_axis"], output["channels"]) == (2, 256)
    code, _, err = onnxprune(monkeypatch, capsys, "validate", pruned["dense"], pruned["collapsed"],
                             "--channel-axis", "5")
    assert code == 2 and "--channel-axis: output 'output0' has rank 3; axis 5 is out of range" in err
    code, _, err = onnxprune(monkeypatch, capsys, "validate", pruned["dense"], pruned["collapsed"],
                             "--channel-axis", "nope:1")
    assert code == 2 and "no output 'nope'" in err


def test_fail_on_warning_exit_codes(pruned, tmp_path, monkeypatch, capsys) -> None:
    dense = pruned["dense"]
    code, out, err = onnxprune(monkeypatch, capsys, dense, tmp_path / "a.onnx", "--structured", "0.6")
    assert code == 0 and (tmp_path / "a.onnx").exists()
    lines = warning_lines(err)
    assert len(lines) == 2 and "collapsed" in lines[0] and RANDOM in lines[1]
    assert "COLLAPSED" in out  # the summary marks the output too
    code, _, err = onnxprune(monkeypatch, capsys, dense, tmp_path / "b.onnx", "--structured", "0.6",
                             "--fail-on-warning", "-q")
    assert code == 1 and (tmp_path / "b.onnx").exists()  # still written
    assert err.splitlines()[-1] == f"onnxprune: 2 warning(s) with --fail-on-warning: exit 1 ({tmp_path / 'b.onnx'} " \
                                   "was written)"
    # validate: a passed gate with a warning (random inputs) is exit 0, or 1 with --fail-on-warning.
    args = ["validate", dense, pruned["lossless"], "--min-cosine", "0.99"]
    assert onnxprune(monkeypatch, capsys, *args)[0] == 0
    code, _, err = onnxprune(monkeypatch, capsys, *args, "--fail-on-warning")
    assert code == 1 and err.splitlines()[-1] == "onnxprune: validate failed: 1 warning(s) with --fail-on-warning"
    # With real data no warning fires: exit 0 with --fail-on-warning.
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(3).standard_normal((4, 3, 16, 16)).astype(np.float32))
    code, _, err = onnxprune(monkeypatch, capsys, *args, "--fail-on-warning", "--calib", tmp_path / "data.npz")
    assert code == 0 and err == ""


# ---------------------------------------------------------------- each warning


def test_random_inputs_warning_only_without_data(pruned, tmp_path, monkeypatch, capsys) -> None:
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(3).standard_normal((8, 3, 16, 16)).astype(np.float32))
    code, _, err = onnxprune(monkeypatch, capsys, pruned["dense"], tmp_path / "c.onnx", "--structured", "0.25",
                             "--calib", tmp_path / "data.npz", "--calib-batch", "1", "--report", tmp_path / "c.json")
    assert code == 0, err
    report = json.loads((tmp_path / "c.json").read_text())
    # The warning follows what validation ran on: the calibration data, once prune validates on it.
    on_random = report["validation"].get("inputs", "random") == "random"
    assert ("random-inputs" in codes(report)) is on_random and (RANDOM in err) is on_random
    code, _, err = onnxprune(monkeypatch, capsys, pruned["dense"], tmp_path / "d.onnx", "--structured", "0.25",
                             "--report", tmp_path / "d.json")
    assert "random-inputs" in codes(json.loads((tmp_path / "d.json").read_text())) and RANDOM in err
    code, _, err = onnxprune(monkeypatch, capsys, "validate", pruned["dense"], tmp_path / "c.onnx", "--calib",
                             tmp_path / "data.npz")
    assert code == 0 and RANDOM not in err


def test_nothing_removed_without_a_mode(pruned, tmp_path, monkeypatch, capsys) -> None:
    code, _, err = onnxprune(monkeypatch, capsys, pruned["dense"], tmp_path / "n.onnx", "--report", tmp_path / "n.json")
    assert code == 0
    report = json.loads((tmp_path / "n.json").read_text())
    assert codes(report)[0] == "nothing-removed"
    assert "no pruning option was given" in report["warnings"][0]["message"]
    assert "nothing was removed" in warning_lines(err)[0]


def _save(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_nothing_removed_when_every_space_is_pinned(tmp_path, monkeypatch, capsys) -> None:
    # The conv's output is the graph's output: its channels are the model's interface, pinned.
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 1, 1)).astype(np.float32), "w")
    model = _save(tmp_path / "pinned.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], [w])
    code, _, err = onnxprune(monkeypatch, capsys, model, tmp_path / "out.onnx", "--structured", "0.5",
                             "--report", tmp_path / "r.json", "--fail-on-warning")
    assert code == 1 and "nothing was removed" in warning_lines(err)[0]
    (nothing,) = [w for w in json.loads((tmp_path / "r.json").read_text())["warnings"]
                  if w["code"] == "nothing-removed"]
    assert "every channel space is pinned (" in nothing["message"]


def test_nothing_removed_when_the_weights_sit_inside_an_if(tmp_path, monkeypatch, capsys) -> None:
    rng = np.random.default_rng(0)

    def branch(name: str) -> onnx.GraphProto:
        w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), f"{name}_w1")
        w2 = numpy_helper.from_array(rng.standard_normal((3, 8, 1, 1)).astype(np.float32), f"{name}_w2")
        nodes = [helper.make_node("Conv", ["x", f"{name}_w1"], [f"{name}_h"]),
                 helper.make_node("Relu", [f"{name}_h"], [f"{name}_r"]),
                 helper.make_node("Conv", [f"{name}_r", f"{name}_w2"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                                                 [1, 3, 4, 4])], [w1, w2])

    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"))
    model = _save(tmp_path / "if.onnx", [node],
                  [helper.make_tensor_value_info("cond", TensorProto.BOOL, [1]),
                   helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    code, _, err = onnxprune(monkeypatch, capsys, model, tmp_path / "out.onnx", "--structured", "0.5",
                             "--report", tmp_path / "r.json")
    assert code == 0, err
    (nothing,) = [w for w in json.loads((tmp_path / "r.json").read_text())["warnings"]
                  if w["code"] == "nothing-removed"]
    assert "4 weights sit inside If/Loop/Scan bodies" in nothing["message"]


def test_target_missed(pruned, tmp_path, monkeypatch, capsys) -> None:
    # Most FLOPs are in pinned convs (the box conv, the class conv's 80 outputs): 5% cannot be reached.
    code, _, err = onnxprune(monkeypatch, capsys, pruned["dense"], tmp_path / "t.onnx", "--target-flops", "0.05",
                             "--report", tmp_path / "t.json")
    assert code == 0, err
    report = json.loads((tmp_path / "t.json").read_text())
    achieved = report["budget"]["achieved"]
    assert achieved > 0.07
    (missed,) = [w for w in report["warnings"] if w["code"] == "target-missed"]
    assert missed["message"].startswith(f"--target-flops 0.05: the model keeps {achieved:g} of its flops")


def test_target_warning_threshold() -> None:
    class Options:
        structured = heads = drop_layers = target_params = target_latency = 0
        sparse = None
        target_flops = 0.5

    proto = onnx.ModelProto()
    for achieved, missed in ((0.515, False), (0.538, True), (0.47, True)):
        report = {"budget": {"target": {"flops": 0.5}, "achieved": achieved}, "spaces": [{"removed": [1]}]}
        assert (codes({"warnings": prune_warnings(report, Options(), proto)}) == ["target-missed"]) is missed


def test_the_shipped_demo_model_says_its_weights_are_random(tmp_path, monkeypatch, capsys) -> None:
    shipped = ROOT / "models" / "zoo" / "yolo_tiny.onnx"
    assert {p.key: p.value for p in onnx.load(shipped).metadata_props} == {"onnxprune.demo": "random-weights"}
    code, _, err = onnxprune(monkeypatch, capsys, shipped, tmp_path / "y.onnx", "--structured", "0.4",
                             "--report", tmp_path / "y.json")
    assert code == 0, err
    report = json.loads((tmp_path / "y.json").read_text())
    assert "demo-random-weights" in codes(report)
    assert any("demo model and its weights are random" in line for line in warning_lines(err))
    # The pruned copy keeps the marker, so validating it warns too.
    code, _, err = onnxprune(monkeypatch, capsys, "validate", shipped, tmp_path / "y.onnx", "--min-cosine", "-1")
    assert code == 0 and sum("demo model" in line for line in warning_lines(err)) == 2


# ---------------------------------------------------------------- HTML and the summary


def test_html_shows_warnings_and_no_green_yes_next_to_a_collapsed_output(pruned) -> None:
    page = render_html(report_of(pruned, "collapsed"))
    ElementTree.fromstring(page.split("\n", 1)[1])  # well-formed, as tests/test_html_report.py demands
    assert '<section id="warnings" class="warnings"><h2>Warnings (2)</h2>' in page
    assert "fidelity-collapsed" in page and 'class="card bad"' in page and "worst channel cosine" in page
    rows = [row for row in page.split("<tr>") if "<td>output0</td>" in row]
    assert rows and all('class="yes"' not in row for row in rows)
    assert all('<td class="no">collapsed</td>' in row for row in rows)
    fine = render_html(report_of(pruned, "lossless"))
    assert 'class="card bad"' not in fine and '<td class="yes">ok</td>' in fine


# ---------------------------------------------------------------- the metrics themselves


def test_layouts_follow_the_feature_axis() -> None:
    rng = np.random.default_rng(0)
    head = np.concatenate([300 + 100 * rng.standard_normal((1, 4, 400)), rng.random((1, 80, 400))], axis=1)
    assert choose_layout(head) == ChannelLayout("axis", 1)  # [1, 84, anchors]
    assert choose_layout(head.transpose(0, 2, 1)) == ChannelLayout("axis", 2)  # [1, anchors, 84]
    assert choose_layout(rng.standard_normal((2, 16, 64))) == ChannelLayout("axis", 2)  # [B, S, H]
    assert choose_layout(rng.standard_normal((2, 8, 5, 5))) == ChannelLayout("axis", 1)  # [N, C, H, W]
    assert choose_layout(rng.standard_normal((2, 1, 5, 5))).mode == "whole"  # a single map
    assert choose_layout(rng.standard_normal((4, 10))).mode == "rows"  # [N, K]
    logits = rng.standard_normal((1, 40, 300)) * 5
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert choose_layout(softmax) == ChannelLayout("rows", probabilities=True)  # a recognizer's [N, T, classes]
    assert choose_layout(rng.integers(0, 5, (2, 3, 4))).mode == "whole"
    assert choose_layout(head, axis=-1) == ChannelLayout("axis", 2)


def test_probability_rows_are_a_classifier_with_top1_per_row() -> None:
    rng = np.random.default_rng(1)
    logits = 4 * rng.standard_normal((1, 30, 50))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    other = probs.copy()
    other[0, :10] = other[0, :10, ::-1]  # 10 of 30 time steps now predict another class
    acc = OutputAccumulator("probs")
    acc.add(probs, other)
    stats = acc.result()
    assert stats.classifier and stats.channel_mode == "rows" and stats.channels == 30
    assert stats.top1_agreement == pytest.approx(20 / 30)
    assert stats.worst_channel < 10 and stats.worst_channel_cosine < 0.5


def test_silent_channels_agree_and_a_silent_channel_made_loud_does_not() -> None:
    ref = np.zeros((1, 3, 100))
    ref[0, 0] = np.linspace(1, 2, 100)
    ref[0, 1] = 1e-9 * np.sin(np.arange(100))  # silence: far under 1e-6 of channel 0's RMS
    got = ref.copy()
    got[0, 1] = -got[0, 1]  # "opposite", but at 1e-9
    sums = ChannelSums(ChannelLayout("axis", 1))
    sums.add(ref, got)
    assert sums.result().cosine.min() > 0.999
    got[0, 2] = 0.5  # the pruned model makes a silent channel loud
    sums = ChannelSums(ChannelLayout("axis", 1))
    sums.add(ref, got)
    result = sums.result()
    assert result.worst == 2 and result.cosine[2] < 0.01


def test_cosine_gate_value_is_the_worst_channel() -> None:
    ref = np.concatenate([np.full((1, 2, 50), 500.0), np.linspace(0, 1, 100).reshape(1, 2, 50)], axis=1)
    got = ref.copy()
    got[0, 2:] = 0.5  # the small rows lose their pattern
    acc = OutputAccumulator("y")
    acc.add(ref, got)
    stats = acc.result()
    (gate,) = [r for r in evaluate(stats, Gates.from_options(min_cosine=["0.99"])) if r.gate == "min_cosine"]
    assert stats.cosine > 0.99999 and gate.value == stats.worst_channel_cosine < 0.99 and not gate.passed
    assert "elemwise" not in [r.gate for r in evaluate(stats, Gates.from_options(min_cosine=["0.99"]))]


def test_sensitivity_error_weighs_every_channel_the_same() -> None:
    rng = np.random.default_rng(2)
    ref = np.concatenate([300 + 100 * rng.standard_normal((1, 4, 256)), rng.random((1, 80, 256)) ** 8], axis=1)
    got = ref.copy()
    got[0, 4:] = 0.0  # every class score lost
    old = float(np.sum((got - ref) ** 2) / np.sum(ref ** 2))  # the old error: one ratio over everything
    new = relative_error([choose_layout(ref)], [[ref]], [[got]])
    assert old < 1e-4 and new == pytest.approx(80 / 84, rel=1e-5)  # the silence floor: ~2e-6


def test_an_output_that_kept_its_direction_but_not_its_scale_collapses() -> None:
    from onnxprune.check.guards import collapsed

    ref = np.random.default_rng(4).random((1, 1, 32, 32))  # a probability map [N, 1, H, W]
    acc = OutputAccumulator("map")
    acc.add(ref, 3 * ref)
    stats = acc.result().to_dict()
    assert stats["cosine"] == pytest.approx(1.0) and stats["min_channel_snr_db"] == pytest.approx(-6.02, abs=0.01)
    assert "SNR -6.0 dB < 0 dB: the error outweighs the signal" in collapsed(stats)
    acc = OutputAccumulator("map")
    acc.add(ref, 1.01 * ref)
    assert collapsed(acc.result().to_dict()) is None
