"""Budget by quality (--max-error): remove as much as possible while the outputs stay within an error.

The search space is the sensitivity curves (passes/sensitivity.py): for a FLOPs goal the greedy
allocation picks per-space ratios with the least added error per FLOP saved. Here the FLOPs goal is
the unknown: a bisection over it finds the deepest cut whose error, measured on calibration feeds
held out from everything that was fitted (scores, curves, compensation), is at most --max-error.

Each trial is measured like the curves are: the plan's channels zeroed in one ORT session whose
weights can be overridden, which behaves exactly as the removal without compensation (the
zero-oracle). Compensation, on by default with --calib, only refits what is kept, so the estimate is
an upper bound in the usual case; the pruned model itself is measured on the same held-out feeds
afterwards (QualityCheck) and a miss is said loudly, never hidden.
"""

from __future__ import annotations

import numpy as np

from onnxprune.calib.data import CalibrationData
from onnxprune.check.fidelity import choose_layout, relative_error
from onnxprune.check.runtime import first_line, session_options
from onnxprune.errors import InvalidOptionError, ValidationError
from onnxprune.io.model import Model
from onnxprune.pipeline import Context
from onnxprune.report import progress

from .allocation import allocate_exact
from .sensitivity import (
    RATIOS,
    TargetBudget,
    _session_with_overridable,
    interpolated,
    sensitivity_curves,
    zeroed_weights,
)

# Goals (fraction of FLOPs kept) tried from the top until one fails; then bisection between the
# deepest that passed and the first that failed.
LADDER = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)
BISECTIONS = 4


def split_calibration(calibration: CalibrationData, option: str = "--max-error") -> tuple[CalibrationData,
                                                                                           CalibrationData]:
    """(fit, held out): every fourth feed, at least one, is held out for judging the result."""
    feeds = list(calibration.feeds)
    if len(feeds) < 2:
        raise InvalidOptionError(f"{option} holds calibration batches out to judge the result, and --calib gave "
                                 f"{len(feeds)} batch: give more samples or a smaller --calib-batch")
    held_index = set(range(len(feeds) - 1, -1, -4))
    fit = [feed for index, feed in enumerate(feeds) if index not in held_index]
    held = [feed for index, feed in enumerate(feeds) if index in held_index]

    def rows(part: list[dict[str, np.ndarray]]) -> int:
        return sum(next(iter(feed.values())).shape[0] if feed else 0 for feed in part)

    return (CalibrationData(fit, calibration.source, rows(fit)),
            CalibrationData(held, f"{calibration.source} (held out)", rows(held)))


