"""What `bench.suite` runs: the rows (tool, mode, arguments) of every model's table, the child
process that runs one of them, and the search that gives onnxsim the same FLOPs budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._suite_measure import TEXT, Bench, first_line, stats

ROOT = Path(__file__).resolve().parent.parent
CALIB = "CALIB"  # replaced by the model's calibration .npz
SPARSE_CALIB = "SPARSE_CALIB"  # replaced by its smaller subset for the 2:4 rows
CHILD_TIMEOUT_S = 600
SEARCH_MAX = 0.95  # highest onnxsim `sparsity` tried when matching a budget
HEADS = {"minilm": 0.25, "tinylm": 0.5}  # minilm: 3 of 12 heads; tinylm (GQA 4 q / 2 kv): 1 of 2 KV groups
GROUP_BUDGET = {
    "channels": "FLOPs of `onnxprune l1` at --structured r; Torch-Pruning removes the same channels (matched "
                "group by group), onnxsim's `sparsity` is searched to the same FLOPs",
    "heads": "FLOPs of `onnxprune heads` at --heads h; onnxsim's `sparsity` searched to the same FLOPs",
    "blocks": "FLOPs of `onnxprune drop 1` (one residual block); onnxsim's `sparsity` (fraction of "
              "transformer blocks) searched to the same FLOPs",
    "2:4": "the 2:4 pattern itself: 2 of every 4 consecutive weights of the layers each tool supports",
}


def rows_for(name: str, ratio: float, quick: bool, sparse: bool) -> list[dict[str, Any]]:
    """Every row of one model's table; the first row of each group is its budget anchor."""
    r = ratio
    rows: list[dict[str, Any]] = [
        # Exact counts: Torch-Pruning and onnxsim are matched to them channel for channel.
        {"group": "channels", "method": "onnxprune l1", "tool": "onnxprune", "arg": f"--structured {r} --round-to 1",
         "options": {"structured": r, "criterion": "l1", "round_to": 1}},
        {"group": "channels", "method": "onnxprune wanda+comp", "tool": "onnxprune", "arg": f"--structured {r} --calib",
         "options": {"structured": r, "calib": CALIB}},
        {"group": "channels", "method": "onnxprune l1 x16", "tool": "onnxprune", "matched": False,
         "arg": f"--structured {r} --round-to 16", "options": {"structured": r, "criterion": "l1", "round_to": 16}},
        {"group": "channels", "method": "tp l1", "tool": "torch_pruning", "tp_method": "tp l1", "ratio": r,
         "arg": "MagnitudeImportance(p=1)"},
        {"group": "channels", "method": "tp taylor", "tool": "torch_pruning", "tp_method": "tp taylor", "ratio": r,
         "calib": True, "arg": "TaylorImportance()"},
        {"group": "channels", "method": "onnxsim l1", "tool": "onnxsim", "function": "apply_structured_pruning",
         "kwargs": {"importance_norm": "l1"}},
        {"group": "channels", "method": "onnxsim wanda", "tool": "onnxsim",
         "function": "apply_structured_wanda_pruning", "kwargs": {}, "calib": True},
    ]
    if name in TEXT:
        rows = [row for row in rows if row["method"] != "onnxprune l1 x16"]  # 1536/384-wide FFNs: rounding is moot
        h = HEADS[name]
        rows += [
            {"group": "heads", "method": "onnxprune heads", "tool": "onnxprune", "arg": f"--heads {h}",
             "options": {"heads": h, "criterion": "l1"}},
            {"group": "heads", "method": "onnxprune heads calib", "tool": "onnxprune",
             "arg": f"--heads {h} --calib --criterion contribution",
             "options": {"heads": h, "calib": CALIB, "criterion": "contribution"}},
            {"group": "heads", "method": "onnxsim heads", "tool": "onnxsim", "function": "apply_attention_head_pruning",
             "kwargs": {}},
            {"group": "heads", "method": "onnxsim heads wanda", "tool": "onnxsim",
             "function": "apply_attention_head_wanda_pruning", "kwargs": {}, "calib": True},
            {"group": "blocks", "method": "onnxprune drop 1", "tool": "onnxprune", "arg": "--drop-layers 1",
             "options": {"drop_layers": 1}},
            {"group": "blocks", "method": "onnxprune drop 1 calib", "tool": "onnxprune",
             "arg": "--drop-layers 1 --calib", "options": {"drop_layers": 1, "calib": CALIB}},
            {"group": "blocks", "method": "onnxsim blocks", "tool": "onnxsim",
             "function": "apply_transformer_block_pruning", "kwargs": {}, "calib": True},
        ]
    if sparse:
        rows += [
            {"group": "2:4", "method": "onnxprune 2:4", "tool": "onnxprune-cli", "args": ["--sparse", "2:4"],
             "arg": "--sparse 2:4 (magnitude)"},
            {"group": "2:4", "method": "onnxprune 2:4 calib", "tool": "onnxprune-cli",
             "args": ["--sparse", "2:4", "--calib", SPARSE_CALIB], "arg": "--sparse 2:4 --calib (sparsegpt)"},
            {"group": "2:4", "method": "onnxsim magnitude 2:4", "tool": "onnxsim",
             "function": "apply_magnitude_pruning", "kwargs": {"sparsity": 0.5, "n": 2, "m": 4}, "search": False},
            {"group": "2:4", "method": "onnxsim sparsegpt 2:4", "tool": "onnxsim",
             "function": "apply_sparsegpt_pruning", "kwargs": {"sparsity": 0.5, "n": 2, "m": 4}, "calib": SPARSE_CALIB,
             "search": False},
        ]
    if quick:
        keep = {"onnxprune l1", "onnxprune wanda+comp", "tp l1", "onnxsim l1"}
        rows = [row for row in rows if row["method"] in keep]
    return rows


