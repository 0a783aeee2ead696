"""Turn channel scores into a removal plan: --structured for channel spaces, --heads for head spaces.

Channel counts are then aligned to what the target runtime's kernels want (`--device`, or an explicit
`--round-to N`), with the rounding spread over the spaces so the FLOPs removed stay what was asked.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onnxprune.deps import ChannelGraph
from onnxprune.io.model import Model
from onnxprune.measure.alignment import Alignment
from onnxprune.pipeline import Context
from onnxprune.plan import Budget, align_removals, lowest, plan_global, plan_local


def space_multiples(model: Model, graph: ChannelGraph, spaces: list[int], round_to: int,
                    alignment: Alignment | None) -> dict[int, int]:
    """The multiple each channel space's kept count should be. An explicit --round-to applies to every
    space; a device alignment only to spaces of at least two multiples, since a smaller space aligned
    could only keep all or one block (and holds few FLOPs either way)."""
    if round_to > 1:
        return dict.fromkeys(spaces, round_to)
    if alignment is None:
        return {}
    multiples = {}
    for space_id in spaces:
        space = graph.space(space_id)
        ops = {node.op_type for member in space.weight_members for node, _ in model.consumers(member.tensor)}
        multiple = alignment.multiple_for(ops)
        if multiple > 1 and space.size >= 2 * multiple:
            multiples[space_id] = multiple
    return multiples


def channel_costs(model: Model, graph: ChannelGraph, shapes: dict | None) -> dict[int, float]:
    """FLOPs one channel of each space accounts for; parameters when FLOPs cannot be counted."""
    from onnxprune.check import counts
    from onnxprune.check.stats import folded_light_proto

    from .sensitivity import space_costs

    by_node: dict[str, int] = {}
    if shapes is not None:
        try:
            by_node = counts.count_flops(folded_light_proto(model, shapes), shapes).by_node
        except Exception:  # FLOPs are a refinement here: shape inference may fail on exotic graphs
            by_node = {}
    costs = space_costs(model, graph, by_node)
    use_flops = any(flops > 0 for flops, _ in costs.values())
    return {space: (flops if use_flops else params) for space, (flops, params) in costs.items()}


def aligned_plan(model: Model, graph: ChannelGraph, scores: dict[int, np.ndarray], plan: dict[int, np.ndarray],
                 multiples: dict[int, int], shapes: dict | None, min_keep: int = 1) -> dict[int, np.ndarray]:
    """`plan` with its removal counts aligned (align_removals); the lowest-scored channels go."""
    if not multiples:
        return plan
    wanted = {space: len(plan.get(space, ())) for space in scores}
    counts = align_removals(wanted, scores, multiples, channel_costs(model, graph, shapes), min_keep)
    return {space: lowest(scores[space], count) for space, count in counts.items() if count}


class ChannelBudget:
    name = "plan-channels"

    def __init__(self, budget: Budget, heads: Budget | None = None, alignment: Alignment | None = None,
                 shapes: dict | None = None):
        self.budgets = {"channels": budget, "heads": heads or Budget(0.0)}
        self.alignment, self.shapes = alignment, shapes

    def run(self, context: Context) -> None:
        graph = context.channel_graph()
        kinds = {space.id: space.kind for space in graph.spaces}
        context.plan = {}
        aligned: dict[int, int] = {}
        for kind, budget in self.budgets.items():
            scores = {space: values for space, values in context.scores.items() if kinds[space] == kind}
            if budget.ratio <= 0 or not scores:
                continue
            planner = plan_global if budget.global_ranking else plan_local
            plan = planner(scores, replace(budget, round_to=1))
            if kind == "channels":
                aligned = space_multiples(context.model, graph, list(scores), budget.round_to, self.alignment)
                plan = aligned_plan(context.model, graph, scores, plan, aligned, self.shapes, budget.min_keep)
            context.plan.update({space: indices for space, indices in plan.items() if len(indices)})
        context.report["budget"] = {
            kind: {"ratio": b.ratio, "global": b.global_ranking, "round_to": b.round_to}
            for kind, b in self.budgets.items()
        }
        if aligned:
            context.report["budget"]["alignment"] = {
                **(self.alignment.to_dict() if self.alignment and self.budgets["channels"].round_to <= 1 else
                   {"round_to": self.budgets["channels"].round_to}),
                "spaces": {str(space): multiple for space, multiple in sorted(aligned.items())},
            }


class PlanCosts:
    """What a plan of per-space removal counts keeps of a cost (FLOPs, seconds of the latency model, or
    parameters), counted per weight tensor: a layer whose weight loses a fraction a of its input axis and
    b of its output axis keeps (1 - a)(1 - b) of its cost. The per-channel costs of `space_costs` are
    first order: they count the corner a x b twice, so a plan built on them removed far less than asked
    (a --target-latency 0.6 search on ddddocr_det ran its internal goal down to 0.01 and stopped short).

    A node's cost goes to its largest prunable weight (a Conv's kernel, not its bias). A node with no
    prunable weight (an elementwise op, an attention score MatMul) is fixed cost, unless
    `activation_shapes` (tensor -> static shape) is given and its output is a member of a space: then its
    cost follows that tensor's channels (an activation over 40% fewer channels takes 40% less time).
    `node_costs` None counts parameters: every prunable weight's element count.
    """

    def __init__(self, model: Model, graph: ChannelGraph, node_costs: dict[str, float] | None,
                 spaces: list[int] | None = None, activation_shapes: dict[str, tuple] | None = None):
        chosen = set(spaces) if spaces is not None else {space.id for space in graph.prunable}
        # (tensor) -> axis -> [(space, block)]
        axes: dict[str, dict[int, list[tuple[int, int]]]] = {}
        for space in graph.prunable:
            if space.id not in chosen:
                continue
            for member in space.members:
                if member.is_weight or activation_shapes is not None:
                    axes.setdefault(member.tensor, {}).setdefault(member.axis, []).append((space.id, member.block))
        self.cost: dict[str, float] = {}
        self.total = 0.0  # every node's cost, fixed ones included
        dims: dict[str, tuple] = {}
        if node_costs is None:
            self.cost = {tensor: float(np.prod(model.weights[tensor].shape)) for tensor in axes
                         if model.is_weight(tensor)}
            self.total = sum(self.cost.values())
        else:
            for node in model.graph.node:
                value = float(node_costs.get(node.output[0], 0) if node.output else 0)
                self.total += max(value, 0.0)
                held = [name for name in node.input if name in axes and model.is_weight(name)]
                if value <= 0:
                    continue
                if held:
                    main = max(held, key=lambda name: (len(model.weights[name].shape),
                                                       int(np.prod(model.weights[name].shape))))
                elif activation_shapes is not None and node.output[0] in axes and activation_shapes.get(node.output[0]):
                    main = node.output[0]
                    dims[main] = tuple(activation_shapes[main])
                else:
                    continue
                self.cost[main] = self.cost.get(main, 0.0) + value
        self.dims = {tensor: dims.get(tensor) or model.weights[tensor].shape for tensor in self.cost}
        self.axes = {tensor: axes[tensor] for tensor in self.cost}
        self.tensors_of: dict[int, list[str]] = {}
        for tensor, by_axis in self.axes.items():
            for members in by_axis.values():
                for space, _ in members:
                    if tensor not in self.tensors_of.setdefault(space, []):
                        self.tensors_of[space].append(tensor)

    def _kept_fraction(self, tensor: str, removed: dict[int, int]) -> float:
        fraction = 1.0
        for axis, members in self.axes[tensor].items():
            gone = sum(removed.get(space, 0) * block for space, block in members)
            fraction *= max(0.0, 1.0 - gone / self.dims[tensor][axis])
        return fraction

    def removed(self, removed: dict[int, int]) -> float:
        """Cost the plan (space -> channels removed) takes away."""
        return sum(cost * (1.0 - self._kept_fraction(tensor, removed)) for tensor, cost in self.cost.items())

    def step_gain(self, removed: dict[int, int], space: int, count: int) -> float:
        """Cost saved by `space` going from its current removal to `count` channels removed."""
        after = {**removed, space: count}
        return sum(self.cost[t] * (self._kept_fraction(t, removed) - self._kept_fraction(t, after))
                   for t in self.tensors_of.get(space, ()))
