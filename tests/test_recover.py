"""Recovery by distillation (--recover): the torch interpreter reproduces ONNX Runtime on real graphs,
training lowers the distillation loss, and the trained weights go back under their names, in their
dtypes and shapes, into a graph that is otherwise unchanged, passes onnx's full check and runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tiny import INPUT_SHAPE, tiny_model

torch = pytest.importorskip("torch")

from onnxprune.passes.recover import KeepDense, Recover  # noqa: E402

from onnxprune.api import PruneOptions, prune  # noqa: E402
from onnxprune.calib.data import CalibrationData  # noqa: E402
from onnxprune.errors import InvalidOptionError  # noqa: E402
from onnxprune.io.model import Model  # noqa: E402
from onnxprune.pipeline import Context  # noqa: E402
from onnxprune.recover.interpreter import GraphModule, to_torch  # noqa: E402
from onnxprune.recover.settings import RecoverSettings  # noqa: E402
from onnxprune.recover.writeback import choose_trainable  # noqa: E402


def _run_ort(path, feeds: list[dict]) -> list[list[np.ndarray]]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def _worst_relative_error(path, feeds: list[dict]) -> float:
    """Max |torch - ORT| over every float output, relative to the output's largest magnitude (at least 1)."""
    net = GraphModule(Model.load(path))
    worst = 0.0
    for feed, want in zip(feeds, _run_ort(path, feeds)):
        with torch.no_grad():
            got = net({name: to_torch(value) for name, value in feed.items()})
        for value, reference in zip(got.values(), want):
            if reference.dtype.kind == "f":
                scale = max(1.0, float(np.abs(reference).max()))
                worst = max(worst, float(np.abs(value.numpy() - reference).max()) / scale)
            else:
                np.testing.assert_array_equal(value.numpy().astype(reference.dtype), reference)
    return worst


@pytest.mark.parametrize("name,exporter", [("resnet", "torchscript"), ("yolo", "dynamo"), ("mobile", "torchscript"),
                                           ("bert", "dynamo"), ("bert", "torchscript")])
def test_interpreter_reproduces_onnx_runtime_on_reference_nets(zoo, name, exporter):
    import models

    feeds = [models.example_inputs(name)]
    assert _worst_relative_error(zoo(name, exporter), feeds) < 1e-4


@pytest.mark.parametrize("name", ["ppocrv6_tiny_rec", "ddddocr_det"])
def test_interpreter_reproduces_onnx_runtime_on_real_models(name):
    real = pytest.importorskip("models.real")
    try:
        path = real.fetch(name)
    except real.CorpusUnavailable as exc:
        pytest.skip(str(exc))
    assert _worst_relative_error(path, real.real_inputs(name, "calib", 2)) < 1e-4


# ------------------------------------------------------------ training and writing back


