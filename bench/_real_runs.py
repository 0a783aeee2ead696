"""One corpus model through one prune mode, as a user runs it, and everything measured about the result.

`bench.real_models` drives these: `prepare` fetches a model, builds its calibration loader and runs the
dense model on the eval feeds once; `run_mode` runs `python -m onnxprune IN OUT ... --json R.json` in a
subprocess and `judge` checks what it wrote (onnx.checker full check, ONNX Runtime on the real eval
feeds, the task metric against the dense outputs). Only numpy, onnx, onnxruntime and models.real are
imported here: onnxprune itself runs in the child, so a bench that runs for an hour always tests the
tree as it is when each run starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# (key, CLI arguments, what the model must have for the mode to apply: None, "heads" or "blocks")
MODES: dict[str, tuple[list[str], str | None]] = {
    "structured 0.4": (["--structured", "0.4"], None),
    "structured 0.2": (["--structured", "0.2"], None),
    "heads 0.25": (["--heads", "0.25"], "heads"),
    "drop-layers 1": (["--drop-layers", "1"], "blocks"),
    "sparse 2:4": (["--sparse", "2:4"], None),
    "target-flops 0.7": (["--target-flops", "0.7"], None),
}
NO_VALIDATE_MODE = "structured 0.4"
# The package is edited while the bench runs (several engineers share the tree): a run that dies
# importing it is retried after a pause rather than counted.
EDIT_ERRORS = {"ImportError", "ModuleNotFoundError", "SyntaxError", "IndentationError"}
EDIT_RETRIES, EDIT_WAIT_S = 3, 60

# The loader script --calib gets: it replays the feeds saved next to it, batch 1 each, in order.
# A script rather than an .npz of stacked arrays because some corpus models take feeds of varying
# length (the diacritizers, the romanizer decoders) and some only run at batch 1 (khmersm).
_LOADER = '''"""Calibration feeds of {name}: models.real.real_inputs({name!r}, "calib", n={n}) (bench.real_models)."""
from pathlib import Path

import numpy as np


def load_data():
    with np.load(Path(__file__).with_suffix(".npz"), allow_pickle=False) as archive:
        feeds = {{}}
        for key in archive.files:
            index, name = key.split("/", 1)
            feeds.setdefault(int(index), {{}})[name] = archive[key]
    for index in sorted(feeds):
        yield feeds[index]
'''


@dataclass
class Prepared:
    """A fetched corpus model with what every run of it shares."""

    name: str
    path: Path
    calib: Path  # the loader script
    eval_feeds: list[dict[str, np.ndarray]]
    dense: list[list[np.ndarray]]
    applies: dict[str, bool | None] = field(default_factory=dict)  # "heads"/"blocks" -> present (None: unknown)
    probe: dict[str, Any] = field(default_factory=dict)


def prepare(name: str, work: Path, n_calib: int, n_eval: int) -> Prepared:
    import models.real as real

    path = real.fetch(name)
    calib = write_calibration(name, real.real_inputs(name, "calib", n=n_calib), work, n_calib)
    eval_feeds = real.real_inputs(name, "eval", n=n_eval)
    dense = run_feeds(path, eval_feeds)
    probe = probe_model(path)
    applies = {"heads": _present(probe, "head_spaces"), "blocks": _present(probe, "blocks")}
    return Prepared(name, path, calib, eval_feeds, dense, applies, probe)


def _present(probe: dict[str, Any], key: str) -> bool | None:
    return None if key not in probe else probe[key] > 0


def write_calibration(name: str, feeds: list[dict[str, np.ndarray]], work: Path, n: int) -> Path:
    script = work / f"calib_{name}.py"
    np.savez(script.with_suffix(".npz"), **{f"{i}/{k}": v for i, feed in enumerate(feeds) for k, v in feed.items()})
    script.write_text(_LOADER.format(name=name, n=n))
    return script


def probe_model(path: Path) -> dict[str, Any]:
    """Whether the model has prunable attention-head spaces and residual blocks, so the bench runs
    --heads and --drop-layers only where they mean something. Asked of the current tree; when that
    fails (the tree is being edited) the modes run anyway and the CLI's own answer is recorded."""
    try:
        from onnxprune.passes.layers import find_blocks

        from onnxprune.deps import build_channel_graph
        from onnxprune.io.model import Model

        model = Model.load(str(path))
        spaces = build_channel_graph(model).spaces
        return {"spaces": len(spaces), "prunable_spaces": sum(1 for s in spaces if s.prunable),
                "head_spaces": sum(1 for s in spaces if s.kind == "heads" and s.prunable),
                "blocks": len(find_blocks(model))}
    except Exception as exc:  # any failure only means "unknown"
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_feeds(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]
    return [sess.run(None, {k: feed[k] for k in names}) for feed in feeds]


