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

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


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
) -> list[Curve]:
    spaces = [space for space in graph.prunable if space.id in scores]
    weights = sorted({m.tensor for space in spaces for m in space.weight_members})
    session = _session_with_overridable(model, weights)
    outputs = [o.name for o in session.get_outputs()]
    feeds = list(calibration)
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
            zeroed = {}
            for (tensor, axis), indices in graph.removal({k: list(v) for k, v in plan.items()}).items():
                if model.is_weight(tensor):
                    array = np.array(zeroed.get(tensor, model.weight(tensor)))
                    np.moveaxis(array, axis, 0)[indices] = 0
                    zeroed[tensor] = array
            results = [session.run(outputs, {**feed, **zeroed}) for feed in feeds]
            curve.ratios.append(ratio)
            curve.errors.append(relative_error(layouts, reference, results))
        curves.append(curve)
        bar.update()
    bar.close()
    return curves


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


def allocate(curves: list[Curve], costs: dict[int, tuple[float, float]], totals: tuple[float, float],
             target: float, which: int) -> dict[int, float]:
    """Greedy: keep taking the step (one space to its next ratio) with the least added error per
    unit of cost saved, until the remaining cost is at most `target` of the total."""
    chosen = {curve.space: 0 for curve in curves}
    by_space = {curve.space: curve for curve in curves}
    goal = (1 - target) * totals[which]
    saved = 0.0

    def step(curve: Curve) -> tuple[float, float] | None:
        index = chosen[curve.space]
        if index >= len(curve.ratios):
            return None
        before_ratio = curve.ratios[index - 1] if index else 0.0
        before_error = curve.errors[index - 1] if index else 0.0
        gain = (curve.ratios[index] - before_ratio) * curve.size * costs[curve.space][which]
        return (curve.errors[index] - before_error) / max(gain, 1e-12), gain

    while saved < goal:
        options = [(step(curve), curve.space) for curve in curves]
        options = [(cost[0], cost[1], space) for cost, space in options if cost is not None and cost[1] > 0]
        if not options:
            break
        _, gain, space = min(options)
        chosen[space] += 1
        saved += gain
    return {space: by_space[space].ratios[index - 1] if index else 0.0 for space, index in chosen.items()}


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
        curves = sensitivity_curves(model, graph, context.scores, self.calibration, log=context.log)
        costs, totals, which = self._costs(context)
        # The cost model is first order (a layer losing inputs and outputs saves less than the sum);
        # measure the plan exactly and correct the internal target a few times.
        internal, best, trials = self.target, None, []
        bar = progress.bar(context.log, f"target search ({self.metric})", total=8, unit="trial")
        for _ in range(8):
            ratios = allocate(curves, costs, totals, internal, which)
            plan = self._plan(context, context.scores, ratios)
            kept = self._measure(context, plan, totals[which])
            trials.append({"internal_target": round(internal, 4), "kept": round(kept, 4)})
            bar.update()
            bar.set_postfix_str(f"kept {kept:.3f}, goal {self.target:.3f}")
            if best is None or self._better(kept, best[2]):
                best = (ratios, plan, kept)
            if self._close_enough(kept):
                break
            internal = self._next_target(trials)
        bar.close()
        ratios, context.plan, kept = best
        context.report["target_search"] = trials
        context.report["sensitivity"] = [curve.to_dict() for curve in curves]
        context.report["budget"] = {"target": {self.metric: self.target}, "achieved": round(kept, 4),
                                    "ratios": {str(k): v for k, v in ratios.items() if v}}

    def _costs(self, context: Context) -> tuple[dict[int, tuple[float, float]], tuple[float, float], int]:
        """Per-channel (FLOPs, parameters) of every space, the model's totals, and which one the target is on."""
        from onnxprune.check import counts as metrics
        from onnxprune.check.stats import folded_light_proto

        model, graph = context.model, context.channel_graph()
        flops = metrics.count_flops(folded_light_proto(model, self.shapes), self.shapes)
        costs = space_costs(model, graph, flops.by_node)
        params = float(parameter_count(model.weights.values()))
        return costs, (float(flops.total), params), 0 if self.metric == "flops" else 1

    def _better(self, kept: float, best: float) -> bool:
        return abs(kept - self.target) < abs(best - self.target)

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
