"""Magnitude criteria: the norm of everything a channel touches, and BatchNorm scale."""

from __future__ import annotations

import numpy as np

from onnxprune.deps import ChannelSpace, Member
from onnxprune.model import Model
from onnxprune.pipeline import Context

# BatchNormalization inputs 3 and 4 are running statistics, not learned weights.
_STATISTICS = {("BatchNormalization", 3), ("BatchNormalization", 4)}


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


def group_norm(model: Model, space: ChannelSpace, p: int) -> np.ndarray:
    total = np.zeros(space.size, np.float64)
    for member in space.weight_members:
        if is_statistic(model, member.tensor) or model.weight(member.tensor).dtype.kind != "f":
            continue
        block = member_block(model, member, space.size)
        others = tuple(axis for axis in range(block.ndim) if axis != member.axis)
        magnitude = np.abs(block) if p == 1 else np.square(block, dtype=np.float64)
        total += per_channel(magnitude.sum(axis=others, dtype=np.float64), member, space.size)
    return total if p == 1 else np.sqrt(total)


class Magnitude:
    """L1 or L2 norm of the whole group: producer rows, BN params and consumer columns together."""

    def __init__(self, p: int = 1):
        assert p in (1, 2)
        self.p = p
        self.name = f"score-l{p}"

    def run(self, context: Context) -> None:
        graph = context.channel_graph()
        context.scores = {space.id: group_norm(context.model, space, self.p) for space in graph.prunable}
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