def onnxprune_has_sparse() -> bool:
    """Whether this onnxprune's `prune` takes `--sparse` (2:4 sparsity, being added now)."""
    done = subprocess.run([sys.executable, "-m", "onnxprune", "prune", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    return "--sparse" in done.stdout


def run_child(job: dict[str, Any], work: Path, tag: str) -> dict[str, Any]:
    """Run one tool job in a fresh Python process (bench._suite_child); return its result."""
    job_path = work / f"job_{tag}.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    try:
        # cwd: onnxsim writes a scratch file (sym_shape_infer_temp.onnx) into the working directory
        done = subprocess.run([sys.executable, "-m", "bench._suite_child", str(job_path)], cwd=work, env=env,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {CHILD_TIMEOUT_S} s", "process_s": CHILD_TIMEOUT_S}
    result_path = job_path.with_suffix(".result.json")
    if not result_path.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()
        result = {"ok": False, "error": f"child exited {done.returncode}: {tail[-1] if tail else ''}"[:300]}
    else:
        result = json.loads(result_path.read_text())
    result["process_s"] = time.perf_counter() - started
    return result


def child_job(row: dict[str, Any], bench: Bench, target: Path) -> dict[str, Any]:
    """The job of `row` on `bench`, with `row['sparsity']` set for onnxsim."""
    def data(value: Any) -> Any:
        """A calibration placeholder (or `calib: True`: the whole set) as a path; other values as they are."""
        if value is True or value == CALIB:
            return str(bench.calib)
        return str(bench.sparse_calib) if value == SPARSE_CALIB else value

    job: dict[str, Any] = {"tool": row["tool"], "source": str(bench.dense), "target": str(target)}
    if row["tool"] == "onnxprune":
        job["options"] = {key: data(value) for key, value in row["options"].items()}
    elif row["tool"] == "onnxprune-cli":
        job["args"] = [data(arg) for arg in row["args"]]
    elif row["tool"] == "onnxsim":
        job.update(function=row["function"], kwargs=onnxsim_kwargs(row), calib=data(row.get("calib")))
    else:
        job.update(model=bench.name, method=row["tp_method"], ratio=row["ratio"], state=bench.state,
                   calib=data(row.get("calib")))
    return job


def onnxsim_kwargs(row: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(row["kwargs"])
    if "sparsity" in row:
        kwargs["sparsity"] = row["sparsity"]
    return kwargs


def onnxsim_call(row: dict[str, Any], calib_batch: int = 8) -> str:
    """The exact call, as recorded in the results."""
    kwargs = onnxsim_kwargs(row)
    if row.get("calib"):
        which = "the 2:4 subset of the calibration set" if row["calib"] == SPARSE_CALIB else "the calibration set"
        kwargs["calibration_data"] = f"<{which} as feed dicts of {calib_batch} samples>"
    return f"onnxsim.{row['function']}(model, " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def search_sparsity(row: dict[str, Any], bench: Bench, target_kept: float, dense_flops: int, work: Path,
                    steps: int) -> dict[str, Any]:
    """The onnxsim `sparsity` whose result keeps the FLOPs fraction closest to `target_kept`:
    one probe at SEARCH_MAX (if even that keeps more, it is the closest reachable), then bisection.
    Runs in this process: it only picks the argument; the timed run is a child's."""
    import onnx
    import onnxsim

    from ._suite_child import onnxsim_calibration

    function = getattr(onnxsim, row["function"])
    kwargs = dict(row["kwargs"])
    if row.get("calib"):
        kwargs["calibration_data"] = onnxsim_calibration(str(bench.calib), 8)
    probes: list[tuple[float, float]] = []
    failures: list[tuple[float, str]] = []
    probe_path = work / "probe.onnx"

    def kept_at(sparsity: float) -> float | None:
        here = os.getcwd()
        try:  # some sparsities fail on some models, or give a file onnxprune cannot load (mobile): try less
            os.chdir(work)  # onnxsim writes a scratch file into the working directory
            try:
                onnx.save(function(str(bench.dense), sparsity=sparsity, **kwargs), probe_path)
            finally:
                os.chdir(here)
            kept = stats(probe_path, bench.shapes)["flops"] / dense_flops
        except Exception as exc:
            failures.append((sparsity, first_line(exc)))
            return None
        probes.append((sparsity, kept))
        return kept

    started = time.perf_counter()
    kept = kept_at(SEARCH_MAX)
    if kept is None or kept <= target_kept:  # else even the most it removes is less than the budget
        low, high = 0.0, SEARCH_MAX
        for _ in range(steps):
            middle = (low + high) / 2
            kept = kept_at(middle)
            if kept is not None and kept > target_kept:
                low = middle
            else:  # removed enough, or failed: go lower
                high = middle
    found: dict[str, Any] = {"target_kept_flops": target_kept, "probes": probes, "failures": failures,
                             "seconds": time.perf_counter() - started}
    if not probes:  # the child's run at the nominal ratio records the failure
        return {"sparsity": None, "reached": False, **found}
    best = min(probes, key=lambda p: (abs(p[1] - target_kept), p[0]))
    return {"sparsity": round(best[0], 4), "kept_flops": best[1], "reached": abs(best[1] - target_kept) <= 0.02,
            **found}
