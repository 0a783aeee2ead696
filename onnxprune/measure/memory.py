"""Peak host memory (RSS) of loading and running one model in ONNX Runtime, measured in a child process.

A child per model and provider, because a process's peak RSS only ever grows: measured in the
benchmarking process it would carry every model loaded before. The child imports only numpy and
onnxruntime, records its peak RSS before loading (the baseline: interpreter + libraries), creates
the session (graph optimizations, provider setup, weights), runs the model a few times on the same
feed as the timing runs, and reports its own peak: VmHWM from /proc/self/status on Linux (not
ru_maxrss, which Linux carries over from the parent across fork + exec), ru_maxrss elsewhere.
GPU memory is not included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError

CHILD = Path(__file__).with_name("_rss_child.py")
INCLUDES = (
    "peak resident set size (VmHWM on Linux, else ru_maxrss) of a fresh Python process that imported numpy "
    "and onnxruntime, loaded the feed, created the ONNX Runtime session and ran the model; "
    "baseline_rss_bytes is the peak before loading, "
    "model_rss_bytes the difference; host memory only (no GPU memory)"
)


def rss_supported() -> tuple[bool, str | None]:
    try:
        import resource  # noqa: F401  (POSIX only)
    except ImportError:
        return False, "peak RSS needs the POSIX resource module, which this platform lacks"
    return True, None


def peak_memory(
    model_path: str | os.PathLike[str],
    feed: Mapping[str, np.ndarray],
    providers: Sequence[str | tuple[str, dict[str, Any]]],
    threads: int | None = None,
    runs: int = 2,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Peak RSS of a child that loads `model_path` on `providers` and runs it `runs` times on `feed`."""
    supported, reason = rss_supported()
    if not supported:
        return {"available": False, "reason": reason}
    with tempfile.TemporaryDirectory(prefix="onnxprune-rss-") as folder:
        feed_path = Path(folder) / "feed.npz"
        np.savez(feed_path, **{name: np.asarray(value) for name, value in feed.items()})
        request = {
            "model": str(Path(model_path).resolve()),
            "feed": str(feed_path),
            "providers": [list(entry) if isinstance(entry, tuple) else entry for entry in providers],
            "threads": threads,
            "runs": runs,
        }
        # run_path keeps the package folder off sys.path (its module names could shadow others),
        # and cwd=folder keeps the caller's folder off it too.
        code = f"import runpy; runpy.run_path({str(CHILD)!r}, run_name='__main__')"
        try:
            done = subprocess.run([sys.executable, "-c", code, json.dumps(request)], cwd=folder,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ValidationError(f"measuring the memory of '{model_path}' took over {timeout} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"exit code {done.returncode}"
        raise ValidationError(f"measuring the memory of '{model_path}' failed in the child process: {detail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "available": True,
        "peak_rss_bytes": result["peak_rss_bytes"],
        "baseline_rss_bytes": result["baseline_rss_bytes"],
        "model_rss_bytes": result["peak_rss_bytes"] - result["baseline_rss_bytes"],
        "after_load_rss_bytes": result["after_load_rss_bytes"],
        "providers_used": result["providers_used"],
        "runs": runs,
        "includes": INCLUDES,
    }
