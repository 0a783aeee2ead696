"""--target-latency: the sensitivity allocation of --target-flops, with each space's cost the time of the
layers it touches (the latency model, measure/latency_model.py) instead of their FLOPs, then the whole
pruned model timed against the original a few times to correct what the model misses (the time outside
the weighted layers, and a smaller layer's lower speed per FLOP).

Sensitivity curves and layer timings are computed once; each correction only removes channels from a
copy and times it (seconds), where the former bisection pruned and timed five whole models (minutes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from onnxprune.errors import InvalidOptionError
from onnxprune.io.saving import save_model
from onnxprune.pipeline import Context

from .sensitivity import TargetBudget

TOLERANCE = 0.03  # wall-clock ratios move by a few percent run to run on a busy machine
# Each trial times rounds for about this many seconds of the original's time (at least `runs`, at most
# MAX_ROUNDS): 30 rounds of a 90 ms detector at load 3.5 on 2 cores measured the same plan at 0.53 and
# 0.65 of the original, enough to send the secant search astray.
TRIAL_SECONDS, MAX_ROUNDS = 4.0, 400


class LatencyBudget(TargetBudget):
    def __init__(self, calibration, target: float, shapes: dict, round_to: int = 1, alignment=None,
                 runs: int = 30):
        super().__init__(calibration, target, "latency", shapes, round_to, alignment)
        self.runs = runs
        self._folder: Path | None = None  # the original and the candidates, saved to be timed
        self._original = None  # the original's ORT session, made once for every trial

    def run(self, context: Context) -> None:
        with tempfile.TemporaryDirectory(prefix="onnxprune-latency-") as folder:
            self._folder = Path(folder)
            save_model(context.model.copy(), self._folder / "original.onnx")
            try:
                super().run(context)
            finally:
                self._folder, self._original = None, None

    def _plan_costs(self, context: Context):
        """The latency model's seconds per layer as a budget.PlanCosts, and the model's total of them."""
        costs = self._latency_costs(context)
        if costs is None:
            raise InvalidOptionError("--target-latency: no layer of this model could be timed alone in ONNX Runtime "
                                     "(no static shapes?); give --shapes for its dynamic inputs, or use --target-flops")
        return costs, costs.total or 1.0

    def _tie_costs(self, context: Context) -> None:
        return None  # the allocation's own cost is already the latency model

    def _better(self, kept: float, best: float) -> bool:
        """Meeting the goal first; among plans that meet it, the one that keeps the most."""
        meets, best_meets = kept <= self.target, best <= self.target
        if meets != best_meets:
            return meets
        return kept > best if meets else kept < best

    def _close_enough(self, kept: float) -> bool:
        return self.target - TOLERANCE <= kept <= self.target

    def _choose(self, candidates: list[tuple], trials: list[dict]) -> tuple:
        """With three trials or more, each plan is judged by the larger of its own timing and the
        least-squares line's ratio at its internal target: a plan that was timed low by a burst of other
        work would otherwise win and then miss the goal (winner's curse), and the line alone passed a plan
        timed at 0.74 for a goal of 0.7 when plans jump in steps (aligned channel counts). Its reported
        ratio stays the measured one."""
        fit = self._fit(trials)
        if fit is None:
            return super()._choose(candidates, trials)
        slope, intercept = fit
        smoothed = [(ratios, plan, max(kept, slope * trial["internal_target"] + intercept))
                    for (ratios, plan, kept), trial in zip(candidates, trials)]
        chosen = super()._choose(smoothed, trials)
        index = next(i for i, candidate in enumerate(smoothed) if candidate is chosen)
        return candidates[index]

    @staticmethod
    def _fit(trials: list[dict]) -> tuple[float, float] | None:
        """(slope, intercept) of the least-squares line internal target -> measured ratio, None when it
        cannot be trusted (fewer than three trials, one internal target, not increasing)."""
        if len(trials) < 3:
            return None
        internal = np.array([t["internal_target"] for t in trials])
        if np.ptp(internal) < 1e-6:
            return None
        slope, intercept = np.polyfit(internal, np.array([t["kept"] for t in trials]), 1)
        return (float(slope), float(intercept)) if slope > 1e-6 else None

    def _next_target(self, trials: list[dict]) -> float:
        """From the third trial on, a least-squares line through every trial (internal target -> measured
        ratio) instead of the secant through the last two: timed ratios are noisy, and a secant through two
        noisy points can step far off; the line averages the noise of all of them."""
        fit = self._fit(trials)
        if fit is None:
            return super()._next_target(trials)
        slope, intercept = fit
        return float(min(max((self.target - intercept) / slope, 0.01), 0.999))

    def _measure(self, context: Context, plan: dict[int, np.ndarray], total: float) -> float:
        """Latency of the pruned copy over the original's (timed_ratio)."""
        from onnxprune.check import runtime

        from .remove_channels import RemoveChannels

        copy = context.model.copy()
        trial = Context(copy, options=dict(context.options))
        trial.plan = plan
        RemoveChannels().run(trial)
        feed = next(iter(self.calibration))
        candidate = save_model(copy, self._folder / "candidate.onnx")
        if self._original is None:
            self._original = runtime.create_session(self._folder / "original.onnx", interleaved=True)
        ratio = timed_ratio(self._original, runtime.create_session(candidate, interleaved=True), feed, self.runs)
        context.report.setdefault("latency_search", {"target": self.target, "trials": []})["trials"].append(
            {"plan_spaces": len(plan), "latency_ratio": round(ratio, 4)})
        return ratio


def timed_ratio(original, candidate, feed: dict, runs: int) -> float:
    """The candidate's time over the original's: the median, over rounds that run both back to back (in
    alternating order), of the two times' ratio. A burst of other work on the machine then hits both
    sides of a ratio alike; a ratio of two medians mixes different bursts (the same plan measured 0.61
    to 0.70 of the original that way, at load 9 on 2 cores). At least `runs` rounds, more for a fast
    model (TRIAL_SECONDS of the original's time)."""
    import time

    sessions = (original, candidate)
    for session in sessions:  # warm-up: first runs allocate and pack weights
        for _ in range(2):
            session.run(None, feed)
    started = time.perf_counter()
    original.run(None, feed)
    rounds = max(runs, 1, min(MAX_ROUNDS, int(TRIAL_SECONDS / max(time.perf_counter() - started, 1e-6))))
    ratios = []
    for index in range(rounds):
        seconds = [0.0, 0.0]
        for which in ((0, 1) if index % 2 == 0 else (1, 0)):
            started = time.perf_counter()
            sessions[which].run(None, feed)
            seconds[which] = time.perf_counter() - started
        ratios.append(seconds[1] / seconds[0])
    return float(np.median(ratios))
