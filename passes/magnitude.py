"""Magnitude criteria: the norm of everything a channel touches, and BatchNorm scale."""

from __future__ import annotations

import numpy as np

from onnxprune.check.stats import is_float_dtype
from onnxprune.deps import ChannelSpace, Member
from onnxprune.io.model import Model
from onnxprune.pipeline import Context

# BatchNormalization inputs 3 and 4 are running statistics, not learned weights.
_STATISTICS = {("BatchNormalization", 3), ("BatchNormalization", 4)}
_QDQ = ("DequantizeLinear", "QuantizeLinear")


def member_block(model: Model, member: Member, size: int) -> np.ndarray:
    """The member's part of its axis (size * block entries from offset), as a view (no copy)."""
    weight = model.weight(member.tensor)
    index = [slice(None)] * weight.ndim
    index[member.axis] = slice(member.offset, member.offset + size * member.block)
    return weight[tuple(index)]


def per_channel(values: np.ndarray, member: Member, size: int) -> np.ndarray:
    """Sum per-entry values along the member's axis into one value per space channel."""
    return values.reshape(size, member.block).sum(axis=1)


def is_statistic(model: Model, tensor: str) -> bool:
    return any((node.op_type, index) in _STATISTICS for node, index in model.consumers(tensor))


def is_quantization_parameter(model: Model, tensor: str) -> bool:
    """Scales and zero points: their size says nothing of a channel's weights (those are scored dequantized)."""
    return any(node.op_type in _QDQ and index in (1, 2) for node, index in model.consumers(tensor))


def float_values(model: Model, tensor: str) -> np.ndarray | None:
    """The weight as values to measure: floats as they are (bfloat16 included), integer weights
    behind a DequantizeLinear dequantized, (q - zero_point) * scale; None for anything else."""
    weight = model.weight(tensor)
    if is_float_dtype(weight.dtype):
        return weight  # converted block by block by the caller: no float64 copy of a whole big weight
    for node, index in model.consumers(tensor):
        if node.op_type != "DequantizeLinear" or index != 0 or not model.is_weight(node.input[1]):
            continue
        scale = model.weight(node.input[1]).astype(np.float64)
        has_zero = len(node.input) > 2 and node.input[2] and model.is_weight(node.input[2])
        zero = model.weight(node.input[2]).astype(np.float64) if has_zero else np.zeros(())
        if scale.ndim > 1:
            return None  # blocked quantization: its spaces are pinned anyway
        if scale.size > 1:  # per axis: line scale and zero point up with the weight's quantization axis
            shape = [1] * weight.ndim
            shape[next((a.i for a in node.attribute if a.name == "axis"), 1) % weight.ndim] = -1
            scale = scale.reshape(shape)
            zero = zero.reshape(shape) if zero.size > 1 else zero.reshape(())
        return (weight.astype(np.float64) - zero) * scale
    return None


def _scored(model: Model, member: Member) -> bool:
    return not (is_statistic(model, member.tensor) or is_quantization_parameter(model, member.tensor))


def axis_magnitudes(model: Model, spaces: list[ChannelSpace], p: int) -> dict[tuple[str, int], np.ndarray]:
    """Sum of |w|^p over every other axis, for each (weight, axis) the spaces slice.

    Each weight is read and converted once, whatever number of spaces it belongs to (a conv's
    output axis in one, its input axis in another): on a float16 model the conversion is most of
    the scoring time. Only one converted weight is alive at a time.
    """
    wanted: dict[str, set[int]] = {}
    for space in spaces:
        for member in space.weight_members:
            if _scored(model, member):
                wanted.setdefault(member.tensor, set()).add(member.axis)
    sums: dict[tuple[str, int], np.ndarray] = {}
    for tensor, axes in wanted.items():
        values = float_values(model, tensor)
        if values is None:
            continue
        if values.dtype != np.float64:  # float16/bfloat16 arithmetic is slow in numpy: work in float32
            values = values.astype(np.float32, copy=False)
        magnitude = np.abs(values) if p == 1 else np.square(values)
        for axis in sorted(axes):
            others = tuple(other for other in range(magnitude.ndim) if other != axis)
            sums[(tensor, axis)] = magnitude.sum(axis=others, dtype=np.float64)
    return sums


def group_norm(model: Model, space: ChannelSpace, p: int,
               sums: dict[tuple[str, int], np.ndarray] | None = None) -> np.ndarray:
    """The Lp norm of everything each channel of `space` touches (`sums`: axis_magnitudes, computed for
    this space alone when not given)."""
    sums = axis_magnitudes(model, [space], p) if sums is None else sums
    total = np.zeros(space.size, np.float64)
    for member in space.weight_members:
        along = sums.get((member.tensor, member.axis))
        if along is None or not _scored(model, member):
            continue
        total += per_channel(along[member.offset: member.offset + space.size * member.block], member, space.size)
    return total if p == 1 else np.sqrt(total)


class Magnitude:
    """L1 or L2 norm of the whole group: producer rows, BN params and consumer columns together."""

    def __init__(self, p: int = 1):
        assert p in (1, 2)
        self.p = p
        self.name = f"score-l{p}"

    def run(self, context: Context) -> None:
        graph = context.channel_graph()
        sums = axis_magnitudes(context.model, graph.prunable, self.p)
        context.scores = {space.id: group_norm(context.model, space, self.p, sums) for space in graph.prunable}
        context.report["criterion"] = f"l{self.p}"


class BatchNormScale:
    """|gamma| of the BatchNormalization in each space (network slimming). Spaces without one are kept."""

    name = "score-bn-scale"

    def run(self, context: Context) -> None:
        graph, model = context.channel_graph(), context.model
        context.scores = {}
        skipped = []
        for space in graph.prunable:
            total = np.zeros(space.size, np.float64)
            found = False
            for member in space.weight_members:
                consumers = model.consumers(member.tensor)
                if any(node.op_type == "BatchNormalization" and index == 1 for node, index in consumers):
                    total += per_channel(np.abs(member_block(model, member, space.size)).astype(np.float64),
                                         member, space.size)
                    found = True
            if found:
                context.scores[space.id] = total
            else:
                skipped.append(space.id)
        context.report["criterion"] = "bn-scale"
        context.report["spaces_without_batchnorm"] = skipped
