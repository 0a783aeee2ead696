"""Per-layer pruning ratios for decoder language models: what a uniform ratio gets wrong on an LLM.

A decoder's layers are not alike. The first and last blocks are fragile (they turn tokens into the
residual stream and the stream into logits; ShortGPT, SLEB and LLM-Pruner leave them whole), and
layers whose channel scores hold many outliers carry the few channels the model cannot lose (OWL,
Yin et al. 2024: "outlier weighed layerwise sparsity"). So instead of the same ratio everywhere:

- spaces are ordered by depth (where in the graph their weights are first read); the first and last
  `protect` spaces of each kind keep every channel (`protected_count`: 2 of 30 layers);
- the others share the budget by OWL's rule: a space's *outlier density* D is the fraction of its
  channel scores above `OUTLIER_MULTIPLE` x their mean; ratios run linearly from target + LAMBDA
  (the fewest outliers) to target - LAMBDA (the most), then are shifted so that the channel-weighted
  mean ratio is what was asked (--structured / --heads), or is searched for a --target-params /
  --target-flops goal on exact counts of the pruned graph.

Used for a model whose structure is a decoder LM (an embedding lookup from input ids and a projection
to the same vocabulary reaching an output: deps/decoder.py), or when asked with --allocation llm.
"""

from __future__ import annotations

import numpy as np

from onnxprune.deps import ChannelGraph
from onnxprune.deps.decoder import find_decoder_parts
from onnxprune.io.model import Model
from onnxprune.measure.alignment import Alignment
from onnxprune.pipeline import Context
from onnxprune.plan import lowest

from .budget import aligned_plan, space_multiples

OUTLIER_MULTIPLE = 5.0  # OWL's M: a score above M x the layer's mean is an outlier
LAMBDA = 0.08  # OWL's lambda: the most a layer's ratio departs from the mean
MAX_RATIO = 0.9  # no space loses more than this, whatever the others keep
MAX_MEAN = 0.7  # a target goal is reached with channel spaces up to this mean ratio before heads go
LAYERS_PER_PROTECTED = 15  # one protected block at each end per this many blocks (2 of SmolLM2's 30)


def protected_count(layers: int) -> int:
    """Blocks kept whole at each end: none for a net of a few blocks, 2 for 30, 5 for 80."""
    return round(layers / LAYERS_PER_PROTECTED)


