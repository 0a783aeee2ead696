"""Latency of several models measured in one process, run by run in alternation."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxprune.errors import InvalidOptionError, OnnxPruneError, ValidationError

from ..check import runtime


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock time of one `session.run` call, over `runs` timed runs."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_interleaved(
    sessions: Mapping[str, ort.InferenceSession],
    feed_for: Mapping[str, Mapping[str, np.ndarray]],
    warmup: int = 3,
    runs: int = 20,
) -> dict[str, LatencyStats]:
    """Time every session `runs` times, alternating between them after `warmup` untimed runs each.

    Interleaving makes frequency scaling, thermal throttling and background load hit all
    models alike, so their ratio is meaningful even on a noisy machine.
    """
    if warmup < 0:
        raise InvalidOptionError(f"--warmup must be zero or more, got {warmup}")
    if runs < 1:
        raise InvalidOptionError(f"--runs must be at least 1, got {runs}")
    missing = [name for name in sessions if name not in feed_for]
    if missing:
        raise ValueError(f"no feed given for session(s): {', '.join(missing)}")

    def runner(name: str) -> Callable[[], object]:
        session, feed = sessions[name], dict(feed_for[name])

        def run_once() -> object:
            try:
                return session.run(None, feed)
            # ORT's exceptions share no base but Exception; see runtime.create_session.
            except Exception as exc:
                raise ValidationError(
                    f"onnxruntime failed to run '{name}': {runtime.first_line(exc)}"
                ) from exc

        return run_once

    return measure_callables({name: runner(name) for name in sessions}, warmup=warmup, runs=runs)


def measure_callables(
    runners: Mapping[str, Callable[[], object]],
    warmup: int = 3,
    runs: int = 20,
) -> dict[str, LatencyStats]:
    """Time zero-argument callables (one inference each) like `measure_interleaved` times sessions.

    For runners that are not ONNX Runtime sessions: IO-bound GPU sessions, TensorRT engines. A
    runner must return only when its work is done (synchronize a GPU stream before returning).
    Errors other than onnxprune's own become a ValidationError naming the runner.
    """
    if warmup < 0:
        raise InvalidOptionError(f"--warmup must be zero or more, got {warmup}")
    if runs < 1:
        raise InvalidOptionError(f"--runs must be at least 1, got {runs}")
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            _call(name, runners[name])

    times_ns: dict[str, list[int]] = {name: [] for name in names}
    for index in range(runs):
        # Reverse the order every other round so no model always runs right after another
        # one (and inherits, or loses, its cache state).
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            run_once = runners[name]
            start = time.perf_counter_ns()
            _call(name, run_once)
            times_ns[name].append(time.perf_counter_ns() - start)
    return {name: _stats(times_ns[name]) for name in names}


def _call(name: str, run_once: Callable[[], object]) -> None:
    try:
        run_once()
    except OnnxPruneError:
        raise
    except Exception as exc:
        raise ValidationError(f"failed to run '{name}': {runtime.first_line(exc)}") from exc


def _stats(times_ns: list[int]) -> LatencyStats:
    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    return LatencyStats(
        median_ms=float(np.median(ms)),
        p90_ms=float(np.percentile(ms, 90)),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        runs=len(times_ns),
    )


def speedup(before: LatencyStats, after: LatencyStats) -> float:
    """Median-time ratio before/after: above 1 means the pruned model is faster."""
    if after.median_ms <= 0:
        return float("inf")
    return before.median_ms / after.median_ms


def throughput(stats: LatencyStats, batch: int) -> float:
    """Samples per second at the median latency (`batch` samples per run)."""
    if stats.median_ms <= 0:
        return float("inf")
    return batch * 1000.0 / stats.median_ms
