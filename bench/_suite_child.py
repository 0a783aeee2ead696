"""One tool run of `bench.suite`, alone in its own process: `python -m bench._suite_child JOB.json`.

The parent writes a job (which tool, which model, which arguments), this process imports the
tool, times the call itself and writes `JOB.result.json` with the call's wall time, the process's
peak RSS (`VmHWM`: its own high-water mark, which starts afresh at `exec`) and its RSS just before
the call (imports and, for Torch-Pruning, the torch module already in memory). A failure becomes
one line in the result, never a crash of the suite.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


def onnxsim_calibration(path: str | None, batch: int) -> list[dict] | None:
    """The onnxprune calibration .npz cut into feed dicts of `batch` samples: the same data,
    in the form onnxsim's `calibration_data` takes (a sequence of {input name: array})."""
    if not path:
        return None
    import numpy as np

    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    count = len(next(iter(arrays.values())))
    return [{name: value[i:i + batch] for name, value in arrays.items()} for i in range(0, count, batch)]


def _run_onnxprune(job: dict) -> dict:
    import onnxprune

    options = onnxprune.PruneOptions(validate=False, **job["options"])
    rss_before = _status_kb("VmRSS")
    started = time.perf_counter()
    report = onnxprune.prune(job["source"], job["target"], options)
    seconds = time.perf_counter() - started
    spaces = [s for s in report.get("spaces", []) if s.get("prunable") and s.get("kind") == "channels"]
    return {"tool_s": seconds, "rss_before_mb": _mb(rss_before), "channels": sum(s["size"] for s in spaces),
            "kept": sum(s["kept"] for s in spaces)}


def _run_onnxprune_cli(job: dict) -> dict:
    from onnxprune.cli.app import main

    rss_before = _status_kb("VmRSS")
    started = time.perf_counter()
    main(args=[job["source"], job["target"], *job["args"], "--no-validate", "-q"], standalone_mode=False)
    return {"tool_s": time.perf_counter() - started, "rss_before_mb": _mb(rss_before)}


def _run_onnxsim(job: dict) -> dict:
    import onnx
    import onnxsim

    kwargs = dict(job["kwargs"])
    calibration = onnxsim_calibration(job.get("calib"), job.get("calib_batch", 8))
    if calibration is not None:
        kwargs["calibration_data"] = calibration
    function = getattr(onnxsim, job["function"])
    rss_before = _status_kb("VmRSS")
    started = time.perf_counter()
    model = function(job["source"], **kwargs)
    onnx.save(model, job["target"])  # onnxprune's time includes writing its output too
    return {"tool_s": time.perf_counter() - started, "rss_before_mb": _mb(rss_before)}


def _run_torch_pruning(job: dict) -> dict:
    import torch

    from . import _suite_tp

    torch.manual_seed(0)
    case = _suite_tp.tp_case(job["model"], job.get("calib"), job.get("state"))
    rss_before = _status_kb("VmRSS")
    started = time.perf_counter()
    kept = _suite_tp.prune(case, job["method"], job["ratio"], job.get("round_to", 1))
    seconds = time.perf_counter() - started
    exported = time.perf_counter()
    diff = _suite_tp.export(case, Path(job["target"]))
    return {"tool_s": seconds, "rss_before_mb": _mb(rss_before), "export_s": time.perf_counter() - exported,
            "export_max_abs_diff": diff, **kept}


RUNNERS = {"onnxprune": _run_onnxprune, "onnxprune-cli": _run_onnxprune_cli, "onnxsim": _run_onnxsim,
           "torch_pruning": _run_torch_pruning}


def main(job_path: str) -> int:
    job: dict[str, Any] = json.loads(Path(job_path).read_text())
    result: dict[str, Any] = {"ok": False}
    try:
        result.update(RUNNERS[job["tool"]](job))
        result["ok"] = True
    except BaseException as exc:  # any failure of the tool is a result, reported in one line
        lines = str(exc).strip().splitlines()
        result["error"] = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
        result["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    result["peak_rss_mb"] = _mb(_status_kb("VmHWM"))
    Path(job_path).with_suffix(".result.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