def outlier_density(scores: np.ndarray) -> float:
    values = np.asarray(scores, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or not np.any(finite > 0):
        return 0.0
    return float(np.mean(values > OUTLIER_MULTIPLE * finite.mean()))


def depth_order(model: Model, graph: ChannelGraph, spaces: list[int]) -> list[int]:
    """`spaces` from the input side to the output side: by the first node that reads their weights."""
    position = {id(node): index for index, node in enumerate(model.graph.node)}

    def first_read(space_id: int) -> int:
        readers = [position[id(node)] for member in graph.space(space_id).weight_members
                   for node, _ in model.consumers(member.tensor) if id(node) in position]
        return min(readers, default=len(position))

    return sorted(spaces, key=lambda space: (first_read(space), space))


def shape_ratios(order: list[int], scores: dict[int, np.ndarray], protect: int) -> dict[int, float | None]:
    """Each space's offset from the base ratio (None: protected, keeps everything): OWL's
    outlier-weighted shape, before `scale` fits it to a budget."""
    free = order[protect:len(order) - protect] if len(order) > 2 * protect else order
    density = np.array([outlier_density(scores[space]) for space in free])
    spread = density.max() - density.min() if density.size else 0.0
    # Fewest outliers -> +LAMBDA, most -> -LAMBDA (absolute ratios, added to the base `scale` finds).
    offsets = (1 - 2 * (density - density.min()) / spread) * LAMBDA if spread > 0 else np.zeros(len(free))
    shape = dict.fromkeys(order, None)
    for space, offset in zip(free, offsets):
        shape[space] = float(offset)
    return shape


def scale(shape: dict[int, float | None], sizes: dict[int, int], mean: float) -> dict[int, float]:
    """Ratios with the channel-weighted mean `mean` over all spaces (protected ones count, at 0):
    free spaces get base + offset, base found by bisection, each clipped to [0, MAX_RATIO]."""
    free = {space: offset for space, offset in shape.items() if offset is not None}
    total = sum(sizes.values())
    if not free or mean <= 0:
        return dict.fromkeys(shape, 0.0)

    def ratios(base: float) -> dict[int, float]:
        return {space: (min(max(base + offset, 0.0), MAX_RATIO) if offset is not None else 0.0)
                for space, offset in shape.items()}

    def removed(base: float) -> float:
        return sum(ratio * sizes[space] for space, ratio in ratios(base).items()) / total

    low, high = -1.0, 1.0 + LAMBDA
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if removed(middle) < mean else (low, middle)
    return ratios(high)


def plan_from_ratios(scores: dict[int, np.ndarray], ratios: dict[int, float]) -> dict[int, np.ndarray]:
    """The lowest-scored channels of each space, counts rounded by largest remainder so that the total
    is what the ratios ask (three KV groups at 0.39 each must not all round down to one)."""
    wanted = {space: ratio * scores[space].size for space, ratio in ratios.items()}
    counts = {space: min(int(np.floor(value + 1e-9)), scores[space].size - 1) for space, value in wanted.items()}
    spare = round(sum(wanted.values())) - sum(counts.values())
    for space in sorted(wanted, key=lambda s: (-(wanted[s] - np.floor(wanted[s])), s)):
        if spare <= 0:
            break
        if 0 < wanted[space] and counts[space] < scores[space].size - 1:
            counts[space] += 1
            spare -= 1
    return {space: lowest(scores[space], count) for space, count in counts.items() if count > 0}


class LLMBudget:
    """Per-space ratios for a decoder LLM: --structured / --heads as mean ratios, or a --target-params /
    --target-flops goal (module docstring). Not a decoder LM (and not forced): `fallback` plans."""

    name = "plan-llm"

    def __init__(self, channels: float = 0.0, heads: float = 0.0, alignment: Alignment | None = None,
                 shapes: dict | None = None, round_to: int = 1, target: tuple[str, float] | None = None,
                 fallback=None, forced: bool = False):
        self.means = {"channels": channels, "heads": heads}
        self.alignment, self.shapes, self.round_to = alignment, shapes, round_to
        self.target, self.fallback, self.forced = target, fallback, forced

    def run(self, context: Context) -> None:
        if not self.forced and not find_decoder_parts(context.model).is_language_model:
            if self.fallback is not None:
                self.fallback.run(context)
                return
        shapes = {kind: self._shape(context, kind) for kind in self.means}
        if self.target is not None:
            self.means = self._search(context, shapes)
        ratios: dict[int, float] = {}
        for kind, mean in self.means.items():
            ratios.update(scale(*shapes[kind], mean) if shapes[kind] and mean > 0 else {})
        context.plan = self.plan(context, ratios)
        protected = [space for kind in shapes if shapes[kind] and self.means[kind] > 0
                     for space, offset in shapes[kind][0].items() if offset is None]
        report_allocation(context, ratios, self.means, protected, self.target)

    def _shape(self, context: Context, kind: str) -> tuple[dict[int, float | None], dict[int, int]] | None:
        graph = context.channel_graph()
        spaces = [space.id for space in graph.prunable if space.kind == kind and space.id in context.scores]
        if not spaces:
            return None
        order = depth_order(context.model, graph, spaces)
        return (shape_ratios(order, context.scores, protected_count(len(order))),
                {space: graph.space(space).size for space in order})

    def _search(self, context: Context, shapes: dict) -> dict[str, float]:
        """Mean ratios that keep `target` of the parameters (or FLOPs), to first order (a channel of a
        space costs what its weights' share of their layers costs: exact for parameters). The FFN-like
        channel spaces go first; heads only when the channels alone cannot reach the goal."""
        from onnxprune.check.stats import parameter_count

        from .budget import channel_costs

        metric, goal = self.target
        model, graph = context.model, context.channel_graph()
        if metric == "params":
            costs = {space.id: sum(member.block / model.weights[member.tensor].shape[member.axis]
                                   * float(np.prod(model.weights[member.tensor].shape))
                                   for member in space.weight_members) for space in graph.prunable}
            total = float(parameter_count(model.weights.values()))
        else:
            costs = channel_costs(model, graph, self.shapes)
            total = _total_flops(model, self.shapes)
        wanted = (1 - goal) * total

        def removed(means: dict[str, float]) -> float:
            return sum(ratio * shapes[kind][1][space] * costs.get(space, 0.0)
                       for kind, mean in means.items() if shapes[kind]
                       for space, ratio in scale(*shapes[kind], mean).items())

        means = {"channels": 0.0, "heads": 0.0}
        for kind in ("channels", "heads"):
            if not shapes[kind]:
                continue
            top = dict(means, **{kind: MAX_MEAN})
            if removed(top) <= wanted:
                means = top
                continue
            low, high = 0.0, MAX_MEAN
            for _ in range(40):
                middle = (low + high) / 2
                low, high = (middle, high) if removed(dict(means, **{kind: middle})) < wanted else (low, middle)
            means[kind] = high
            break
        self.estimate = 1 - removed(means) / max(total, 1.0)
        return means

    def plan(self, context: Context, ratios: dict[int, float]) -> dict[int, np.ndarray]:
        graph = context.channel_graph()
        scores = {space: context.scores[space] for space in ratios}
        plan = plan_from_ratios(scores, ratios)
        channel_spaces = [space for space in ratios if graph.space(space).kind == "channels"]
        multiples = space_multiples(context.model, graph, channel_spaces, self.round_to, self.alignment)
        if multiples:
            aligned = aligned_plan(context.model, graph, {s: scores[s] for s in channel_spaces},
                                   {s: plan[s] for s in channel_spaces if s in plan}, multiples, self.shapes)
            plan = {**{s: p for s, p in plan.items() if s not in channel_spaces}, **aligned}
        return {space: indices for space, indices in plan.items() if len(indices)}


def _total_flops(model: Model, shapes: dict | None) -> float:
    from onnxprune.check import counts
    from onnxprune.check.stats import folded_light_proto

    return float(counts.count_flops(folded_light_proto(model, shapes or {}), shapes or {}).total)


def report_allocation(context: Context, ratios: dict[int, float], means: dict, protected: list[int],
                      target: tuple[str, float] | None) -> None:
    graph = context.channel_graph()
    context.report["allocation"] = {
        "method": "llm: first/last blocks protected, OWL outlier-weighted ratios",
        "outlier_multiple": OUTLIER_MULTIPLE, "lambda": LAMBDA,
        "means": {kind: round(mean, 4) for kind, mean in means.items()},
        "ratios": {str(space): round(ratio, 4) for space, ratio in ratios.items()},
        "protected": [graph.space(space).label for space in protected],
        **({"target": {target[0]: target[1]}} if target else {}),
    }
