"""The check at the end of a prune: run original and result in ONNX Runtime on the same inputs."""

from __future__ import annotations

import os
from typing import Any

from . import compare, latency, runtime
from .inputs import model_input_specs, random_feeds, resolve_shapes
from .model import Model


def validation_inputs(model: Model, shapes: dict[str, tuple[int, ...]], seed: int):
    specs = [spec for spec in model_input_specs(model.proto) if not model.is_weight(spec.name)]
    resolved, notes = resolve_shapes(specs, shapes)
    return specs, resolved, notes


def compare_models(
    original: str | os.PathLike,
    pruned: str | os.PathLike,
    specs,
    resolved: dict[str, tuple[int, ...]],
    seed: int,
    runs: int = 20,
    samples: int = 2,
) -> dict[str, Any]:
    """Max errors over `samples` random feeds, and interleaved latency of both models."""
    sessions = {"original": runtime.create_session(original), "pruned": runtime.create_session(pruned)}
    feeds = random_feeds(specs, resolved, seed, count=samples)
    worst: dict[str, dict] = {}
    for feed in feeds:
        reference = runtime.run(sessions["original"], feed, label="original")
        result = runtime.run(sessions["pruned"], feed, label="pruned")
        for diff in compare.compare_outputs(reference, result):
            entry = diff.to_dict()
            previous = worst.get(diff.name)
            if previous is None or (entry.get("max_abs") or 0) > (previous.get("max_abs") or 0):
                worst[diff.name] = entry
    timing = latency.measure_interleaved(sessions, {name: feeds[0] for name in sessions}, runs=runs)
    return {
        "outputs": list(worst.values()),
        "samples": samples,
        "latency_ms": {name: stats.to_dict() for name, stats in timing.items()},
        "speedup": round(latency.speedup(timing["original"], timing["pruned"]), 4),
    }
