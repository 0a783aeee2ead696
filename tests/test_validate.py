"""`onnxprune validate`: gates, Polygraphy's tolerance semantics, inputs, exit codes and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.check.compare import OutputAccumulator
from onnxprune.check.gates import Gates, evaluate, parse_per_output
from onnxprune.check.inputs import model_input_specs, random_feeds
from onnxprune.check.validate import check_signatures, model_signature, parse_val_ranges, random_inputs
from onnxprune.cli.app import run
from onnxprune.errors import InvalidOptionError, ValidationError


def validate(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`onnxprune validate ARGS` in-process, with the console entry point's exit-code rules."""
    monkeypatch.setattr(sys, "argv", ["onnxprune", "validate", *map(str, args)])
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("onnxprune: warning: ")]  # guard-rails tests
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


def strict_json(path: Path) -> dict:
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def save_graph(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def scale_model(path: Path, scale, name: str = "x", dtype=TensorProto.FLOAT, rank: int = 2) -> Path:
    """y = x * s with s a [4] vector (broadcast over the batch)."""
    dims = ["n", 4] if rank == 2 else ["n", 1, 4]
    s = numpy_helper.from_array(np.broadcast_to(np.float32(scale), (4,)).astype(np.float32), "s")
    nodes = [helper.make_node("Mul", [name, "s"], ["y"])]
    if dtype != TensorProto.FLOAT:
        nodes = [helper.make_node("Cast", [name], ["xf"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", ["xf", "s"], ["y"])]
    return save_graph(path, nodes, [helper.make_tensor_value_info(name, dtype, dims)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], [s])


def broken_copy(source: Path, target: Path) -> Path:
    """The model with the sign of one output channel of its first conv flipped."""
    model = onnx.load(source)
    conv_weights = [node.input[1] for node in model.graph.node if node.op_type == "Conv"]
    for tensor in model.graph.initializer:
        if tensor.name == conv_weights[0]:
            array = numpy_helper.to_array(tensor).copy()
            array[0] *= -1
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(model, target)
    return target


@pytest.fixture(scope="module")
def resnet_pair(zoo, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(reference, identical copy, broken copy) of the zoo's residual CNN (logits [batch, 10])."""
    folder = tmp_path_factory.mktemp("validate")
    reference = Path(zoo("resnet"))
    copy = folder / "copy.onnx"
    copy.write_bytes(reference.read_bytes())
    return reference, copy, broken_copy(reference, folder / "broken.onnx")


# ---------------------------------------------------------------- the pipeline gate end to end


def test_identical_copy_passes_and_broken_model_fails(resnet_pair, tmp_path, monkeypatch, capsys) -> None:
    reference, copy, broken = resnet_pair
    gates = ["--atol", "1e-3", "--min-cosine", "0.99", "--shapes", "input:4x3x64x64", "--samples", "2"]
    code, out, err = validate(monkeypatch, capsys, reference, copy, *gates, "--json", tmp_path / "ok.json")
    assert code == 0, err
    assert err == "onnxprune: warning: validation ran on random inputs (no --calib): the figures say how the " \
                  "outputs moved on noise, not on your data\n"
    assert "logits" in out and "passed" in out
    ok = strict_json(tmp_path / "ok.json")
    assert ok["passed"] is True and ok["failure"] is None and ok["failed_gates"] == []
    assert ok["command"] == "validate" and ok["schema_version"] == 1
    (logits,) = ok["outputs"]
    assert logits["max_abs"] == 0.0 and logits["cosine"] == 1.0 and logits["elem_violations"] == 0

    code, out, err = validate(monkeypatch, capsys, reference, broken, *gates, "--json", tmp_path / "bad.json")
    assert code == 1, err
    line = one_line(err, "onnxprune: validate failed: output 'logits': ")
    assert "--atol 0.001" in line and "FAIL" in out
    # JSON is written on failure too, with every output, every stat, each gate's verdict and the inputs.
    bad = strict_json(tmp_path / "bad.json")
    assert bad["passed"] is False and bad["failure"] in line
    assert {g["gate"] for g in bad["failed_gates"]} >= {"elemwise", "min_cosine"}
    (logits,) = bad["outputs"]
    assert logits["passed"] is False and logits["cosine"] < 0.99
    assert {g["gate"]: g["passed"] for g in logits["gates"]}["nonfinite"] is True
    assert bad["inputs"] == {"source": "random", "seed": 0, "batches": 2, "samples": 8,
                             "shapes": {"input": [4, 3, 64, 64]}, "val_range": {"default": None, "overrides": {}},
                             "notes": []}
    assert bad["gates"]["atol"] == {"default": 1e-3, "overrides": {}}
    assert bad["gates"]["min_cosine"] == {"default": 0.99, "overrides": {}}


def test_cosine_gate_line_names_output_and_option(resnet_pair, monkeypatch, capsys) -> None:
    reference, _, broken = resnet_pair
    code, _, err = validate(monkeypatch, capsys, reference, broken, "--atol", "inf", "--min-cosine", "0.99",
                            "--shapes", "input:4x3x64x64", "-q")
    assert code == 1
    line = one_line(err, "onnxprune: validate failed: output 'logits': cosine 0.")
    assert line.endswith("< --min-cosine 0.99")


def test_exit_code_one_from_a_real_process(resnet_pair, tmp_path) -> None:
    reference, _, broken = resnet_pair
    env = {key: value for key, value in os.environ.items() if key != "ONNXPRUNE_DEBUG"}
    result = subprocess.run([sys.executable, "-m", "onnxprune", "validate", str(reference), str(broken),
                             "--min-cosine", "0.99", "--atol", "inf", "-q"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    one_line(result.stderr, "onnxprune: validate failed: output 'logits': cosine")


def test_top1_agreement_on_a_classifier_matches_onnxruntime(resnet_pair, tmp_path, monkeypatch, capsys) -> None:
    reference, copy, broken = resnet_pair
    args = ["--shapes", "input:8x3x64x64", "--samples", "3", "--seed", "5", "--atol", "inf", "--top-k", "3"]
    code, _, err = validate(monkeypatch, capsys, reference, copy, *args, "--min-top1", "1",
                            "--json", tmp_path / "a.json")
    assert code == 0, err
    (same,) = strict_json(tmp_path / "a.json")["outputs"]
    assert same["classifier"] is True and same["rows"] == 24
    assert same["top1_agreement"] == 1.0 and same["topk_agreement"] == 1.0

    code, _, err = validate(monkeypatch, capsys, reference, broken, *args, "--json", tmp_path / "b.json")
    assert code == 0, err  # no top-1 gate given: figures only
    (logits,) = strict_json(tmp_path / "b.json")["outputs"]

    # The same seeded inputs, run here: the agreement must be what argmax says.
    spec = model_input_specs(onnx.load(reference))
    feeds = random_feeds(spec, {"input": (8, 3, 64, 64)}, seed=5, count=3)
    ref_s, got_s = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (reference, broken))
    ref = np.concatenate([ref_s.run(None, f)[0] for f in feeds])
    got = np.concatenate([got_s.run(None, f)[0] for f in feeds])
    top1 = float(np.mean(ref.argmax(1) == got.argmax(1)))
    top3 = float(np.mean([r.argmax() in np.argsort(-g)[:3] for r, g in zip(ref, got)]))
    assert logits["top1_agreement"] == pytest.approx(top1)
    assert logits["topk_agreement"] == pytest.approx(top3) and logits["top_k"] == 3
    assert top1 < 1.0, "the broken copy should change some predictions"
    cos = float(ref.ravel() @ got.ravel() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert logits["cosine"] == pytest.approx(cos, rel=1e-6)

    code, _, err = validate(monkeypatch, capsys, reference, broken, *args, "--min-top1", "1", "-q")
    assert code == 1
    line = one_line(err, "onnxprune: validate failed: output 'logits': top-1 agreement ")
    assert f"({round(top1 * 24)} of 24 rows)" in line and "< --min-top1 1" in line


# ---------------------------------------------------------------- Polygraphy's element check


def test_element_fails_only_when_both_tolerances_are_exceeded() -> None:
    ref = np.array([[1000.0, 1.0, 0.0]], np.float32)
    got = np.array([[1000.5, 1.0, 0.0]], np.float32)  # abs 0.5, rel 5e-4
    for atol, rtol, violations in ((1e-3, 1e-3, 0),   # atol alone fails, rtol passes -> pass
                                   (1.0, 1e-6, 0),    # rtol alone fails, atol passes -> pass
                                   (1e-3, 1e-4, 1),   # both exceeded -> the element fails
                                   (0.5, 0.0, 0)):    # strictly greater, as Polygraphy's np.greater
        acc = OutputAccumulator("y", atol=atol, rtol=rtol)
        acc.add(ref, got)
        stats = acc.result()
        assert stats.elem_violations == violations, (atol, rtol)
        elemwise = {r.gate: r for r in evaluate(stats, Gates.from_options(atol=[str(atol)], rtol=[str(rtol)]))}
        assert elemwise["elemwise"].passed is (violations == 0)


def test_relative_error_of_a_zero_reference_uses_epsilon() -> None:
    acc = OutputAccumulator("y", atol=1e-3, rtol=1e-3)
    acc.add(np.zeros(2, np.float32), np.array([0.0, 1e-4], np.float32))
    stats = acc.result()  # below: a huge relative error, but the absolute one is within atol
    assert stats.max_rel == pytest.approx(1e-4 / np.finfo(np.float64).eps, rel=1e-6) and stats.elem_violations == 0


def test_element_check_through_the_cli(tmp_path, monkeypatch, capsys) -> None:
    ref, got = scale_model(tmp_path / "a.onnx", 1.0), scale_model(tmp_path / "b.onnx", 1.0001)
    data = ["--val-range", "100,200", "--shapes", "x:3x4"]
    # abs error ~0.01-0.02 > atol 1e-3 everywhere, rel 1e-4 < rtol 1e-3: every element passes.
    code, out, err = validate(monkeypatch, capsys, ref, got, *data, "--atol", "1e-3", "--rtol", "1e-3")
    assert code == 0, err
    assert "0/48" in out
    code, _, err = validate(monkeypatch, capsys, ref, got, *data, "--atol", "1e-3", "--rtol", "1e-5")
    assert code == 1
    assert "48 of 48 elements exceed both --atol 0.001 and --rtol 1e-05" in one_line(err, "onnxprune: validate failed")
    # Polygraphy's defaults (1e-5 both) fail it too; a per-output --rtol for 'y' passes it.
    assert validate(monkeypatch, capsys, ref, got, *data)[0] == 1
    assert validate(monkeypatch, capsys, ref, got, *data, "--rtol", "1e-6", "--rtol", "y:1e-3")[0] == 0


# ---------------------------------------------------------------- per-output option parsing


def test_per_output_tolerance_parsing() -> None:
    atol = parse_per_output(["out0:1e-3", "1e-4", "scope/out:1:0.5"], "--atol", 1e-5, low=0.0)
    assert atol.default == 1e-4
    assert atol.overrides == {"out0": 1e-3, "scope/out:1": 0.5}  # the last colon splits: names may have colons
    assert atol.for_output("out0") == 1e-3 and atol.for_output("other") == 1e-4
    assert parse_per_output([], "--atol", 1e-5).for_output("y") == 1e-5
    assert parse_per_output(["inf"], "--atol", 1e-5).default == float("inf")
    assert parse_per_output([], "--min-cosine").given is False
    for bad, match in ((["x:abc"], "not a number"), (["-1"], "out of range"), (["nan"], "out of range"),
                       ([":1"], "empty output name"), (["1", "2"], "given twice"), (["a:1", "a:2"], "more than once")):
        with pytest.raises(InvalidOptionError, match=match):
            parse_per_output(bad, "--atol", 1e-5, low=0.0)
    with pytest.raises(InvalidOptionError, match="--min-cosine"):
        Gates.from_options(min_cosine=["1.5"])
    with pytest.raises(InvalidOptionError, match="--top-k"):
        Gates.from_options(top_k=0)


def test_unknown_output_in_an_option_is_exit_2(tmp_path, monkeypatch, capsys) -> None:
    ref = scale_model(tmp_path / "a.onnx", 1.0)
    code, _, err = validate(monkeypatch, capsys, ref, ref, "--atol", "logits:1e-3")
    assert code == 2
    assert "--atol: the models have no output 'logits' (outputs: y)" in one_line(err, "onnxprune: error: ")


def test_min_top1_without_a_classifier_is_exit_2(tmp_path, monkeypatch, capsys) -> None:
    ref = scale_model(tmp_path / "a.onnx", 1.0, rank=3)  # [n, 1, 4]: not [batch, classes]
    code, _, err = validate(monkeypatch, capsys, ref, ref, "--min-top1", "0.9")
    assert code == 2
    assert "no output is classifier-like" in one_line(err, "onnxprune: error: ")
    # Naming the output makes its last axis the classes.
    code, _, err = validate(monkeypatch, capsys, ref, ref, "--min-top1", "0.9", "--classifier", "y",
                            "--json", tmp_path / "r.json")
    assert code == 0, err
    (y,) = strict_json(tmp_path / "r.json")["outputs"]
    assert y["classifier"] is True and y["top1_agreement"] == 1.0


# ---------------------------------------------------------------- NaN/Inf, shapes, signatures


def test_nan_in_pruned_output_fails(tmp_path, monkeypatch, capsys) -> None:
    ref = scale_model(tmp_path / "a.onnx", 1.0)
    got = scale_model(tmp_path / "b.onnx", [1.0, np.nan, 1.0, 1.0])
    code, _, err = validate(monkeypatch, capsys, ref, got, "--atol", "inf", "--shapes", "x:2x4", "--samples", "3",
                            "--json", tmp_path / "r.json")
    assert code == 1
    line = one_line(err, "onnxprune: validate failed: output 'y': NaN/Inf where the reference differs at 6 of 24")
    assert "pruned: 6 NaN, 0 Inf; reference: 0 NaN, 0 Inf" in line
    (y,) = strict_json(tmp_path / "r.json")["outputs"]
    assert (y["got_nan"], y["ref_nan"], y["nonfinite_mismatch"]) == (6, 0, 6)
    # NaN in the same places in both models is agreement.
    assert validate(monkeypatch, capsys, got, got, "--shapes", "x:2x4")[0] == 0


def test_shape_change_at_run_time_fails_the_comparable_gate(tmp_path, monkeypatch, capsys) -> None:
    ref = scale_model(tmp_path / "a.onnx", 1.0)
    starts, ends, axes = (numpy_helper.from_array(np.array([value], np.int64), name)
                          for value, name in ((0, "b"), (3, "e"), (1, "a")))
    got = save_graph(tmp_path / "b.onnx", [helper.make_node("Slice", ["x", "b", "e", "a"], ["y"])],
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [starts, ends, axes])
    code, _, err = validate(monkeypatch, capsys, ref, got, "--shapes", "x:2x4", "--json", tmp_path / "r.json")
    assert code == 1
    line = one_line(err, "onnxprune: validate failed: ")
    assert line.endswith("output 'y': shape 2x3 differs from the reference 2x4")
    (y,) = strict_json(tmp_path / "r.json")["outputs"]
    assert y["failure"] and y["max_abs"] is None and [g["gate"] for g in y["gates"]] == ["comparable"]


def test_mismatched_inputs_are_exit_2_one_line(tmp_path, monkeypatch, capsys) -> None:
    ref = scale_model(tmp_path / "a.onnx", 1.0)
    renamed = scale_model(tmp_path / "b.onnx", 1.0, name="z")
    code, _, err = validate(monkeypatch, capsys, ref, renamed)
    assert code == 2
    line = one_line(err, "onnxprune: error: the models cannot be compared: ")
    assert "input 'x' of 'a.onnx' is missing from 'b.onnx'" in line
    assert "input 'z' of 'b.onnx' is not in 'a.onnx'" in line


def test_signature_dtype_and_rank_differences(tmp_path) -> None:
    a = tmp_path / "a.onnx"
    scale_model(a, 1.0)
    for other, expected in ((scale_model(tmp_path / "h.onnx", 1.0, dtype=TensorProto.FLOAT16),
                             "input 'x' is float32 in 'a.onnx' but float16 in 'h.onnx'"),
                            (scale_model(tmp_path / "r.onnx", 1.0, rank=3),
                             "input 'x' has rank 2 in 'a.onnx' but 3 in 'r.onnx'")):
        with pytest.raises(ValidationError, match="cannot be compared") as info:
            check_signatures(a, model_signature(a), other, model_signature(other))
        assert expected in str(info.value) and "\n" not in str(info.value)
    specs, outputs = model_signature(a)
    assert [s.name for s in specs] == ["x"]  # the weight 's' is not an input to feed
    assert [(o.name, o.rank) for o in outputs] == [("y", 2)]


# ---------------------------------------------------------------- statistics over batches


def test_statistics_accumulate_over_batches_like_one_concatenated_batch() -> None:
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((3, 6)).astype(np.float32), 10 * rng.standard_normal((5, 6)).astype(np.float32)]
    got = [r + rng.normal(0, s, r.shape).astype(np.float32) for r, s in zip(ref, (0.5, 0.01))]
    split = OutputAccumulator("y", atol=0.1, rtol=0.1, top_k=2)
    for r, g in zip(ref, got):
        split.add(r, g)
    whole = OutputAccumulator("y", atol=0.1, rtol=0.1, top_k=2)
    whole.add(np.concatenate(ref), np.concatenate(got))
    a, b = split.result(), whole.result()
    for field in ("max_abs", "mean_abs", "max_rel", "mean_rel", "rel_to_max", "cosine", "elem_violations",
                  "top1_agreement", "topk_agreement", "rows", "compared"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-12), field
    assert (a.batches, b.batches) == (2, 1)
    # The cosine of the whole is not the mean of the per-batch cosines (the batches differ in scale).
    per_batch = [float(r.ravel() @ g.ravel() / (np.linalg.norm(r) * np.linalg.norm(g))) for r, g in zip(ref, got)]
    assert abs(a.cosine - np.mean(per_batch)) > 1e-3


# ---------------------------------------------------------------- inputs: calibration data and random ranges


def test_calibration_npz_and_loader_script(tmp_path, monkeypatch, capsys) -> None:
    ref, got = scale_model(tmp_path / "a.onnx", 1.0), scale_model(tmp_path / "b.onnx", 1.5)
    np.savez(tmp_path / "data.npz", x=np.arange(20, dtype=np.float32).reshape(5, 4))
    code, _, err = validate(monkeypatch, capsys, ref, got, "--calib", tmp_path / "data.npz", "--calib-batch", "2",
                            "--atol", "inf", "--json", tmp_path / "r.json")
    assert code == 0, err
    result = strict_json(tmp_path / "r.json")
    assert result["inputs"]["source"] == str(tmp_path / "data.npz")
    assert (result["inputs"]["batches"], result["inputs"]["samples"], result["inputs"]["seed"]) == (3, 5, None)
    (y,) = result["outputs"]
    assert y["max_abs"] == pytest.approx(0.5 * 19) and y["mean_abs"] == pytest.approx(0.5 * np.arange(20).mean())

    (tmp_path / "loader.py").write_text(
        "import numpy as np\n"
        "def load_data():\n"
        "    for i in range(3):\n"
        "        yield {'x': np.full((2, 4), i, np.float32)}\n")
    code, _, err = validate(monkeypatch, capsys, ref, got, "--calib", tmp_path / "loader.py", "--samples", "2",
                            "--atol", "inf", "--json", tmp_path / "s.json")
    assert code == 0, err
    inputs = strict_json(tmp_path / "s.json")["inputs"]
    assert (inputs["batches"], inputs["samples"]) == (2, 4)

    code, _, err = validate(monkeypatch, capsys, ref, got, "--calib", tmp_path / "data.npz", "--val-range", "0,1")
    assert code == 2
    assert "--val-range applies to random inputs" in one_line(err, "onnxprune: error: ")


def test_val_range_parsing_and_sampling() -> None:
    assert parse_val_ranges(["0,1", "ids:[2,50]", "in:0:-1.5,1.5"]) == {"": (0.0, 1.0), "ids": (2.0, 50.0),
                                                                         "in:0": (-1.5, 1.5)}
    for bad in ("1", "a:1,x", "2,1", "x:0,inf"):
        with pytest.raises(InvalidOptionError, match="--val-range"):
            parse_val_ranges([bad])
    with pytest.raises(InvalidOptionError, match="more than once"):
        parse_val_ranges(["x:0,1", "x:0,2"])

    from onnxprune.check.inputs import InputSpec

    specs = [InputSpec("f", np.dtype(np.float32), (2, 500)), InputSpec("i", np.dtype(np.int64), (2, 500)),
             InputSpec("b", np.dtype(np.bool_), (2, 500))]
    shapes = {spec.name: spec.shape for spec in specs}
    feeds = random_inputs(specs, shapes, seed=3, count=2, ranges={"": (-2.0, 2.0), "i": (5.0, 7.0)})
    f, i = feeds[0]["f"], feeds[0]["i"]
    assert f.dtype == np.float32 and -2 <= f.min() < -1.9 and 1.9 < f.max() <= 2
    assert i.dtype == np.int64 and set(np.unique(i)) == {5, 6, 7}  # both ends included
    assert feeds[0]["b"].dtype == np.bool_
    assert not np.array_equal(feeds[0]["f"], feeds[1]["f"])
    again = random_inputs(specs, shapes, seed=3, count=1, ranges={"": (-2.0, 2.0), "i": (5.0, 7.0)})
    assert all(np.array_equal(again[0][k], feeds[0][k]) for k in shapes)  # independent of --samples
    with pytest.raises(InvalidOptionError, match="no input 'nope'"):
        random_inputs(specs, shapes, 0, 1, {"nope": (0.0, 1.0)})


def test_fixed_batch_model_reads_npz_one_sample_at_a_time(tmp_path, monkeypatch, capsys) -> None:
    s = numpy_helper.from_array(np.ones(4, np.float32), "s")
    fixed = save_graph(tmp_path / "f.onnx", [helper.make_node("Mul", ["x", "s"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [s])
    np.savez(tmp_path / "data.npz", x=np.ones((3, 4), np.float32))
    code, _, err = validate(monkeypatch, capsys, fixed, fixed, "--calib", tmp_path / "data.npz",
                            "--json", tmp_path / "r.json")
    assert code == 0, err
    assert strict_json(tmp_path / "r.json")["inputs"]["batches"] == 3


def test_json_path_errors_name_the_option(tmp_path, monkeypatch, capsys) -> None:
    ref = scale_model(tmp_path / "a.onnx", 1.0)
    code, _, err = validate(monkeypatch, capsys, ref, ref, "--json", tmp_path / "missing" / "r.json")
    assert code == 2
    assert all(word in one_line(err, "onnxprune: error: ") for word in ("--json", "folder", "does not exist"))


def test_big_models_run_one_session_at_a_time_with_the_same_verdict(resnet_pair, tmp_path, monkeypatch,
                                                                     capsys) -> None:
    """Above the size limit the reference runs every batch and is freed before the pruned model loads."""
    import onnxprune.check.validate as validate_module
    from onnxprune.check import runtime

    reference, _, broken = resnet_pair
    args = ["--min-cosine", "0.99", "--shapes", "input:2x3x64x64", "--samples", "3"]
    code, _, _ = validate(monkeypatch, capsys, reference, broken, *args, "--json", tmp_path / "together.json")
    assert code == 1
    live, peak = [0], [0]
    real_create = runtime.create_session

    class Tracked:
        def __init__(self, path):
            self.session = real_create(path)
            live[0] += 1
            peak[0] = max(peak[0], live[0])

        def __getattr__(self, name):
            return getattr(self.session, name)

        def __del__(self):
            live[0] -= 1

    monkeypatch.setattr(runtime, "create_session", Tracked)
    monkeypatch.setattr(validate_module, "INTERLEAVE_MAX_BYTES", 0)
    code, _, _ = validate(monkeypatch, capsys, reference, broken, *args, "--json", tmp_path / "alone.json")
    assert code == 1 and peak[0] == 1
    together, alone = strict_json(tmp_path / "together.json"), strict_json(tmp_path / "alone.json")
    assert together["runtime"]["sessions"] == "together" and alone["runtime"]["sessions"] == "one at a time"
    assert together["outputs"] == alone["outputs"] and together["failure"] == alone["failure"]
