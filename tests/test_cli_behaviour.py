"""The command line behaves like its neighbours: --shapes in trtexec's, Polygraphy's and onnxsim's
spellings, `--json PATH` on every command, output paths refused before any work, progress bars only on
a terminal, no ONNX Runtime log lines, and no torch import."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from folders import listing
from onnx import TensorProto, helper, numpy_helper
from tiny import tiny_model

from onnxprune.check.inputs import parse_shapes
from onnxprune.errors import InvalidOptionError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "zoo" / "yolo_tiny.onnx"


def cli(*args: str, cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "ONNXPRUNE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error: "), result.stderr
    return lines[0]


def batch_model() -> onnx.ModelProto:
    """The tiny model with a symbolic batch dim, so --shapes has something to choose."""
    model = tiny_model()
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


def two_input_model() -> onnx.ModelProto:
    """y = a @ W, z = b @ V with a: [batch, 4], b: [rows, 6] (two independent symbolic dims)."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
               numpy_helper.from_array(rng.standard_normal((6, 2)).astype(np.float32), "V")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "W"], ["y"]), helper.make_node("MatMul", ["b", "V"], ["z"])], "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["rows", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["rows", 2])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def failing_model() -> onnx.ModelProto:
    """Loads in ONNX Runtime and fails when run: a Reshape of [1, 4] to [3, 5] (ORT logs such failures)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")], "fails",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        [numpy_helper.from_array(np.array([3, 5], dtype=np.int64), "shape")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def work(tmp_path: Path) -> Path:
    onnx.save(tiny_model(), str(tmp_path / "in.onnx"))
    onnx.save(batch_model(), str(tmp_path / "batch.onnx"))
    return tmp_path


# ---------------------------------------------------------------- --shapes


@pytest.mark.parametrize("spec", ["x:2x3x224x224", "x:[2,3,224,224]", "x:[2, 3, 224, 224]", "x:2,3,224,224"])
def test_shapes_each_spelling(spec: str) -> None:
    assert parse_shapes([spec]) == {"x": (2, 3, 224, 224)}


@pytest.mark.parametrize("specs", [
    ["a:1x3", "b:2x4"],  # repeated option
    ["a:1x3,b:2x4"],  # trtexec's comma-separated list
    ["a:[1,3]", "b:[2,4]"],  # Polygraphy, repeated
    ["a:[1,3] b:[2,4]"],  # Polygraphy's space-separated list in one value
    ["a:1,3", "b:2,4"],  # onnxsim, repeated
    ["a:1,3 b:2,4"],  # onnxsim's space-separated list in one value
    ["a:1,3,b:2,4"],  # a comma before a name starts the next input
])
def test_shapes_several_inputs(specs: list[str]) -> None:
    assert parse_shapes(specs) == {"a": (1, 3), "b": (2, 4)}


def test_shapes_names_with_colons_and_scalars() -> None:
    assert parse_shapes(["input:0:[1,3]", "input:1:1,5", "s:[]"]) == {"input:0": (1, 3), "input:1": (1, 5), "s": ()}


@pytest.mark.parametrize("spec", ["x:1x3,4", "x:[1,a]", "x:1,0", "x:[1,3", "3,x:1x2", "x:1x2 7"])
def test_shapes_malformed_is_one_line(spec: str) -> None:
    with pytest.raises(InvalidOptionError, match="--shapes") as info:
        parse_shapes([spec])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["x:2x3x8x8", "x:[2,3,8,8]", "x:2,3,8,8"])
def test_shapes_spelling_reaches_the_run(work: Path, spec: str) -> None:
    result = cli("batch.onnx", "out.onnx", "--structured", "0.25", "--shapes", spec, "--json", "r.json", cwd=work)
    assert result.returncode == 0, result.stderr
    assert json.loads((work / "r.json").read_text())["shapes"] == {"x": [2, 3, 8, 8]}


def test_shapes_comma_list_of_two_inputs_reaches_validate(tmp_path: Path) -> None:
    onnx.save(two_input_model(), str(tmp_path / "two.onnx"))
    result = cli("validate", "two.onnx", "two.onnx", "--shapes", "a:2x4,b:5x6", "--json", "v.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "v.json").read_text())["inputs"]["shapes"] == {"a": [2, 4], "b": [5, 6]}


# ---------------------------------------------------------------- writability, before any work


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a read-only tmp folder, or (as root, whom
    permission bits do not stop) /sys, which refuses new files even to root."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            descriptor, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(descriptor)
        os.unlink(probe)
    pytest.skip("no folder here refuses new files to this user")


@pytest.fixture
def readonly(tmp_path: Path):
    folder = unwritable_folder(tmp_path)
    yield folder
    (tmp_path / "readonly").chmod(0o755)


def test_readonly_report_folder_refused_before_the_model_is_written(work: Path, readonly: Path) -> None:
    before = listing(work)
    line = one_line_error(cli("in.onnx", "out.onnx", "--structured", "0.5", "--json", str(readonly / "r.json"),
                              cwd=work))
    assert str(readonly) in line and "not writable" in line
    assert listing(work) == before  # no model, no data file, no temp or staging file


@pytest.mark.parametrize("option", ["--json", "--report", "--html"])
def test_missing_report_folder_refused(work: Path, option: str) -> None:
    before = listing(work)
    line = one_line_error(cli("in.onnx", "out.onnx", "--structured", "0.5", option, "nodir/r.out", cwd=work))
    assert "nodir" in line and "does not exist" in line
    assert listing(work) == before


def test_readonly_output_folder_refused_naming_it(work: Path, readonly: Path) -> None:
    before = listing(work)
    line = one_line_error(cli("in.onnx", str(readonly / "out.onnx"), "--structured", "0.5", cwd=work))
    assert str(readonly) in line and "not writable" in line and ".stage" not in line
    assert listing(work) == before


def test_output_data_file_that_is_a_folder_refused(work: Path) -> None:
    (work / "out.onnx.data").mkdir()
    before = listing(work)
    line = one_line_error(cli("in.onnx", "out.onnx", "--structured", "0.5", "--external-data", cwd=work))
    assert "out.onnx.data" in line
    assert listing(work) == before


@pytest.mark.parametrize("command", [
    ["validate", "in.onnx", "in.onnx"],
    ["bench", "in.onnx", "--runs", "1", "--warmup", "0", "--no-memory"],
    ["check-sparsity", "in.onnx"],
    ["sensitivity", "in.onnx"],
    ["inspect", "in.onnx"],
])
def test_every_json_path_is_checked_first(work: Path, readonly: Path, command: list[str]) -> None:
    before = listing(work)
    line = one_line_error(cli(*command, "--json", str(readonly / "r.json"), cwd=work))
    assert str(readonly) in line
    assert listing(work) == before


def test_plot_path_is_checked_first(work: Path) -> None:
    line = one_line_error(cli("sensitivity", "in.onnx", "--plot", "nodir/p.png", cwd=work))
    assert "nodir" in line


# ---------------------------------------------------------------- one naming scheme


def test_json_and_report_name_the_same_option(work: Path) -> None:
    assert cli("in.onnx", "a.onnx", "--structured", "0.5", "--json", "a.json", cwd=work).returncode == 0
    assert cli("in.onnx", "b.onnx", "--structured", "0.5", "--report", "b.json", cwd=work).returncode == 0
    first, second = (json.loads((work / name).read_text()) for name in ("a.json", "b.json"))
    assert first.keys() == second.keys() and first["after"] == second["after"]


def test_inspect_json_to_a_file_or_stdout(work: Path) -> None:
    to_file = cli("inspect", "in.onnx", "--json", "spaces.json", cwd=work)
    assert to_file.returncode == 0, to_file.stderr
    spaces = json.loads((work / "spaces.json").read_text())
    assert spaces and {"id", "size"} <= spaces[0].keys()
    for args in (["--json", "-"], ["--json"]):  # `--json` alone: the flag it used to be
        printed = cli("inspect", "in.onnx", *args, cwd=work)
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout) == spaces


def test_help_says_prune_is_the_default(tmp_path: Path) -> None:
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "IN OUT [OPTIONS]" in result.stdout.splitlines()[0]
    assert "default command" in result.stdout and "--json PATH" in result.stdout


# ---------------------------------------------------------------- progress and ONNX Runtime's logger

COMPENSATED = ["in.onnx", "out.onnx", "--structured", "0.5", "--compensate", "--json", "r.json"]


def test_progress_quiet_when_stderr_is_not_a_terminal(work: Path) -> None:
    result = cli(*COMPENSATED, cwd=work)
    assert result.returncode == 0, result.stderr
    assert "compensate: " in result.stderr  # the step lines stay
    assert "\r" not in result.stderr and "\x1b" not in result.stderr and "%|" not in result.stderr


def run_on_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal 100 columns wide; what it drew there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {key: value for key, value in os.environ.items() if key != "ONNXPRUNE_DEBUG"}
    process = subprocess.Popen([sys.executable, "-m", "onnxprune", *args], cwd=cwd, env=env,
                               stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # the pty's buffer is small: read while the child writes
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    code = process.wait(timeout=180)
    reader.join(timeout=10)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_progress_bars_on_a_terminal_and_quiet_silences_them(work: Path) -> None:
    code, drawn = run_on_terminal(COMPENSATED, work)
    assert code == 0, drawn
    assert "compensation" in drawn and "%|" in drawn  # tqdm's bar
    assert "compensate ..." in drawn  # the status shown when the step starts
    code, drawn = run_on_terminal([*COMPENSATED, "--quiet"], work)
    assert code == 0, drawn
    # --quiet leaves only warnings (which cannot be silenced): no bar, no status, no step line.
    assert "%|" not in drawn and "\x1b" not in drawn and "compensat" not in drawn, drawn
    assert all(line.startswith("onnxprune: warning: ") for line in drawn.splitlines()), drawn


def test_onnxruntime_log_lines_never_reach_stderr(tmp_path: Path) -> None:
    onnx.save(failing_model(), str(tmp_path / "fails.onnx"))
    for args in (["validate", "fails.onnx", "fails.onnx"], ["fails.onnx", "out.onnx", "--structured", "0.5"]):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        # Step lines may come first (prune); the error is the last line, and ORT wrote nothing.
        assert result.stderr.splitlines()[-1].startswith("onnxprune: error: "), result.stderr
        assert "Reshape" in result.stderr  # the run failed in ONNX Runtime, whose words the error carries
        assert "\x1b" not in result.stderr and ":onnxruntime:" not in result.stderr, result.stderr
    assert not (tmp_path / "out.onnx").exists()


# ---------------------------------------------------------------- no torch unless a pass needs it

CHECK_MODULES = """
import runpy, sys
sys.argv = ["onnxprune", *sys.argv[1:]]
try:
    runpy.run_module("onnxprune", run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted(name for name in ("torch", "sympy", "onnxprune.io._ort_symbolic_shape_infer") if name in sys.modules))
