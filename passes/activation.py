"""Calibration-aware channel scores: what a channel actually contributes, not just its weights.

A space's score sums, over every consumer layer that reads its channels (MatMul, Gemm, Conv), a
criterion of the consumer's weight rows (one per input channel) and the activation statistics of
those channels. The criteria themselves live in `passes/criteria/`, one module each.
Spaces with no consumer these criteria understand keep their L1 magnitude.

Massive activations (Sun et al. 2024: a handful of channels whose values are hundreds of times the
typical one, on which an LLM's attention sinks and "super weights" depend) are never removed by a
calibrated criterion: a channel whose peak |x| over the calibration data is above MASSIVE_MULTIPLE x
the median channel's peak is ranked above every other channel of its space. A norm-based score
(Wanda's ||X_j||) usually ranks them high already, but a norm averages a few huge values over many
small ones and the product with a small weight column can still land low; the peak cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.calib.data import CalibrationData
from onnxprune.calib.statistics import collect_stats
from onnxprune.deps import ChannelSpace, Member
from onnxprune.io.model import Model
from onnxprune.pipeline import Context

from . import criteria
from .magnitude import group_norm

MASSIVE_MULTIPLE = 10.0  # peak |x| over the median channel's peak that marks a massive activation
# Attention heads (KV groups) under the default Wanda criterion are scored by their contribution
# ||X_h W_o,h||^2 to the output projection instead: a head's channels act together through the
# softmax, and the energy of what the head adds to the residual stream is what its removal takes
# away (SmolLM2-135M, one KV group of three removed per layer: perplexity 1.58x dense against 1.77x
# with per-channel Wanda sums; bench/llm.py).
HEAD_CRITERIA = {"wanda": "contribution"}


@dataclass
class ConsumerPair:
    """A weight that reads the space's channels, and the activation tensor it reads them from."""

    node: onnx.NodeProto
    weight: Member  # the weight's member on its input (K) axis
    x: str
    x_axis: int
    x_member: Member

    def matrix(self, model: Model) -> np.ndarray:
        """The weight as [K, outputs] in float64 (a view-free copy)."""
        array = np.asarray(model.weight(self.weight.tensor), dtype=np.float64)
        if self.node.op_type == "Conv":
            return array.reshape(array.shape[0], array.shape[1], -1).transpose(1, 0, 2).reshape(array.shape[1], -1)
        return array if self.weight.axis == 0 else array.T

    @property
    def linear(self) -> bool:
        """True when y = X W exactly (so a Gram-based refit is exact): MatMul, Gemm, 1x1 Conv."""
        return self.node.op_type != "Conv" or all(
            int(d) == 1 for d in _attr(self.node, "kernel_shape", [1]))


def _attr(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def consumer_pairs(model: Model, space: ChannelSpace) -> list[ConsumerPair]:
    pairs = []
    for member in space.weight_members:
        for node, index in model.consumers(member.tensor):
            if index != 1 or not node.input or model.is_weight(node.input[0]):
                continue
            x = node.input[0]
            if node.op_type == "MatMul" and member.axis == 0 and len(model.weights[member.tensor].shape) == 2:
                info = model.infer_shapes().get(x)
                if info is None or not info.shape:
                    continue
                x_axis = len(info.shape) - 1
            elif node.op_type == "Gemm" and not _attr(node, "transA", 0) and member.axis == (
                    1 if _attr(node, "transB", 0) else 0):
                x_axis = 1
            elif node.op_type == "Conv" and member.axis == 1 and _attr(node, "group", 1) == 1:
                x_axis = 1
            else:
                continue
            x_member = next((m for m in space.members if m.tensor == x and m.axis == x_axis
                             and m.offset == member.offset and m.block == member.block), None)
            if x_member is not None:
                pairs.append(ConsumerPair(node, member, x, x_axis, x_member))
    return pairs


def _per_channel(values: np.ndarray, member: Member, size: int) -> np.ndarray:
    window = values[member.offset:member.offset + size * member.block]
    return window.reshape(size, member.block).sum(axis=1)


def score_space(model: Model, space: ChannelSpace, pairs: list[ConsumerPair], stats, criterion: str) -> np.ndarray:
    formula = criteria.FORMULAS[criterion]
    total = np.zeros(space.size)
    for pair in pairs:
        values = formula(pair.matrix(model), stats[pair.x], pair, space)
        total += _per_channel(values, pair.x_member, space.size)
    return total


def massive_channels(space: ChannelSpace, pairs: list[ConsumerPair], stats) -> np.ndarray:
    """Channels of `space` that carry a massive activation in any consumer's input (module docstring)."""
    massive = np.zeros(space.size, dtype=bool)
    for pair in pairs:
        peak = stats[pair.x].peak
        if peak is None or peak.size == 0:
            continue
        median = float(np.median(peak))
        if median > 0:
            flags = (peak > MASSIVE_MULTIPLE * median).astype(np.float64)
            massive |= _per_channel(flags, pair.x_member, space.size) > 0
    return massive


def protect(scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Scores with the `keep` channels ranked above all others (finite, order among them kept)."""
    if not keep.any() or keep.all():
        return scores
    top = float(np.max(scores[~keep])) if np.isfinite(scores[~keep]).all() else 0.0
    raised = scores.copy()
    raised[keep] = top + 1.0 + np.abs(scores[keep])
    return raised


class ActivationScores:
    """Score every prunable space with a calibration-aware criterion."""

    def __init__(self, criterion: str, calibration: CalibrationData):
        assert criterion in criteria.FORMULAS
        self.criterion = criterion
        self.calibration = calibration
        self.name = f"score-{criterion}"

    def criterion_for(self, space: ChannelSpace) -> str:
        return HEAD_CRITERIA.get(self.criterion, self.criterion) if space.kind == "heads" else self.criterion

    def run(self, context: Context) -> None:
        model, graph = context.model, context.channel_graph()
        pairs = {space.id: consumer_pairs(model, space) for space in graph.prunable}
        requests = {pair.x: pair.x_axis for space_pairs in pairs.values() for pair in space_pairs}
        gram = {pair.x for space in graph.prunable if self.criterion_for(space) in criteria.NEEDS_GRAM
                for pair in pairs[space.id]}
        stats = collect_stats(model, requests, self.calibration, gram, log=context.log)
        context.scores = {}
        fallback, massive = [], {}
        for space in graph.prunable:
            criterion = self.criterion_for(space)
            usable = [p for p in pairs[space.id] if criterion not in criteria.NEEDS_GRAM or p.linear]
            if usable:
                scores = score_space(model, space, usable, stats, criterion)
                keep = massive_channels(space, usable, stats)
                if keep.any():
                    massive[str(space.id)] = np.flatnonzero(keep).tolist()
                context.scores[space.id] = protect(scores, keep)
            else:
                fallback.append(space.id)
                context.scores[space.id] = group_norm(model, space, 1)
        context.report["criterion"] = self.criterion
        if any(space.kind == "heads" for space in graph.prunable):
            context.report["head_criterion"] = HEAD_CRITERIA.get(self.criterion, self.criterion)
        context.report["calibration"] = {"source": self.calibration.source, "samples": self.calibration.samples,
                                         "batches": len(self.calibration)}
        context.report["spaces_scored_by_magnitude"] = fallback
        # space id -> channels kept for their massive activations (peak > MASSIVE_MULTIPLE x median)
        context.report["massive_activation_channels"] = massive