def first_line(text: str, limit: int = 300) -> str:
    lines = [line for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


def error_line(stderr: str) -> str:
    """The line that says why a run failed. Progress notes come first on stderr, so its first line is
    usually a note: take the CLI's own `onnxprune: ...` line, else the last line (a traceback's)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("onnxprune:"):
            return line[:400]
    return lines[-1][:400] if lines else ""


def run_mode(prep: Prepared, mode: str, calibrated: bool, validate: bool, work: Path, timeout: float) -> dict[str, Any]:
    args, _ = MODES[mode]
    tag = f"{prep.name}_{mode.replace(' ', '_').replace(':', '-')}_{'cal' if calibrated else 'df'}"
    tag += "" if validate else "_novalidate"
    out, report_path = work / f"{tag}.onnx", work / f"{tag}.json"
    argv = [sys.executable, "-m", "onnxprune", str(prep.path), str(out), *args]
    argv += ["--calib", str(prep.calib)] if calibrated else []
    argv += [] if validate else ["--no-validate"]
    argv += ["--json", str(report_path)]
    shown = ["onnxprune", "IN.onnx", "OUT.onnx", *args] + (["--calib", "CALIB.py"] if calibrated else [])
    row: dict[str, Any] = {"model": prep.name, "mode": mode, "calibrated": calibrated, "validate": validate,
                           "command": " ".join(shown + ([] if validate else ["--no-validate"]))}
    for attempt in range(EDIT_RETRIES + 1):
        started = time.perf_counter()
        row["exit"], stderr = _run(argv, timeout)
        row["seconds"] = round(time.perf_counter() - started, 1)
        if attempt == EDIT_RETRIES or not _mid_edit(row["exit"], stderr):
            break
        row["retries"] = attempt + 1
        time.sleep(EDIT_WAIT_S)
    if row["exit"] != 0:
        row["error"] = error_line(stderr) if row["exit"] != "timeout" else f"no result within {timeout:.0f} s"
        row["traceback"] = "Traceback (most recent call last)" in stderr
    if report_path.exists():
        row.update(read_report(report_path))
    if out.exists():
        row.update(judge(prep, out))
        row["wrote_model_on_failure"] = row["exit"] != 0
    for path in (out, out.with_name(out.name + ".data"), report_path):
        path.unlink(missing_ok=True)  # the next run's model goes where this one was: disk stays small
    return row


def _run(argv: list[str], timeout: float) -> tuple[int | str, str]:
    try:
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return "timeout", stderr


def _mid_edit(code: int | str, stderr: str) -> bool:
    """A traceback ending in an import or syntax error: the tree was caught half-edited by another
    engineer (see the module doc), not a finding about the model. Such a run is retried."""
    if code in (0, 2, "timeout") or "Traceback (most recent call last)" not in stderr:
        return False
    return error_line(stderr).split(":", 1)[0] in EDIT_ERRORS


def read_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"report_error": first_line(str(exc))}
    before, after = report.get("before") or {}, report.get("after") or {}
    row: dict[str, Any] = {}
    for key in ("params", "flops"):
        if before.get(key) and after.get(key) is not None:
            row[f"{key}_ratio"] = round(after[key] / before[key], 4)
    row["warnings"] = [{"code": w.get("code"), "message": first_line(w.get("message", ""), 400)}
                       if isinstance(w, dict) else {"code": None, "message": first_line(str(w), 400)}
                       for w in report.get("warnings") or []]
    row["notes"] = [first_line(n, 400) for n in report.get("notes") or []]
    row["channels_removed"] = report.get("channels_removed")
    sparsity = report.get("sparsity") or {}
    if sparsity.get("total_params"):
        # --sparse keeps every parameter (zeros are stored): the share made N:M sparse is the figure
        row["sparse_share"] = round(sparsity.get("sparse_params", 0) / sparsity["total_params"], 4)
        row["sparse_weights"] = sparsity.get("sparse_weights")
    row["prune_seconds"] = report.get("prune_seconds")
    validation = report.get("validation") or {}
    if validation:
        row["validation_inputs"] = validation.get("inputs")
        row["validation_ok"] = all(o.get("ok", True) for o in validation.get("outputs") or [])
    return row


def judge(prep: Prepared, path: Path) -> dict[str, Any]:
    """What a user gets: does the written file pass onnx's full check, run in ORT on the real eval
    feeds, and do the dense model's task as well as the dense model does?"""
    import onnx

    import models.real as real

    row: dict[str, Any] = {}
    try:
        onnx.checker.check_model(str(path), full_check=True)
        row["checker_ok"] = True
    except Exception as exc:  # the checker raises several types; any is a finding
        row["checker_ok"], row["checker_error"] = False, first_line(str(exc))
    try:
        outputs = run_feeds(path, prep.eval_feeds)
        row["ort_ok"] = True
    except Exception as exc:  # an ORT failure of any kind is the finding
        row["ort_ok"], row["ort_error"] = False, first_line(str(exc))
        outputs = None
    row["valid"] = row["checker_ok"] and row["ort_ok"]
    if outputs is not None:
        try:
            metric = real.task_metric(prep.name, prep.dense, outputs, prep.eval_feeds)
            row["task"] = {k: (v[:3] if isinstance(v, list) else v) for k, v in metric.items()}
        except Exception as exc:  # e.g. an output whose shape changed
            row["task_error"] = first_line(f"{type(exc).__name__}: {exc}")
    return row
