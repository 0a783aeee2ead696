"""First contact with a real export (issue 13, "What was seen" 1-3): symbolic dims chosen so the
ORIGINAL model runs, paddle2onnx's `dim_value: -1`, validation on --calib / --load-inputs data,
integer inputs kept inside the table they index. Each graph here fails the way a real model did."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphs import GraphBuilder
from onnx import TensorProto, helper
from oracle import check_valid

from onnxprune.check import dim_choice
from onnxprune.check.inputs import model_input_specs, random_feeds, resolve_shapes
from onnxprune.check.validate import validation_inputs
from onnxprune.cli import app as cli
from onnxprune.io.model import Model

IMAGE = ["batch", 3, "height", "width"]


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.delenv("ONNXPRUNE_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["onnxprune", *args])
    try:
        cli.run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code: int, err: str) -> str:
    """The run stopped with exit 2 and one line: onnxprune's words, not ORT's raw text, no note before it."""
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxprune: error: ") and "internal error" not in lines[0], err
    assert "[ONNXRuntimeError]" not in lines[0] and "onnxruntime_src" not in lines[0], err
    return lines[0]


def save(model: onnx.ModelProto, folder: Path, name: str = "in.onnx") -> Path:
    path = folder / name
    onnx.save(model, str(path))
    return path


def runs(model: onnx.ModelProto | Path, feed: dict[str, np.ndarray]) -> str | None:
    """None when ONNX Runtime runs the model on `feed`, else its message."""
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    try:
        ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feed)
    except Exception as exc:  # ORT's errors share no base class
        return str(exc)
    return None


def image(size: int | tuple[int, int], channels: int = 3) -> dict[str, np.ndarray]:
    h, w = (size, size) if isinstance(size, int) else size
    return {"x": np.random.default_rng(0).standard_normal((1, channels, h, w)).astype(np.float32)}


def finish(g: GraphBuilder) -> onnx.ModelProto:
    """The model with output shapes from onnx's inference (GraphBuilder's fallback runs ORT at size 2,
    where these graphs fail by design)."""
    return onnx.shape_inference.infer_shapes(g.model(infer=False))


def upsample(g: GraphBuilder, x: str) -> str:
    return g.op("Resize", [x, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], mode="nearest")


# ---------------------------------------------------------------- 1. symbolic dims the original runs at


def yolo_neck() -> onnx.ModelProto:
    """Five stride-2 convs, the deepest map upsampled and concatenated with the stride-16 one (a YOLO
    neck): below 32x32 the upsampled map is 2x2 against 1x1 and Concat fails; multiples of 32 run."""
    g = GraphBuilder(seed=1)
    x = g.input(IMAGE)
    stages, h, cin = [], x, 3
    for cout in (8, 8, 16, 16, 16):
        h = g.op("Relu", [g.conv(h, cin, cout, strides=[2, 2])])
        stages.append(h)
        cin = cout
    cat = g.op("Concat", [upsample(g, stages[4]), stages[3]], axis=1)
    g.output(g.conv(cat, 32, 8))
    return finish(g)


def fpn() -> onnx.ModelProto:
    """A DBNet-like FPN over four stride-2 stages: each upsampled level is added to the lateral one
    (at 8x8 the stride-4 map is 2x2 and the upsampled one 4x4: no broadcast saves the Add)."""
    g = GraphBuilder(seed=2)
    x = g.input(IMAGE)
    stages, h, cin = [], x, 3
    for cout in (8, 16, 16, 16):
        h = g.op("Relu", [g.conv(h, cin, cout, strides=[2, 2])])
        stages.append(h)
        cin = cout
    top = g.conv(stages[3], 16, 8, k=1)
    for lateral in (stages[2], stages[1]):
        top = g.op("Add", [upsample(g, top), g.conv(lateral, 16, 8, k=1)])
    g.output(g.conv(top, 8, 1))
    return finish(g)


@pytest.mark.parametrize("build, stride", [(yolo_neck, 32), (fpn, 16)])
def test_graph_stride_and_a_size_the_original_runs_at(tmp_path, build, stride) -> None:
    proto = build()
    old_default = resolve_shapes(model_input_specs(proto), {})[0]["x"]  # batch 1, other symbolic dims 8
    assert runs(proto, image(old_default[2:])) is not None
    model = Model.load(save(proto, tmp_path))
    assert dim_choice.total_strides(model, "x") == (stride, stride)
    specs, shapes, notes = validation_inputs(model, {}, seed=0)
    h, w = shapes["x"][2:]
    assert shapes["x"][:2] == (1, 3) and h % stride == 0 and w % stride == 0 and h >= 32
    assert runs(proto, random_feeds(specs, shapes, 0)[0]) is None
    assert any(f"multiple of the total stride {stride}" in note for note in notes)


@pytest.mark.parametrize("build", [yolo_neck, fpn])
def test_prune_writes_a_model_that_runs_at_the_chosen_size(tmp_path, monkeypatch, capsys, build) -> None:
    source = save(build(), tmp_path)
    report = tmp_path / "report.json"
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4", "--report",
                            str(report)], monkeypatch, capsys)
    assert code == 0, err
    shape = json.loads(report.read_text())["shapes"]["x"]
    check_valid(tmp_path / "out.onnx")
    assert runs(tmp_path / "out.onnx", image(tuple(shape[2:]))) is None
    # The chosen dims are said before the work starts, not only in the summary at the end.
    first = err.splitlines()[0]
    assert first.startswith("note: input 'x' dim 2") and f"set to {shape[2]}" in first, err


def test_shapes_the_original_does_not_run_at_stop_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    source = save(yolo_neck(), tmp_path)
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4",
                            "--shapes", "x:1x3x33x33"], monkeypatch, capsys)
    line = one_error_line(code, err)
    assert "'x' 1x3x33x33" in line and "Concat" in line
    assert "--shapes x:1x3xHxW" in line and not (tmp_path / "out.onnx").exists()


def fixed_size_head() -> onnx.ModelProto:
    """Symbolic H, W declared, but a MatMul after Flatten takes exactly 4x10x10 features: no size
    dim_choice may try (224, 32, 64, ...) runs; only the user knows 10x10."""
    g = GraphBuilder(seed=3)
    x = g.input(IMAGE)
    flat = g.op("Flatten", [g.op("Relu", [g.conv(x, 3, 4)])], axis=1)
    g.output(g.op("MatMul", [flat, g.weight((400, 5), "head")]))
    return finish(g)


def test_no_size_runs_names_the_input_and_the_shapes_to_pass(tmp_path, monkeypatch, capsys) -> None:
    source = save(fixed_size_head(), tmp_path)
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4"], monkeypatch, capsys)
    line = one_error_line(code, err)
    assert "'x' 1x3x224x224" in line and "other sizes" in line and "MatMul" in line
    assert "pass --shapes x:1x3xHxW" in line and "--calib" in line
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4",
                            "--shapes", "x:1x3x10x10"], monkeypatch, capsys)
    assert code == 0, err
    check_valid(tmp_path / "out.onnx")


def test_text_line_input_gets_a_wide_multiple_of_its_stride(tmp_path) -> None:
    """A recognizer fixes the height (48) and leaves the width symbolic: a text line, several times wider."""
    g = GraphBuilder(seed=4)
    x = g.input(["batch", 3, 48, "width"])
    h = g.op("Relu", [g.conv(x, 3, 8, strides=[2, 2])])
    h = g.op("Relu", [g.conv(h, 8, 8, strides=[2, 1])])
    g.output(g.op("ReduceMean", [h], axes=[2], keepdims=0))
    model = Model.load(save(g.model(infer=False), tmp_path))
    _, shapes, _ = validation_inputs(model, {}, seed=0)
    assert shapes["x"][:3] == (1, 3, 48) and shapes["x"][3] >= 96 and shapes["x"][3] % 2 == 0


def test_metadata_size_is_preferred(tmp_path) -> None:
    proto = yolo_neck()
    helper.set_model_props(proto, {"imgsz": "[320, 256]"})
    _, shapes, notes = validation_inputs(Model.load(save(proto, tmp_path)), {}, seed=0)
    assert shapes["x"] == (1, 3, 320, 256)
    assert any("metadata" in note for note in notes)


def test_text_inputs_get_a_real_sequence_length(tmp_path) -> None:
    proto = embedding_model(rows=1000, shift=0)
    _, shapes, _ = validation_inputs(Model.load(save(proto, tmp_path)), {}, seed=0)
    assert shapes == {"ids": (1, dim_choice.SEQUENCE_LENGTH), "mask": (1, dim_choice.SEQUENCE_LENGTH)}
    assert 16 <= dim_choice.SEQUENCE_LENGTH <= 128


# ---------------------------------------------------------------- 2. paddle2onnx's dim_value -1


def minus_one_model() -> onnx.ModelProto:
    g = GraphBuilder(seed=5)
    x = g.input([-1, 3, -1, -1])
    h = g.op("Relu", [g.conv(x, 3, 16)])
    y = g.conv(h, 16, 4)
    g.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [-1, 4, -1, -1]))  # as paddle2onnx writes
    proto = g.model(infer=False)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1
    return proto


def test_minus_one_dims_are_symbolic(tmp_path, monkeypatch, capsys) -> None:
    source = save(minus_one_model(), tmp_path)
    assert model_input_specs(onnx.load(str(source)))[0].shape == (None, 3, None, None)
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4"], monkeypatch, capsys)
    assert code == 0, err
    check_valid(tmp_path / "out.onnx")
    written = onnx.load(str(tmp_path / "out.onnx")).graph
    assert all(d.dim_value >= 0 for v in [*written.input, *written.output] for d in v.type.tensor_type.shape.dim)
    code, _, err = run_cli([str(source), str(tmp_path / "out2.onnx"), "--structured", "0.4",
                            "--shapes", "x:1x3x48x192"], monkeypatch, capsys)
    assert code == 0, err
    assert runs(tmp_path / "out2.onnx", image((48, 192))) is None


# ---------------------------------------------------------------- 3. inputs that need valid values


def branch_model(compare: str) -> onnx.ModelProto:
    """A VAD-like If on a scalar sample-rate input: the wanted branch passes the features on; the
    other reshapes them to a shape they do not fit, so ORT fails there."""
    g = GraphBuilder(seed=6)
    x = g.input([1, 4, "h", "w"])  # symbolic, or ORT's load-time inference finds the bad Reshape
    sr = g.input([], "sr", TensorProto.INT64)
    h = g.conv(g.op("Relu", [g.conv(x, 4, 16)]), 16, 4)
    threshold = g.const(np.array(16000 if compare == "Equal" else 12000, np.int64), "rate")
    cond = g.op(compare, [sr, threshold])
    then_graph = helper.make_graph([helper.make_node("Identity", [h], ["then_y"])], "then", [],
                                   [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, [1, 4, "h", "w"])])
    bad_shape = helper.make_tensor("bad_shape", TensorProto.INT64, [4], [1, 4, 3, -1])  # H*W % 3 != 0: no fit
    else_graph = helper.make_graph([helper.make_node("Constant", [], ["shape3"], value=bad_shape),
                                    helper.make_node("Reshape", [h, "shape3"], ["else_y"])], "else", [],
                                   [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [1, 4, 3, None])])
    y = g.op("If", [cond], then_branch=then_graph, else_branch=else_graph)
    g.outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 4, "h", "w"]))
    return g.model(infer=False)


def test_if_on_a_scalar_input_takes_values_from_a_calib_loader(tmp_path, monkeypatch, capsys) -> None:
    source = save(branch_model("Greater"), tmp_path)
    loader = tmp_path / "loader.py"
    loader.write_text("import numpy as np\n\n\ndef load_data():\n    rng = np.random.default_rng(0)\n"
                      "    for _ in range(3):\n"
                      "        yield {'x': rng.standard_normal((1, 4, 8, 8)).astype(np.float32),"
                      " 'sr': np.array(16000, np.int64)}\n")
    report = tmp_path / "report.json"
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4", "--calib", str(loader),
                            "--report", str(report)], monkeypatch, capsys)
    assert code == 0, err
    validation = json.loads(report.read_text())["validation"]
    assert validation["inputs"] == f"--calib '{loader}'" and validation["samples"] == 2
    check_valid(tmp_path / "out.onnx")
    # Random data takes the failing branch (a Greater is no value rule): one line, pointing at --calib.
    code, _, err = run_cli([str(source), str(tmp_path / "out2.onnx"), "--structured", "0.4"], monkeypatch, capsys)
    line = one_error_line(code, err)
    assert "--calib" in line and "Reshape" in line


def test_scalar_compared_with_a_constant_takes_that_value(tmp_path, monkeypatch, capsys) -> None:
    source = save(branch_model("Equal"), tmp_path)
    specs, _, _ = validation_inputs(Model.load(source), {}, seed=0)
    assert {spec.name: spec.values and spec.values.choices for spec in specs}["sr"] == (16000.0,)
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4"], monkeypatch, capsys)
    assert code == 0, err


def embedding_model(rows: int, shift: int) -> onnx.ModelProto:
    """ids (plus `shift`) index a table of `rows`; a mask multiplies the result."""
    g = GraphBuilder(seed=7)
    ids = g.input(["batch", "seq"], "ids", TensorProto.INT64)
    mask = g.input(["batch", "seq"], "mask", TensorProto.INT64)
    index = g.op("Add", [ids, g.const(np.array(shift, np.int64), "offset")]) if shift else ids
    emb = g.op("Gather", [g.weight((rows, 16), "table"), index], axis=0)
    h = g.op("MatMul", [g.op("Relu", [g.op("MatMul", [emb, g.weight((16, 32), "w1")])]), g.weight((32, 16), "w2")])
    weight = g.op("Unsqueeze", [g.op("Cast", [mask], to=TensorProto.FLOAT), g.ints([2])])
    g.output(g.op("Mul", [h, weight]))
    return finish(g)


def test_ids_stay_inside_the_table_they_index(tmp_path, monkeypatch, capsys) -> None:
    proto = embedding_model(rows=4, shift=3)
    ones = {"ids": np.ones((1, 8), np.int64), "mask": np.ones((1, 8), np.int64)}
    assert "out of" in runs(proto, ones)  # 1 + 3 indexes row 4 of 4: the old 0/1 ids fail
    source = save(proto, tmp_path)
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4"], monkeypatch, capsys)
    assert code == 0, err
    check_valid(tmp_path / "out.onnx")


def test_vocabulary_ids_span_the_table_and_masks_are_mostly_one(tmp_path) -> None:
    specs, shapes, _ = validation_inputs(Model.load(save(embedding_model(rows=1000, shift=0), tmp_path)), {}, 0)
    feed = random_feeds(specs, shapes, seed=0)[0]
    assert feed["ids"].min() >= 0 and feed["ids"].max() < 1000 and feed["ids"].max() > 100
    mask = feed["mask"]
    assert set(np.unique(mask)) == {0, 1} and mask.mean() >= 0.7 and mask[0, 0] == 1


def test_val_range_on_prune(tmp_path, monkeypatch, capsys) -> None:
    source = save(embedding_model(rows=4, shift=3), tmp_path)
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4",
                            "--val-range", "ids:0,0"], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4",
                            "--val-range", "ids:2,5"], monkeypatch, capsys)
    assert "out of" in one_error_line(code, err)
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--val-range", "ids:1",
                            "--structured", "0.4"], monkeypatch, capsys)
    assert "--val-range" in one_error_line(code, err)


def polygraphy_json(feeds: list[dict[str, np.ndarray]]) -> str:
    """What `polygraphy run --save-inputs` writes: a list of feeds, arrays as base64 of np.save."""
    def encode(array: np.ndarray) -> dict:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return {"array": base64.b64encode(buffer.getvalue()).decode(), "polygraphy_class": "ndarray"}

    return json.dumps([{name: encode(value) for name, value in feed.items()} for feed in feeds])


@pytest.mark.parametrize("kind", ["json", "npz"])
def test_load_inputs_validates_on_those_feeds(tmp_path, monkeypatch, capsys, kind) -> None:
    source = save(branch_model("Greater"), tmp_path)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32), "sr": np.array(16000, np.int64)}
             for _ in range(3 if kind == "json" else 1)]
    path = tmp_path / f"inputs.{kind}"
    if kind == "json":
        path.write_text(polygraphy_json(feeds))
    else:
        np.savez(path, **feeds[0])
    report = tmp_path / "report.json"
    # Scoring without --calib stays random (l1 needs no data); validation runs the given feeds.
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--structured", "0.4", "--load-inputs",
                            str(path), "--report", str(report)], monkeypatch, capsys)
    assert code == 0, err
    validation = json.loads(report.read_text())["validation"]
    assert validation["inputs"] == f"--load-inputs '{path}'" and validation["samples"] == len(feeds)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"x": [[1.0]]}]))
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--load-inputs", str(bad)], monkeypatch, capsys)
    assert "--load-inputs" in one_error_line(code, err)


def test_val_range_is_refused_with_calib(tmp_path, monkeypatch, capsys) -> None:
    source = save(embedding_model(rows=10, shift=0), tmp_path)
    data = tmp_path / "calib.npz"
    np.savez(data, ids=np.ones((4, 8), np.int64), mask=np.ones((4, 8), np.int64))
    code, _, err = run_cli([str(source), str(tmp_path / "out.onnx"), "--calib", str(data), "--val-range", "0,1"],
                           monkeypatch, capsys)
    assert "--val-range" in one_error_line(code, err)


def test_resolve_shapes_keeps_its_defaults_without_suggestions() -> None:
    specs = model_input_specs(minus_one_model())
    assert resolve_shapes(specs, {})[0] == {"x": (1, 3, 8, 8)}


# ---------------------------------------------------------------- the real corpus

# The models that failed first contact before (DBNet FPN at 1x1), a recognizer, a text encoder and
# magika's one-hot bytes; ONNXPRUNE_FIRST_CONTACT_ALL=1 runs every corpus model (~10 min).
CORPUS_SAMPLE = ["ppocrv6_tiny_det", "tinyocr_rec", "minilm_l3_paraphrase", "magika"]


def _corpus_names() -> list[str]:
    try:
        import models.real as real
    except ImportError:
        return []
    if os.environ.get("ONNXPRUNE_FIRST_CONTACT_ALL"):
        return [name for name, entry in real.CATALOGUE.items() if entry.same_as is None]
    return [name for name in CORPUS_SAMPLE if name in real.CATALOGUE]


@pytest.mark.parametrize("name", _corpus_names())
def test_corpus_first_contact(tmp_path, name) -> None:
    """`onnxprune MODEL out.onnx --structured 0.4` writes a valid model, or stops with one line."""
    import models.real as real

    try:
        path = real.fetch(name)
    except real.CorpusUnavailable as exc:
        pytest.skip(f"corpus not reachable: {exc}")
    env = {key: value for key, value in os.environ.items() if key != "ONNXPRUNE_DEBUG"}
    result = subprocess.run([sys.executable, "-m", "onnxprune", str(path), str(tmp_path / "out.onnx"),
                             "--structured", "0.4", "--quiet"], capture_output=True, text=True, env=env,
                            timeout=900, cwd=tmp_path)
    if result.returncode != 0:
        assert name not in CORPUS_SAMPLE, result.stderr  # these prune: a stop is a regression
        one_error_line(result.returncode, result.stderr)
        return
    check_valid(tmp_path / "out.onnx")
    feed = real.real_inputs(name, "eval", 1)[0]
    assert runs(tmp_path / "out.onnx", feed) is None