def _calibration(folder: Path, count: int = 16, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    # Smooth "images": a few blobs rather than white noise, so the shifts of augmentation mean something.
    base = rng.standard_normal((count, 3, 4, 4)).astype(np.float32)
    images = np.repeat(np.repeat(base, 2, axis=2), 2, axis=3) + 0.1 * rng.standard_normal((count, *INPUT_SHAPE[1:]))
    path = folder / "calib.npz"
    np.savez(path, x=images.astype(np.float32))
    return path


def _fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The tiny model computed in float16 throughout (weights, input and output), as fp16 exports are."""
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor).astype(np.float16)
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    return model


@pytest.mark.parametrize("half", [False, True])
def test_recovery_lowers_the_loss_and_changes_only_weight_values(tmp_path, half):
    source = tmp_path / "in.onnx"
    onnx.save(_fp16(tiny_model()) if half else tiny_model(), source)
    calib = _calibration(tmp_path)
    # Without the least-squares refit the pruned model starts far from the original: room to recover.
    common = dict(structured=0.5, calib=str(calib), calib_batch=1, round_to=1, validate=False, compensate=False)
    plain = prune(source, tmp_path / "plain.onnx", PruneOptions(**common))
    report = prune(source, tmp_path / "recovered.onnx",
                   PruneOptions(**common, recover=True, recover_steps=40, recover_lr=0.02))
    entry = report["recover"]["rounds"][0]
    assert entry["steps"] == 40 and entry["samples"] == 16 and entry["trainable_weights"] > 0
    assert entry["matched_tensors"] > 0  # cut activations compared on the channels kept
    assert entry["loss_after"] < 0.5 * entry["loss_before"], entry
    assert not entry["reverted"] and len(entry["curve"]) > 1
    assert report["recover"]["steps"] == 40 and report["recover"]["seconds"] > 0
    assert plain["after"] == report["after"]  # same structure and sizes: training changed values only

    before, after = onnx.load(tmp_path / "plain.onnx"), onnx.load(tmp_path / "recovered.onnx")
    onnx.checker.check_model(after, full_check=True)
    assert [n.SerializeToString() for n in before.graph.node] == [n.SerializeToString() for n in after.graph.node]
    weights = {t.name: t for t in before.graph.initializer}
    changed = 0
    for tensor in after.graph.initializer:
        original = weights.pop(tensor.name)
        assert (tensor.data_type, list(tensor.dims)) == (original.data_type, list(original.dims)), tensor.name
        changed += not np.array_equal(numpy_helper.to_array(tensor), numpy_helper.to_array(original))
    assert not weights and changed > 0
    if half:
        assert {t.data_type for t in after.graph.initializer} == {TensorProto.FLOAT16}

    # Closer to the original model on the data it was trained on, in ONNX Runtime.
    dtype = np.float16 if half else np.float32
    feeds = [{"x": x[None].astype(dtype)} for x in np.load(calib)["x"]]
    dense = np.concatenate([o[0] for o in _run_ort(source, feeds)]).astype(np.float64)
    error = {name: float(np.mean((np.concatenate([o[0] for o in _run_ort(tmp_path / f"{name}.onnx", feeds)])
                                  - dense) ** 2)) for name in ("plain", "recovered")}
    assert error["recovered"] < error["plain"], error


def test_an_integer_output_beside_the_float_ones_is_left_out_of_the_loss(tmp_path):
    """Encoders export masks and ids as outputs (paraphrase-MiniLM-L3 did): they are not trained towards."""
    model = tiny_model()
    model.graph.node.append(helper.make_node("Shape", ["x"], ["x_shape"]))
    model.graph.output.append(helper.make_tensor_value_info("x_shape", TensorProto.INT64, [4]))
    source = tmp_path / "in.onnx"
    onnx.save(model, source)
    report = prune(source, tmp_path / "out.onnx", PruneOptions(structured=0.5, calib=str(_calibration(tmp_path)),
                                                               calib_batch=1, round_to=1, validate=False,
                                                               recover=True, recover_steps=5))
    assert report["recover"]["rounds"][0]["steps"] == 5
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"), full_check=True)


def test_progressive_rounds_reach_the_same_size(tmp_path):
    source = tmp_path / "in.onnx"
    onnx.save(tiny_model(), source)
    common = dict(calib=str(_calibration(tmp_path)), calib_batch=1, round_to=1, validate=False, recover=True)
    one = prune(source, tmp_path / "one.onnx", PruneOptions(target_params=0.5, recover_steps=10, **common))
    two = prune(source, tmp_path / "two.onnx", PruneOptions(target_params=0.5, recover_steps=10, recover_rounds=2,
                                                            **common))
    rounds = two["recover"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["steps"] for r in rounds] == [5, 5]
    assert two["recover"]["steps"] == 10 and one["recover"]["steps"] == 10
    ratio = lambda report: report["after"]["params"] / report["before"]["params"]  # noqa: E731
    assert abs(ratio(two) - ratio(one)) < 0.1, (ratio(one), ratio(two))
    onnx.checker.check_model(onnx.load(tmp_path / "two.onnx"), full_check=True)


def test_sparse_zeros_survive_recovery(tmp_path):
    """With --sparse, recovery trains the kept weights only: every zero of the N:M pattern stays zero."""
    source = tmp_path / "in.onnx"
    onnx.save(tiny_model(), source)
    common = dict(sparse="2:4", sparse_any_shape=True, calib=str(_calibration(tmp_path)), calib_batch=1,
                  validate=False)
    prune(source, tmp_path / "sparse.onnx", PruneOptions(**common))
    report = prune(source, tmp_path / "out.onnx", PruneOptions(**common, recover=True, recover_steps=10))
    assert report["recover"]["rounds"][0]["steps"] == 10
    plain = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "sparse.onnx").graph.initializer}
    zeros = 0
    for tensor in onnx.load(tmp_path / "out.onnx").graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.ndim >= 2:
            np.testing.assert_array_equal(array == 0, plain[tensor.name] == 0, err_msg=tensor.name)
            zeros += int((array == 0).sum())
    assert zeros > 0


def test_only_learned_parameters_train():
    """Kernels, biases, per-channel vectors train; a detector's grid, scalars, integers and normalization
    statistics stay as they are."""
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "bias": rng.standard_normal((1, 8, 1, 1)).astype(np.float32),  # per channel: trains
        "grid": rng.standard_normal((1, 8, 6, 6)).astype(np.float32),  # a map, not a vector: frozen
        "half": np.array(0.5, np.float32),  # a scalar: frozen
        "shape": np.array([1, -1], np.int64),  # an integer: not a candidate
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Add", ["c", "bias"], ["a"]),
        helper.make_node("Add", ["a", "grid"], ["g"]),
        helper.make_node("Mul", ["g", "half"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = Model.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    trainable, frozen = choose_trainable(model)
    assert sorted(trainable) == ["bias", "w"]
    assert sum(frozen.values()) == 2


def test_augmentation_mixes_real_images_and_leaves_ids_alone():
    """Images get boxes of other calibration images (every pixel comes from one of the two, the size is
    kept); token ids and masks are never changed."""
    from onnxprune.recover import augment as augmentation

    generator = torch.Generator().manual_seed(0)
    image, partner = torch.rand(2, 3, 16, 40), torch.rand(2, 3, 16, 40) + 2.0
    ids = torch.arange(10).reshape(2, 5)
    out = augmentation.augment({"x": image, "ids": ids}, generator, {"x": partner, "ids": ids + 1})
    mixed = out["x"]
    assert mixed.shape == image.shape and torch.equal(out["ids"], ids)
    from_partner = mixed >= 2.0
    assert from_partner.any() and (~from_partner).any()
    assert torch.equal(mixed[~from_partner], image[~from_partner])
    assert torch.equal(mixed[from_partner], partner[from_partner])


def test_a_graph_the_interpreter_cannot_run_is_left_pruned_with_a_note():
    """Control flow (a subgraph reading outer values) is not interpreted: recovery is skipped, said so,
    and the model keeps the weights the rewrite gave it."""
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["c"], [f"{name}_out"])], name, [],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("If", ["flag"], ["y"], then_branch=branch("then"), else_branch=branch("else"))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w"),
                               numpy_helper.from_array(np.array(True), "flag")])
    model = Model.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    context = Context(model)
    teacher = KeepDense()
    teacher.run(context)
    feeds = [{"x": np.ones((1, 3, 8, 8), np.float32)}]
    Recover(teacher, CalibrationData(feeds, "test", 1), RecoverSettings(steps=2)).run(context)
    assert "subgraph" in context.report["recover"]["rounds"][0]["skipped"]
    assert any("--recover skipped" in note for note in context.report["notes"])
    assert np.array_equal(model.weight("w"), np.ones((4, 3, 1, 1), np.float32))


# ------------------------------------------------------------ the command line


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli_recover_writes_a_checked_model_and_reports_the_training(tmp_path):
    onnx.save(tiny_model(), tmp_path / "in.onnx")
    _calibration(tmp_path)
    result = _cli("in.onnx", "out.onnx", "--structured", "0.5", "--calib", "calib.npz", "--calib-batch", "1",
                  "--recover", "--recover-steps", "6", "--json", "report.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "recover: loss" in result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    entry = report["recover"]["rounds"][0]
    assert entry["steps"] == 6 and entry["samples"] == 16 and entry["data"].endswith("calib.npz")
    assert {"loss_before", "loss_after", "curve", "seconds", "device"} <= set(entry)
    assert report["options"]["recover_steps"] == 6
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"), full_check=True)
    feed = {"x": np.load(tmp_path / "calib.npz")["x"][:1]}
    assert np.isfinite(_run_ort(tmp_path / "out.onnx", [feed])[0][0]).all()


@pytest.mark.parametrize("args,message", [
    (["--recover-steps", "5"], "--recover-steps need --recover"),
    (["--recover"], "give --calib"),
    (["--recover", "--calib", "calib.npz", "--recover-steps", "0"], "--recover-steps must be at least 1"),
    (["--recover", "--calib", "calib.npz", "--recover-time", "-1"], "--recover-time must be a positive"),
    (["--recover", "--calib", "calib.npz", "--recover-rounds", "0"], "--recover-rounds must be at least 1"),
])
def test_cli_refuses_bad_recover_options_in_one_line(tmp_path, args, message):
    onnx.save(tiny_model(), tmp_path / "in.onnx")
    _calibration(tmp_path)
    result = _cli("in.onnx", "out.onnx", "--structured", "0.5", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_torch_stays_out_of_a_prune_without_recover(tmp_path):
    onnx.save(tiny_model(), tmp_path / "in.onnx")
    code = ("import sys; from onnxprune.api import PruneOptions, prune; "
            "prune('in.onnx', 'out.onnx', PruneOptions(structured=0.5)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_python_api_checks_recover_options():
    with pytest.raises(InvalidOptionError, match="need --recover"):
        PruneOptions(structured=0.5, recover_rounds=2).check()
