"""--target-latency: the sensitivity allocation of --target-flops, with each space's cost the time of the
layers it touches (the latency model, measure/latency_model.py) instead of their FLOPs, then the whole
pruned model timed against the original a few times to correct the first-order model.

Sensitivity curves and layer timings are computed once; each correction only removes channels from a
copy and times it (seconds), where the former bisection pruned and timed five whole models (minutes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from onnxprune.io.saving import save_model
from onnxprune.pipeline import Context

from .sensitivity import TargetBudget, space_costs

TOLERANCE = 0.03  # wall-clock ratios move by a few percent run to run on a busy machine


class LatencyBudget(TargetBudget):
    def __init__(self, calibration, target: float, shapes: dict, round_to: int = 1, alignment=None,
                 runs: int = 30):
        super().__init__(calibration, target, "latency", shapes, round_to, alignment)
        self.runs = runs
        self._folder: Path | None = None  # the original and the candidates, saved to be timed

    def run(self, context: Context) -> None:
        with tempfile.TemporaryDirectory(prefix="onnxprune-latency-") as folder:
            self._folder = Path(folder)
            save_model(context.model.copy(), self._folder / "original.onnx")
            super().run(context)
        self._folder = None

    def _costs(self, context: Context):
        from onnxprune.measure.latency_model import layer_latencies

        model, graph = context.model, context.channel_graph()
        by_node = layer_latencies(model, self.shapes, log=context.log)
        costs = space_costs(model, graph, by_node)
        context.report["latency_model"] = {"layers_timed": len(by_node),
                                           "layers_seconds": round(sum(by_node.values()), 6)}
        return costs, (float(sum(by_node.values())) or 1.0, 1.0), 0

    def _better(self, kept: float, best: float) -> bool:
        """Meeting the goal first; among plans that meet it, the one that keeps the most."""
        meets, best_meets = kept <= self.target, best <= self.target
        if meets != best_meets:
            return meets
        return kept > best if meets else kept < best

    def _close_enough(self, kept: float) -> bool:
        return self.target - TOLERANCE <= kept <= self.target

    def _measure(self, context: Context, plan: dict[int, np.ndarray], total: float) -> float:
        """Latency of the pruned copy over the original's, timed interleaved in one process."""
        from onnxprune.check import runtime
        from onnxprune.measure import latency

        from .remove_channels import RemoveChannels

        copy = context.model.copy()
        trial = Context(copy, options=dict(context.options))
        trial.plan = plan
        RemoveChannels().run(trial)
        feed = next(iter(self.calibration))
        candidate = save_model(copy, self._folder / "candidate.onnx")
        sessions = {"original": runtime.create_session(self._folder / "original.onnx"),
                    "pruned": runtime.create_session(candidate)}
        timing = latency.measure_interleaved(sessions, {"original": feed, "pruned": feed}, runs=self.runs)
        ratio = timing["pruned"].median_ms / timing["original"].median_ms
        context.report.setdefault("latency_search", {"target": self.target, "trials": []})["trials"].append(
            {"plan_spaces": len(plan), "latency_ratio": round(ratio, 4)})
        return ratio