"""


def test_import_does_not_import_torch(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # without torch installed there is nothing to avoid
    code = "import sys, onnxprune; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_cli_prune_does_not_import_torch(tmp_path: Path) -> None:
    """The shipped detector needs ONNX Runtime's symbolic shape inference (Slice, Resize leave dims
    unknown to onnx's): the run must use it, and still not import torch."""
    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-c", CHECK_MODULES, str(SHIPPED), str(tmp_path / "out.onnx"),
                             "--structured", "0.4", "--quiet"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.strip().splitlines()[-1]
    assert loaded == "['onnxprune.io._ort_symbolic_shape_infer', 'sympy']", result.stdout


def test_symbolic_shape_inference_leaves_no_file_in_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    """ORT's symbolic inference saves 'sym_shape_infer_temp.onnx' into the current folder when a custom
    op stops it; onnxprune runs it elsewhere."""
    from onnxprune.io.shapes import symbolic_inference

    graph = helper.make_graph(
        [helper.make_node("MyOp", ["x"], ["h"], domain="custom.domain"), helper.make_node("Relu", ["h"], ["y"])],
        "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("custom.domain", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    monkeypatch.chdir(tmp_path)
    assert symbolic_inference(model) is None
    assert list(tmp_path.iterdir()) == [] and Path.cwd() == tmp_path