class HeldOutJudge:
    """Outputs of the original model on held-out feeds, and the error of a zeroed or pruned model on them."""

    def __init__(self, model: Model, held: CalibrationData, weights: list[str]):
        self.session = _session_with_overridable(model, weights)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.feeds = list(held)
        self.reference = [self.session.run(self.outputs, feed) for feed in self.feeds]
        self.layouts = [choose_layout(np.asarray(value)) for value in self.reference[0]]

    def zeroed_error(self, zeroed: dict[str, np.ndarray]) -> float:
        results = [self.session.run(self.outputs, {**feed, **zeroed}) for feed in self.feeds]
        return relative_error(self.layouts, self.reference, results)

    def model_error(self, model: Model) -> float:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(model.to_proto().SerializeToString(), session_options(),
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's pybind exceptions share no base but Exception
            raise ValidationError(f"onnxruntime cannot run the pruned model: {first_line(exc)}") from None
        names = [o.name for o in session.get_outputs()]
        by_name = [dict(zip(names, session.run(names, feed))) for feed in self.feeds]
        return relative_error(self.layouts, self.reference, [[got[name] for name in self.outputs] for got in by_name])


class QualityBudget(TargetBudget):
    """The largest FLOPs cut (sensitivity allocation) whose held-out output error is at most `max_error`."""

    def __init__(self, fit: CalibrationData, held: CalibrationData, max_error: float, shapes: dict,
                 round_to: int = 1, alignment=None):
        if not max_error > 0:
            raise InvalidOptionError(f"--max-error must be > 0, got {max_error}")
        super().__init__(fit, 0.5, "flops", shapes, round_to, alignment)
        self.held, self.max_error = held, max_error
        self.judge: HeldOutJudge | None = None
        self.name = "plan-max-error"

    def run(self, context: Context) -> None:
        model, graph = context.model, context.channel_graph()
        plan_costs, total = self._plan_costs(context)
        feeds, grid = self._curve_feeds(context)  # held within a FLOPs budget, as for --target-flops
        curves = sensitivity_curves(model, graph, context.scores, feeds, grid, log=context.log)
        curves = [interpolated(curve, RATIOS) for curve in curves] if grid != RATIOS else curves
        weights = sorted({m.tensor for space in graph.prunable if space.id in context.scores
                          for m in space.weight_members})
        judge = self.judge = HeldOutJudge(model, self.held, weights)  # QualityCheck reuses its references
        trials: list[dict] = []
        best: tuple[dict, dict, float, float] | None = None  # (ratios, plan, error, kept) of the deepest passing
        bar = progress.bar(context.log, "quality search", total=len(LADDER) + BISECTIONS, unit="trial")

        def trial(goal: float) -> bool:
            nonlocal best
            ratios = allocate_exact(curves, plan_costs, total, goal)
            plan = self._plan(context, context.scores, ratios)
            error = judge.zeroed_error(zeroed_weights(model, graph, plan))
            kept = self._measure(context, plan, total) if plan else 1.0
            passed = error <= self.max_error
            trials.append({"flops_goal": round(goal, 4), "flops_kept": round(kept, 4), "error": error,
                           "passed": passed})
            bar.update()
            bar.set_postfix_str(f"kept {kept:.3f}, error {error:.4g}")
            if passed and (best is None or kept < best[3]):
                best = (ratios, plan, error, kept)
            return passed

        passed_goal, failed_goal = 1.0, None
        for goal in LADDER:
            if not trial(goal):
                failed_goal = goal
                break
            passed_goal = goal
        if failed_goal is not None:
            for _ in range(BISECTIONS):
                middle = (passed_goal + failed_goal) / 2
                if trial(middle):
                    passed_goal = middle
                else:
                    failed_goal = middle
        bar.close()
        ratios, context.plan, error, kept = best if best else ({}, {}, 0.0, 1.0)
        context.report["sensitivity"] = [curve.to_dict() for curve in curves]
        context.report["quality_search"] = trials
        context.report["budget"] = {
            "max_error": self.max_error, "estimated_error": error, "flops_kept_planned": round(kept, 4),
            "held_out": {"batches": len(self.held), "samples": self.held.samples, "source": self.held.source},
            "fit": {"batches": len(self.calibration), "samples": self.calibration.samples},
            "ratios": {str(k): v for k, v in ratios.items() if v}}
        if not context.plan:
            smallest = min((t["error"] for t in trials), default=float("nan"))
            context.report.setdefault("notes", []).append(
                f"--max-error {self.max_error:g}: no cut kept the held-out error within it (the smallest cut tried "
                f"gave {smallest:.4g}); nothing was removed")


class HeldOutCompensation:
    """Compensation judged on the held-out feeds: a refit on a few samples can fit them and move
    everything else (PP-OCRv5 rec, 7 fit words: held-out error 0.013 with the removed channels
    zeroed, 0.043 after the refit). The refit is kept only when the held-out error does not rise."""

    name = "compensate-held-out"

    def __init__(self, compensate, budget: QualityBudget):
        self.compensate, self.budget = compensate, budget

    def run(self, context: Context) -> None:
        model, budget = context.model, context.report.get("budget") or {}
        if self.budget.judge is None or not context.plan:
            self.compensate.run(context)
            return
        before = {name: model.weight(name) for name in model.weights}  # set_weight replaces arrays, never edits
        self.compensate.run(context)
        refit = self.budget.judge.model_error(_removed_copy(context))
        zeroed = budget.get("estimated_error", float("inf"))
        record = context.report.setdefault("compensation", {})
        record["held_out_error"] = {"zeroed": zeroed, "refit": refit}
        if refit > zeroed:
            for name, array in before.items():
                if name in model.weights and model.weight(name) is not array:
                    model.set_weight(name, array)
            record["kept"] = False
            context.report.setdefault("notes", []).append(
                f"compensation raised the held-out error from {zeroed:.4g} to {refit:.4g} (it fit the "
                f"{self.budget.calibration.samples} calibration samples, not the data): the refit was undone")
        else:
            record["kept"] = True


class QualityCheck:
    """After the rewrite (and compensation): the pruned model's own held-out error, against --max-error."""

    name = "check-max-error"

    def __init__(self, budget: QualityBudget):
        self.budget = budget

    def run(self, context: Context) -> None:
        judge, report = self.budget.judge, context.report.get("budget") or {}
        if judge is None or "max_error" not in report:
            return
        report["achieved_error"] = judge.model_error(context.model)
        self.budget.judge = None  # frees the session and the reference outputs before saving


def _removed_copy(context: Context) -> Model:
    """The model as it will be written: a copy (sharing unchanged weights) with the plan removed."""
    from .remove_channels import RemoveChannels

    trial = Context(context.model.copy(), options=dict(context.options))
    trial.plan = context.plan
    RemoveChannels().run(trial)
    return trial.model
