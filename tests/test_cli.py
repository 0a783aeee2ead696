"""The command line, run as a real subprocess: `python -m onnxprune ...` and the `onnxprune` script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from folders import listing
from tiny import INPUT_SHAPE, tiny_model


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return tiny_model().SerializeToString()


@pytest.fixture
def work(tmp_path: Path, model_bytes: bytes) -> Path:
    """A folder holding in.onnx (and an empty sub-folder 'dir')."""
    (tmp_path / "in.onnx").write_bytes(model_bytes)
    (tmp_path / "dir").mkdir()
    return tmp_path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "ONNXPRUNE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def run_model(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(1).standard_normal(INPUT_SHAPE).astype(np.float32)}
    return session.run(None, feed)[0]


def assert_one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == code, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxprune: error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- help and version


def test_module_help(tmp_path: Path) -> None:
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "inspect" in result.stdout and "prune" in result.stdout
    result = cli("prune", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--structured", "--criterion", "--report", "--no-validate", "--shapes", "--exclude"):
        assert option in result.stdout


def test_console_script_help(tmp_path: Path) -> None:
    script = shutil.which("onnxprune", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                               os.environ.get("PATH", "")]))
    if script is None:
        pytest.skip("the onnxprune console script is not installed")
    result = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_version(tmp_path: Path) -> None:
    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert "0.1.0" in result.stdout


# ---------------------------------------------------------------- pruning


def test_prune_writes_output_and_summary(work: Path, model_bytes: bytes) -> None:
    result = cli("in.onnx", "out.onnx", "--structured", "0.4", cwd=work)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "channel spaces:" in result.stdout
    assert "params" in result.stdout and "flops" in result.stdout
    assert "wrote out.onnx" in result.stdout
    out = work / "out.onnx"
    onnx.checker.check_model(str(out), full_check=True)
    assert run_model(out).shape == (1, 4)
    assert (work / "in.onnx").read_bytes() == model_bytes
    assert sorted(listing(work)) == ["dir", "in.onnx", "out.onnx"]


def test_prune_subcommand_spelled_out_and_quiet(work: Path) -> None:
    result = cli("prune", "in.onnx", "dir/out.onnx", "--structured", "0.4", "-q", "--no-validate", cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    onnx.checker.check_model(str(work / "dir" / "out.onnx"), full_check=True)


def test_report_is_strict_json(work: Path) -> None:
    result = cli("in.onnx", "out.onnx", "--structured", "0.4", "--report", "r.json", cwd=work)
    assert result.returncode == 0, result.stderr
    report = strict_json((work / "r.json").read_text())
    for key in ("before", "after", "spaces", "validation"):
        assert key in report, key
    assert report["after"]["params"] <= report["before"]["params"]
    assert isinstance(report["spaces"], list) and report["spaces"]
    assert [o["name"] for o in report["validation"]["outputs"]] == ["y"]
    assert not [p.name for p in work.iterdir() if p.name.endswith(".tmp")]


def test_no_validate_skips_validation(work: Path) -> None:
    result = cli("in.onnx", "out.onnx", "--structured", "0.4", "--no-validate", "--report", "r.json", cwd=work)
    assert result.returncode == 0, result.stderr
    report = strict_json((work / "r.json").read_text())
    assert "validation" not in report
    assert "before" in report and "after" in report and "spaces" in report
    assert "latency" not in result.stdout
    onnx.checker.check_model(str(work / "out.onnx"), full_check=True)


def test_external_data_options(work: Path) -> None:
    result = cli("in.onnx", "out.onnx", "--structured", "0.4", "--external-data", "--no-validate", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "out.onnx.data").is_file()
    onnx.checker.check_model(str(work / "out.onnx"), full_check=True)
    assert run_model(work / "out.onnx").shape == (1, 4)


# ---------------------------------------------------------------- bad input


def _text_input(folder: Path) -> list[str]:
    (folder / "notes.onnx").write_text("this is a text file, not an ONNX model\n")
    return ["notes.onnx", "out.onnx"]


def _truncated_input(folder: Path) -> list[str]:
    data = (folder / "in.onnx").read_bytes()
    (folder / "half.onnx").write_bytes(data[: len(data) // 2])
    return ["half.onnx", "out.onnx"]


def _symlink_to_input(folder: Path) -> list[str]:
    (folder / "dir" / "link.onnx").symlink_to(folder / "in.onnx")
    return ["in.onnx", "dir/link.onnx"]


def _hardlink_to_input(folder: Path) -> list[str]:
    os.link(folder / "in.onnx", folder / "dir" / "hard.onnx")
    return ["in.onnx", "dir/hard.onnx"]


BAD = {
    "text-file": (_text_input, "not a valid ONNX model"),
    "truncated": (_truncated_input, "not a valid ONNX model"),
    "missing-input": (["missing.onnx", "out.onnx"], "does not exist"),
    "input-is-folder": (["dir", "out.onnx"], "folder"),
    "output-is-input": (["in.onnx", "in.onnx"], "is the input model"),
    "output-is-input-respelled": (["in.onnx", "./dir/../in.onnx"], "is the input model"),
    "output-is-input-absolute": (lambda folder: ["in.onnx", str(folder / "in.onnx")], "is the input model"),
    "output-symlink-to-input": (_symlink_to_input, "is the input model"),
    "output-hardlink-to-input": (_hardlink_to_input, "is the input model"),
    "ratio-1.0": (["in.onnx", "out.onnx", "--structured", "1.0"], "--structured"),
    "ratio-negative": (["in.onnx", "out.onnx", "--structured", "-0.1"], "--structured"),
    "ratio-1.5": (["in.onnx", "out.onnx", "--structured", "1.5"], "--structured"),
    "ratio-nan": (["in.onnx", "out.onnx", "--structured", "nan"], "--structured"),
    "ratio-not-a-number": (["in.onnx", "out.onnx", "--structured", "half"], "--structured"),
    "exclude-matches-nothing": (["in.onnx", "out.onnx", "--structured", "0.4", "--exclude", "no_such_node"],
                                "no_such_node"),
    "round-to-0": (["in.onnx", "out.onnx", "--structured", "0.4", "--round-to", "0"], "--round-to"),
    "heads-1": (["in.onnx", "out.onnx", "--heads", "1"], "--heads"),
    "drop-layers-negative": (["in.onnx", "out.onnx", "--drop-layers", "-1"], "--drop-layers"),
    "drop-layers-fractional-count": (["in.onnx", "out.onnx", "--drop-layers", "1.5"], "--drop-layers"),
    "unknown-criterion": (["in.onnx", "out.onnx", "--criterion", "random-forest"], "random-forest"),
    "shapes-no-dims": (["in.onnx", "out.onnx", "--shapes", "x"], "--shapes"),
    "shapes-bad-dims": (["in.onnx", "out.onnx", "--shapes", "x:1xthreex8x8"], "--shapes"),
    "shapes-zero-dim": (["in.onnx", "out.onnx", "--shapes", "x:1x3x0x8"], "--shapes"),
    "shapes-unknown-input": (["in.onnx", "out.onnx", "--shapes", "z:1x3x8x8"], "'z'"),
    "shapes-contradict-model": (["in.onnx", "out.onnx", "--shapes", "x:2x3x8x8"], "--shapes"),
    "output-folder-missing": (["in.onnx", "nodir/out.onnx"], "does not exist"),
    "output-is-folder": (["in.onnx", "dir"], "folder"),
    "unknown-option": (["in.onnx", "out.onnx", "--bogus"], "--bogus"),
    "missing-output-argument": (["in.onnx"], "OUT"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(work: Path, model_bytes: bytes, case: str) -> None:
    setup, message = BAD[case]
    args = setup(work) if callable(setup) else setup
    before = listing(work)
    line = assert_one_line_error(cli(*args, cwd=work))
    assert message in line, line
    assert (work / "in.onnx").read_bytes() == model_bytes
    assert listing(work) == before  # no output, no data file, no temp file, no new folder


def test_bad_external_data_input(work: Path) -> None:
    onnx.save(tiny_model(), str(work / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    (work / "ext.onnx.data").unlink()
    before = listing(work)
    line = assert_one_line_error(cli("ext.onnx", "out.onnx", "--structured", "0.4", cwd=work))
    assert "ext.onnx.data" in line
    assert listing(work) == before


def test_unsupported_opset_input(work: Path) -> None:
    onnx.save(tiny_model(opset=9), str(work / "old.onnx"))
    before = listing(work)
    line = assert_one_line_error(cli("old.onnx", "out.onnx", cwd=work))
    assert "opset 9" in line
    assert listing(work) == before


def test_report_is_a_folder(work: Path) -> None:
    before = listing(work)
    assert_one_line_error(cli("in.onnx", "out.onnx", "--no-validate", "--report", "dir", cwd=work))
    assert listing(work) == before


def test_inspect_conv_bn_channels_are_prunable(work: Path) -> None:
    spaces = strict_json(cli("inspect", "in.onnx", "--json", cwd=work).stdout)
    for space in spaces:
        for reason in space["pinned_by"]:
            assert not reason.startswith(" ") and not reason.startswith("("), f"empty pin reason: {reason!r}"
    conv1 = next(s for s in spaces if s["label"] == "Conv 'conv1' output channels")
    assert conv1["prunable"], conv1["pinned_by"]


def test_inspect_external_data_model(work: Path) -> None:
    onnx.save(tiny_model(), str(work / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    result = cli("inspect", "ext.onnx", "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    assert strict_json(result.stdout)


@pytest.mark.parametrize("name", ["missing.onnx", "notes.onnx"])
def test_inspect_bad_input(work: Path, name: str) -> None:
    (work / "notes.onnx").write_text("not a model\n")
    before = listing(work)
    line = assert_one_line_error(cli("inspect", name, "--json", cwd=work))
    assert name in line
    assert listing(work) == before
