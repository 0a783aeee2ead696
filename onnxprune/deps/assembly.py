"""The result of propagation: classes of atoms become channel spaces, each with its members (the
(tensor, axis, offset) places its channels occupy), its pins, a kind, a label and an id; and a plan
on spaces becomes the indices every member loses."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .sharing import FLOAT_TYPES
from .space import ChannelSpace, Member, Pin, Removal

if TYPE_CHECKING:
    from .builder import SpaceBuilder


def spaces(builder: SpaceBuilder) -> list[ChannelSpace]:
    atoms, model = builder.atoms, builder.model
    occurrences: dict[int, list[Member]] = defaultdict(list)
    for (tensor, axis), layout in builder.layouts.items():
        if tensor.startswith("\0"):
            continue
        offset = 0
        weight = model.is_weight(tensor)  # a dequantized weight or a view is sliced through its initializers
        for leaf, block in atoms.leaves(layout):
            occurrences[atoms.find(leaf)].append(Member(tensor, axis, offset, weight, block))
            offset += atoms.size[leaf] * block
    pins = builder.pins_by_root()
    found = []
    for root, members in occurrences.items():
        if not any(m.is_weight for m in members):
            continue  # only activations: nothing to slice, nothing to report
        members.sort(key=lambda m: (not m.is_weight, m.tensor, m.axis, m.offset, m.block))
        space = ChannelSpace(len(found), atoms.size[root], members, pins.get(root, []))
        if not any(_is_float(builder, m.tensor) for m in members):
            # Integer constants joined by Concat and the like: shape arithmetic, not channels.
            space.pins.append(Pin("only integer tensors: shape values, not channels"))
        if any((m.tensor, m.axis) in builder.head_axes for m in members):
            space.kind = "heads"
        space.nodes = _weight_nodes(builder, members)
        space.label = _label(builder, space)
        found.append(space)
    _order(builder, found)
    return found


def _is_float(builder: SpaceBuilder, tensor: str) -> bool:
    if builder.model.is_weight(tensor):
        return builder.model.weights[tensor].data_type in FLOAT_TYPES
    info = builder.shapes.get(tensor)
    return info is not None and info.elem_type in FLOAT_TYPES


def readers(builder: SpaceBuilder, weight: str) -> list[tuple[onnx.NodeProto, int]]:
    """Consumers of a weight, looking through the DequantizeLinear of a quantized one and through
    views (Identity, Cast, scale Mul...)."""
    model, found = builder.model, []
    for node, index in model.consumers(weight):
        if node.output and node.output[0] in builder.views:
            found.extend(readers(builder, node.output[0]))
        elif node.output and node.output[0] in builder.dequantized:
            found.extend(model.consumers(node.output[0]) if index == 0 else [])
        else:
            found.append((node, index))
    return found


def _weight_nodes(builder: SpaceBuilder, members: list[Member]) -> list[str]:
    names: list[str] = []
    for member in members:
        if member.is_weight:
            for node, _ in readers(builder, member.tensor) + builder.model.consumers(member.tensor):
                label = node.name or node.output[0]
                if label not in names:
                    names.append(label)
    return names


def _label(builder: SpaceBuilder, space: ChannelSpace) -> str:
    """Name a space after the layer that produces it (or else consumes it), with the channel range
    when it is only part of that layer's channels (a Split half, a Concat slice)."""
    produced = consumed = None
    for member in space.weight_members:
        full = builder.model.weights[member.tensor].shape[member.axis]
        width = space.size * member.block
        where = "" if full == width else f" [{member.offset}:{member.offset + width}]"
        if member.block > 1:
            where += f" in groups of {member.block}"
        for node, index in readers(builder, member.tensor):
            name = f"{node.op_type} '{node.name or node.output[0]}'"
            output_axis = {"Conv": 0, "Gemm": 0, "ConvTranspose": 1, "MatMul": 1, "MatMulNBits": 0,
                           "Attention": 1}.get(node.op_type)
            if index == 1 and member.axis == output_axis and produced is None:
                kind = "output channels" if "Conv" in node.op_type else "output features"
                produced = f"{name} {kind}{where}"
            elif index == 1 and consumed is None:
                consumed = f"{name} input channels{where}"
    if produced or consumed:
        return produced or consumed
    first = space.weight_members[0]
    return f"'{first.tensor}' axis {first.axis}"


def _order(builder: SpaceBuilder, spaces: list[ChannelSpace]) -> None:
    """Number spaces in graph order, so ids are stable and read naturally."""
    position = {}
    for index, node in enumerate(builder.model.graph.node):
        for name in node.input:
            position.setdefault(name, index)
    spaces.sort(key=lambda s: (min(position.get(m.tensor, 1 << 30) for m in s.weight_members), s.label))
    for index, space in enumerate(spaces):
        space.id = index


def removal(plan: dict[int, np.ndarray], spaces: list[ChannelSpace]) -> Removal:
    """Expand in-space indices to (tensor, axis) indices for every member."""
    per_axis: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    for space in spaces:
        indices = plan.get(space.id)
        if indices is None or len(indices) == 0:
            continue
        assert space.prunable, f"space {space.id} is pinned"
        for member in space.members:
            per_axis[(member.tensor, member.axis)].append(member.indices(indices))
    return Removal({key: np.unique(np.concatenate(parts)) for key, parts in per_axis.items()})
