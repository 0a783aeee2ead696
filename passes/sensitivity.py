"""Sensitivity: how much the outputs move when one space alone loses a fraction of its channels,
and per-space ratios that reach a FLOPs or parameter target with the least total error.

Pruning a space is simulated by zeroing its channels' weights (the zero-oracle in reverse: zeroed
channels behave exactly as removed ones). The zeroed weights are fed to one ONNX Runtime session
as inputs that override the initializers, so no model is rebuilt per measurement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from onnx import helper

from onnxprune.calib.data import CalibrationData
from onnxprune.check.fidelity import choose_layout, relative_error
from onnxprune.check.runtime import first_line, session_options
from onnxprune.check.stats import parameter_count
from onnxprune.deps import ChannelGraph
from onnxprune.errors import InvalidOptionError, ValidationError
from onnxprune.io.model import Model
from onnxprune.pipeline import Context
from onnxprune.plan import Budget, lowest, removal_count
from onnxprune.report import progress

from .allocation import allocate_exact

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
# The curves run the model once per (space, ratio, feed): ddddocr_det (73 spaces, 6.4 GFLOPs at 416x416)
# on 8 feeds took over 10 minutes. Their FLOPs are held to about this many, about a minute of ORT CPU
# on 2 shared cores here (~50 GFLOP/s measured on ddddocr_det), by measuring on fewer feeds.
SENSITIVITY_FLOPS = 3e12


@dataclass
class Curve:
    space: int
    label: str
    kind: str
    size: int
    ratios: list[float] = field(default_factory=list)
    # Per output, the mean over its channels of ||dy_c||^2 / ||y_c||^2, averaged over the outputs
    # (fidelity.relative_error).
    errors: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"space": self.space, "label": self.label, "kind": self.kind, "size": self.size,
                "ratios": self.ratios, "errors": self.errors}


def _session_with_overridable(model: Model, names: list[str]):
    """An ORT session in which the given initializers can be replaced by feeds."""
    import onnxruntime as ort

    proto = model.to_proto()
    declared = {value.name for value in proto.graph.input}
    for tensor in proto.graph.initializer:
        if tensor.name in names and tensor.name not in declared:
            proto.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    try:
        return ort.InferenceSession(proto.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's pybind exceptions share no base but Exception
        raise ValidationError(f"onnxruntime cannot run the model to measure sensitivity: {first_line(exc)}") from None


def sensitivity_curves(
    model: Model,
    graph: ChannelGraph,
    scores: dict[int, np.ndarray],
    calibration: CalibrationData,
    ratios: tuple[float, ...] = RATIOS,
    log: Callable[[str], None] = lambda message: None,
    max_feeds: int | None = None,
) -> list[Curve]:
    """One curve per prunable space; `max_feeds` measures on the first feeds only (sensitivity_feeds)."""
    spaces = [space for space in graph.prunable if space.id in scores]
    weights = sorted({m.tensor for space in spaces for m in space.weight_members})
    session = _session_with_overridable(model, weights)
    outputs = [o.name for o in session.get_outputs()]
    feeds = list(calibration)[:max_feeds]
    reference = [session.run(outputs, feed) for feed in feeds]
    # The error is scale-robust (check/fidelity.py): every channel of every output weighs the same, so
    # a detector's box coordinates in pixels cannot hide ruined class scores in 0..1.
    layouts = [choose_layout(np.asarray(value)) for value in reference[0]] if reference else []
    curves = []
    bar = progress.bar(log, "sensitivity", total=len(spaces), unit="space")
    for space in spaces:
        curve = Curve(space.id, space.label, space.kind, space.size)
        for ratio in ratios:
            count = removal_count(space.size, Budget(ratio))
            if count == 0:
                continue
            plan = {space.id: lowest(scores[space.id], count)}
            zeroed = zeroed_weights(model, graph, plan)
            results = [session.run(outputs, {**feed, **zeroed}) for feed in feeds]
            curve.ratios.append(ratio)
            curve.errors.append(relative_error(layouts, reference, results))
        curves.append(curve)
        bar.update()
    bar.close()
    return curves


def zeroed_weights(model: Model, graph: ChannelGraph, plan: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights a plan touches with its channels zeroed (feeds for a session that overrides them)."""
    zeroed: dict[str, np.ndarray] = {}
    for (tensor, axis), indices in graph.removal({k: list(v) for k, v in plan.items()}).items():
        if model.is_weight(tensor):
            array = np.array(zeroed.get(tensor, model.weight(tensor)))
            np.moveaxis(array, axis, 0)[indices] = 0
            zeroed[tensor] = array
    return zeroed


