"""The child side of bench.prune_time: one operation (onnx load+save, a prune, a check of the output) in a
fresh process, whose peak RSS is then that operation's alone. Started as `python -m bench.prune_time --child MODE
SOURCE TARGET`; prints one `BENCH-RESULT {json}` line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

STRUCTURED = 0.4  # the fraction bench.prune_time measures (it reads it from here)
_REPO = Path(__file__).resolve().parent.parent

def _maxrss_bytes() -> int:
    """This process's peak RSS so far.

    Linux's VmHWM (the memory map's high-water mark) first: it starts afresh at exec. ru_maxrss
    does not: exec folds the parent's memory map into it, so a child of a big parent starts big.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    # Linux reports kilobytes, macOS bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _rss_now() -> dict[str, int]:
    """Current resident memory split into anonymous (heap, arrays) and file-backed (memory maps) bytes."""
    split = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                for key, label in (("RssAnon:", "anon"), ("RssFile:", "file")):
                    if line.startswith(key):
                        split[label] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return split


def _ru_maxrss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _child_save(source: str, target: str, external: bool = False) -> dict[str, Any]:
    import onnx

    baseline, split_imports = _maxrss_bytes(), _rss_now()
    started = time.perf_counter()
    model = onnx.load(source)
    loaded = time.perf_counter()
    after_load, split_load = _maxrss_bytes(), _rss_now()
    if external:
        onnx.save(model, target, save_as_external_data=True, location=f"{Path(target).name}.data")
    else:
        onnx.save(model, target)
    done = time.perf_counter()
    return {
        "rss_now_after_phase": {"imports": split_imports, "onnx.load": split_load, "onnx.save": _rss_now()},
        "wall_s": done - started,
        "phases_s": {"onnx.load": loaded - started, "onnx.save": done - loaded},
        "maxrss_after_phase": {"imports": baseline, "onnx.load": after_load, "onnx.save": _maxrss_bytes()},
        "baseline_rss": baseline,
        "peak_rss": _maxrss_bytes(),
    }


def _child_prune(source: str, target: str, profile: bool = False, validate: bool = False) -> dict[str, Any]:
    import onnxprune
    import onnxprune.api as api
    from onnxprune.io.model import Model

    # Time the phases of api.prune by wrapping what it calls (no change to onnxprune itself):
    # Model.load, model_stats (before and after), the passes (the report's pass_seconds), save_model.
    phases: dict[str, float] = {}
    marks: dict[str, int] = {}
    splits: dict[str, dict[str, int]] = {}

    def timed(label, func):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                key = label
                if label == "model_stats":  # runs twice: before, then after the passes
                    key = f"{label} (after)" if f"{label} (before)" in phases else f"{label} (before)"
                phases[key] = time.perf_counter() - start
                marks[key] = _maxrss_bytes()
                splits[key] = _rss_now()
        return wrapper

    original_load, original_save, original_stats = Model.load, api.save_model, api.model_stats
    held: dict[str, int] = {}

    def save_and_count(model, *args, **kwargs):
        held.update(held_bytes=model.held.held_bytes, spilled_bytes=model.held.spilled_bytes)
        return original_save(model, *args, **kwargs)

    Model.load = classmethod(timed("Model.load", original_load.__func__))
    api.save_model = timed("save_model", save_and_count)
    api.model_stats = timed("model_stats", original_stats)
    original_pipeline = api.run_pipeline
    api.run_pipeline = timed("passes", original_pipeline)
    original_compare = api.compare_models
    if validate:
        api.compare_models = timed("validation", original_compare)
    baseline, split_imports = _maxrss_bytes(), _rss_now()
    options = onnxprune.PruneOptions(structured=STRUCTURED, validate=validate)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    report = onnxprune.prune(source, target, options)
    wall = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
    Model.load, api.save_model, api.model_stats = original_load, original_save, original_stats
    api.run_pipeline, api.compare_models = original_pipeline, original_compare
    passes = {f"pass {name}": seconds for name, seconds in report.get("pass_seconds", {}).items()}
    phases.pop("passes", None)
    if passes and "passes" in marks:
        marks[list(passes)[-1]] = marks.pop("passes")
        splits[list(passes)[-1]] = splits.pop("passes")
    ordered = {}
    for key in ("Model.load", "model_stats (before)"):
        if key in phases:
            ordered[key] = phases[key]
    ordered.update(passes)
    for key in ("model_stats (after)", "save_model", "validation"):
        if key in phases:
            ordered[key] = phases[key]
    ordered["other"] = max(wall - sum(ordered.values()), 0.0)
    result = {
        "wall_s": wall,
        "phases_s": ordered,
        "maxrss_after_phase": {"imports": baseline, **marks},
        "rss_now_after_phase": {"imports": split_imports, **splits},
        "baseline_rss": baseline,
        "peak_rss": _maxrss_bytes(),
        "channels_removed": report.get("channels_removed"),
        "params_before": report["before"]["params"],
        "params_after": report["after"]["params"],
        "weights_held_in_memory_at_save": held.get("held_bytes"),
        "weights_spilled_to_disk": held.get("spilled_bytes"),
    }
    if validate:
        validation = report["validation"]
        result["validation"] = {"latency_mode": validation.get("latency_mode"), "speedup": validation["speedup"],
                                "outputs": validation["outputs"]}
    if profiler is not None:
        result["profile"] = _profile_top(profiler)
    return result


def _profile_top(profiler, count: int = 20) -> list[dict[str, Any]]:
    import pstats

    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        where = filename
        for marker in ("site-packages/", str(_REPO) + "/"):
            if marker in where:
                where = where.split(marker, 1)[1]
        rows.append({"function": f"{where}:{line}({func})", "calls": calls,
                     "tottime_s": round(tottime, 4), "cumtime_s": round(cumtime, 4)})
    rows.sort(key=lambda row: row["tottime_s"], reverse=True)
    return rows[:count]


def _child_verify(target: str) -> dict[str, Any]:
    """The pruned model is valid ONNX (full check, by path: the only way past 2 GB) and runs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    started = time.perf_counter()
    onnx.checker.check_model(target, full_check=True)
    checked = time.perf_counter()
    session = ort.InferenceSession(target, providers=["CPUExecutionProvider"])
    feed = {}
    for value in session.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in value.shape]
        dtype = np.float16 if value.type == "tensor(float16)" else np.float32
        feed[value.name] = np.random.default_rng(0).standard_normal(shape, dtype=np.float32).astype(dtype)
    outputs = session.run(None, feed)
    return {
        "checker_full_check": True,
        "checker_s": round(checked - started, 3),
        "ort_run_s": round(time.perf_counter() - checked, 3),
        "output_shapes": [list(o.shape) for o in outputs],
        "outputs_finite": bool(all(np.isfinite(o).all() for o in outputs)),
        "peak_rss": _maxrss_bytes(),
    }


def child_main(argv: list[str]) -> int:
    mode, source, target = argv
    if mode in ("save", "save-external"):
        result = _child_save(source, target, external=mode == "save-external")
    elif mode == "verify":
        result = _child_verify(target)
    elif mode in ("prune", "prune-profile", "prune-validate"):
        result = _child_prune(source, target, profile=mode == "prune-profile", validate=mode == "prune-validate")
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
    result["ru_maxrss"] = _ru_maxrss_bytes()
    print("BENCH-RESULT " + json.dumps(result))
    return 0