def space_costs(model: Model, graph: ChannelGraph, node_flops: dict[str, int]) -> dict[int, tuple[float, float]]:
    """(FLOPs, parameters) that one channel of each space accounts for, to first order: each weight
    member's layer loses that fraction of its FLOPs and parameters."""
    costs = {}
    for space in graph.prunable:
        flops = params = 0.0
        for member in space.weight_members:
            shape = model.weights[member.tensor].shape
            fraction = member.block / shape[member.axis]
            params += fraction * float(np.prod(shape))
            for node, _ in model.consumers(member.tensor):
                flops += fraction * node_flops.get(node.output[0], 0)
        costs[space.id] = (flops, params)
    return costs


def sensitivity_feeds(spaces: int, flops_per_feed: float, feeds: int, ratios: int = len(RATIOS),
                      budget: float | None = None) -> int:
    """How many calibration feeds the curves are measured on: all of them while the runs (one per space,
    ratio and feed) stay within `budget` FLOPs, fewer beyond, at least one. Counted, not timed, so the
    same model and data give the same plan on any machine and under any load."""
    budget = SENSITIVITY_FLOPS if budget is None else budget
    runs_per_feed = max(spaces * ratios, 1) * max(flops_per_feed, 1.0)
    return max(1, min(feeds, int(budget // runs_per_feed)))


def interpolated(curve: Curve, ratios: tuple[float, ...]) -> Curve:
    """The curve on a finer grid, linear between its measured points (and from no error at ratio 0);
    ratios that remove no channel of the space are left out, as sensitivity_curves leaves them."""
    if not curve.ratios:
        return curve
    errors = np.interp(ratios, [0.0, *curve.ratios], [0.0, *curve.errors])
    kept = [(r, float(e)) for r, e in zip(ratios, errors)
            if r <= curve.ratios[-1] + 1e-9 and removal_count(curve.size, Budget(r)) > 0]
    return Curve(curve.space, curve.label, curve.kind, curve.size, [r for r, _ in kept], [e for _, e in kept])


def _rows_scale(feed: dict[str, np.ndarray], shapes: dict) -> float:
    """A feed's leading dimension over the one FLOPs were counted at (feeds may batch several rows)."""
    for name, value in feed.items():
        shape = shapes.get(name)
        if shape and np.ndim(value) and isinstance(shape[0], int) and shape[0] > 0:
            return np.shape(value)[0] / shape[0]
    return 1.0


class TargetBudget:
    """Per-space ratios from sensitivity curves, to reach --target-flops or --target-params."""

    def __init__(self, calibration: CalibrationData, target: float, metric: str, shapes: dict, round_to: int = 1,
                 alignment=None):
        if not 0 < target < 1:
            raise InvalidOptionError(f"--target-{metric} must be in (0, 1), got {target}")
        self.calibration, self.target, self.metric, self.shapes, self.round_to = (
            calibration, target, metric, shapes, round_to)
        self.alignment = alignment  # measure.alignment.Alignment: the device's channel multiples, or None
        self.name = f"plan-target-{metric}"

    def run(self, context: Context) -> None:
        model, graph = context.model, context.channel_graph()
        plan_costs, total = self._plan_costs(context)
        feeds, grid = self._curve_feeds(context)
        curves = sensitivity_curves(model, graph, context.scores, feeds, grid, log=context.log)
        curves = [interpolated(curve, RATIOS) for curve in curves] if grid != RATIOS else curves
        ties = self._tie_costs(context)
        # The plan's cost is exact per weighted layer (PlanCosts) but not for what alignment moves or what
        # the model spends outside those layers; measure each plan and correct the internal target.
        internal, candidates, trials = self.target, [], []
        bar = progress.bar(context.log, f"target search ({self.metric})", total=8, unit="trial")
        for _ in range(8):
            ratios = allocate_exact(curves, plan_costs, total, internal, ties, realized=self.metric == "flops")
            if any(ratios == earlier for earlier, _, _ in candidates):
                break  # the internal target moved but the plan did not: no plan lies between those tried
            plan = self._plan(context, context.scores, ratios)
            kept = self._measure(context, plan, total)
            trials.append({"internal_target": round(internal, 4), "kept": round(kept, 4)})
            candidates.append((ratios, plan, kept))
            bar.update()
            bar.set_postfix_str(f"kept {kept:.3f}, goal {self.target:.3f}")
            if self._close_enough(kept):
                break
            internal = self._next_target(trials)
        bar.close()
        ratios, context.plan, kept = self._choose(candidates, trials)
        context.report["target_search"] = trials
        context.report["sensitivity"] = [curve.to_dict() for curve in curves]
        context.report["budget"] = {"target": {self.metric: self.target}, "achieved": round(kept, 4),
                                    "ratios": {str(k): v for k, v in ratios.items() if v}}

    def _flops(self, context: Context):
        """counts.FlopsReport of the model at self.shapes, counted once per run."""
        from onnxprune.check import counts as metrics
        from onnxprune.check.stats import folded_light_proto

        if getattr(self, "_flops_report", None) is None or self._flops_report[0] is not context.model:
            report = metrics.count_flops(folded_light_proto(context.model, self.shapes), self.shapes)
            self._flops_report = (context.model, report)
        return self._flops_report[1]

    def _plan_costs(self, context: Context):
        """budget.PlanCosts of the target's metric, and the model's total of it."""
        from .budget import PlanCosts

        model, graph = context.model, context.channel_graph()
        if self.metric == "flops":
            flops = self._flops(context)
            return PlanCosts(model, graph, flops.by_node, list(context.scores)), float(flops.total)
        return PlanCosts(model, graph, None, list(context.scores)), float(parameter_count(model.weights.values()))

    def _curve_feeds(self, context: Context) -> tuple[list[dict[str, np.ndarray]], tuple[float, ...]]:
        """The calibration feeds the sensitivity curves are measured on (sensitivity_feeds) and their ratio
        grid: every other ratio, interpolated between, when even one feed on the full grid is over budget;
        then, if that one feed is a batch, its first rows only (at least one)."""
        feeds = list(self.calibration)
        try:
            flops = float(self._flops(context).total) * _rows_scale(feeds[0], self.shapes) if feeds else 0.0
        except Exception:  # FLOPs that cannot be counted: measure on every feed, as before
            return feeds, RATIOS
        spaces = sum(1 for space in context.channel_graph().prunable if space.id in context.scores)
        grid = RATIOS if spaces * len(RATIOS) * flops <= SENSITIVITY_FLOPS else RATIOS[::2]
        used = feeds[:sensitivity_feeds(spaces, flops, len(feeds), len(grid))]
        rows = {np.shape(value)[0] if np.ndim(value) else None for value in used[0].values()} if used else set()
        if len(used) == 1 and len(rows) == 1 and (None not in rows) and next(iter(rows)) > 1:
            count = next(iter(rows))
            # Leading dims all equal: a batch of `count` rows, each about flops / count.
            keep = sensitivity_feeds(spaces, flops / count, count, len(grid))
            used = [{name: value[:keep] for name, value in used[0].items()}]
            flops = flops * keep / count
        first = next(iter(used[0].values()), None) if used else None
        context.report["sensitivity_feeds"] = {"used": len(used), "of": len(feeds), "flops_per_feed": flops,
                                               "rows_of_first": int(np.shape(first)[0]) if np.ndim(first) else None,
                                               "ratios_measured": list(grid)}
        return used, grid

    def _tie_costs(self, context: Context):
        """Seconds one channel of each space costs in the latency model (ORT CPU on this machine, cached), to
        break ties between equally sensitive cuts (and, under --target-flops, to weigh what a cut's FLOPs buy
        in time); None for another device, or when layers cannot be timed."""
        if self.alignment is not None and self.alignment.device != "cpu":
            return None
        try:
            return self._latency_costs(context)
        except Exception as exc:  # a refinement only: shapes that cannot be inferred, a layer ORT rejects
            context.report.setdefault("notes", []).append(f"latency tie-breaks skipped: {type(exc).__name__}")
            return None

    def _latency_costs(self, context: Context):
        """The latency model (weighted layers and the ops whose time follows their channels) as a
        budget.PlanCosts; None when no layer could be timed."""
        from onnxprune.measure.latency_model import TIMED_OPS, layer_latencies, static_shapes

        from .budget import PlanCosts

        by_node = layer_latencies(context.model, self.shapes, log=context.log, activations=True)
        weighted = {node.output[0] for node in context.model.graph.node if node.op_type in TIMED_OPS and node.output}
        if not weighted & set(by_node):
            # No weighted layer has static shapes (a dynamic input without --shapes): a few activations
            # timed alone are no model of the time, and as the allocation's unit they would rank every
            # cut by next to nothing (MiniLM-L3 without its mask's shape: --target-latency removed nothing).
            context.report.setdefault("notes", []).append(
                "latency model: no Conv/MatMul/Gemm could be timed alone (dynamic shapes? give --shapes)")
            return None
        timed = self._with_untimed_layers(context, by_node)
        context.report["latency_model"] = {
            "layers_timed": len(weighted & set(by_node)),
            "activation_ops_timed": len(set(by_node) - weighted),
            "layers_estimated_from_flops": len(set(timed) - set(by_node)),
            "seconds": round(sum(timed.values()), 6)}
        by_node = timed
        return PlanCosts(context.model, context.channel_graph(), by_node, list(context.scores),
                         static_shapes(context.model, self.shapes))

    def _with_untimed_layers(self, context: Context, by_node: dict[str, float]) -> dict[str, float]:
        """The latency model with a time for each weighted layer it could not time (no static shape, a
        layer ORT would not run alone): its FLOPs at the timed layers' seconds per FLOP. Without one, a
        `realized` allocation would see its cuts buy no time and never take them."""
        from onnxprune.measure.latency_model import TIMED_OPS

        try:
            flops = self._flops(context).by_node
        except Exception:  # FLOPs that cannot be counted: the timed layers only
            return by_node
        weighted = {node.output[0] for node in context.model.graph.node
                    if node.op_type in TIMED_OPS and node.output and flops.get(node.output[0], 0) > 0}
        timed = weighted & set(by_node)
        timed_flops = sum(flops[name] for name in timed)
        if not timed or timed_flops <= 0:
            return by_node
        rate = sum(by_node[name] for name in timed) / timed_flops
        return {**by_node, **{name: flops[name] * rate for name in weighted - timed}}

    def _better(self, kept: float, best: float) -> bool:
        return abs(kept - self.target) < abs(best - self.target)

    def _choose(self, candidates: list[tuple], trials: list[dict]) -> tuple:
        """The (ratios, plan, kept) the search keeps: the best trial by `_better`."""
        best = candidates[0]
        for candidate in candidates[1:]:
            if self._better(candidate[2], best[2]):
                best = candidate
        return best

    def _close_enough(self, kept: float) -> bool:
        return abs(kept - self.target) <= 0.01

    def _next_target(self, trials: list[dict]) -> float:
        """Secant step on (internal target -> measured fraction kept); a proportional step at first."""
        last = trials[-1]
        guess = last["internal_target"] * self.target / max(last["kept"], 1e-6)
        if len(trials) > 1:
            previous = trials[-2]
            slope = (last["kept"] - previous["kept"]) / (last["internal_target"] - previous["internal_target"] or 1e-9)
            if slope > 1e-6:
                guess = last["internal_target"] + (self.target - last["kept"]) / slope
        return min(max(guess, 0.01), 0.999)

    def _plan(self, context: Context, scores, ratios: dict[int, float]) -> dict[int, np.ndarray]:
        from .budget import aligned_plan, space_multiples

        graph = context.channel_graph()
        plan = {}
        for space, ratio in ratios.items():
            count = removal_count(graph.space(space).size, Budget(ratio))
            if count:
                plan[space] = lowest(scores[space], count)
        multiples = space_multiples(context.model, graph, list(ratios), self.round_to, self.alignment)
        return aligned_plan(context.model, graph, {space: scores[space] for space in ratios}, plan, multiples,
                            self.shapes)

    def _measure(self, context: Context, plan: dict[int, np.ndarray], total: float) -> float:
        """Fraction of FLOPs (or parameters) a plan keeps, measured on a pruned copy."""
        from onnxprune.check import counts as metrics
        from onnxprune.check.stats import folded_light_proto

        from .remove_channels import RemoveChannels

        copy = context.model.copy()  # shares the weights: to_proto + from_proto held the model twice more
        trial = Context(copy, options=dict(context.options))
        trial.plan = plan
        RemoveChannels().run(trial)
        if self.metric == "flops":
            value = metrics.count_flops(folded_light_proto(copy, self.shapes), self.shapes).total
        else:
            value = parameter_count(copy.weights.values())
        return float(value) / max(total, 1.0)
