"""Ops that move, join or cut axes: Concat, Split, Slice, Transpose, (Un)Squeeze, Shape."""

from __future__ import annotations

import numpy as np
import onnx

from ..builder import Removal, SpaceBuilder
from . import rule
from .common import attr, forward, input_at, norm_axis, opset, remove_attr, set_ints_attr


@rule("Concat")
def concat(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    inputs = [name for name in node.input if name]
    rank = builder.rank(node.output[0]) or builder.rank(inputs[0])
    if rank is None:
        builder.pin_node(node, "Concat of unknown rank")
        return
    axis = norm_axis(int(attr(node, "axis")), rank)
    parts = [name for name in inputs if builder.dim(name, axis) != 0]
    if any((name, axis) in builder.layouts or builder.is_weight(name) for name in parts):
        layouts = [builder.layout(name, axis, node) for name in parts]
        if any(layout is None for layout in layouts):
            builder.pin_node(node, "Concat operand with unknown size on the concat axis")
        else:
            builder.set_output(node.output[0], axis, builder.concat_layouts(layouts))
    for other in range(rank):
        if other != axis:
            builder.set_output(node.output[0], other, builder.merge([(name, other) for name in parts], node))


def _split_sizes(builder: SpaceBuilder, node: onnx.NodeProto, axis: int) -> list[int] | None:
    if opset(builder) >= 13:
        sizes = builder.param(node, 1) if input_at(node, 1) else None
        if input_at(node, 1) and sizes is None:
            return None
    else:
        sizes = attr(node, "split")
        sizes = list(sizes) if sizes else None
    if sizes:
        return sizes
    total, count = builder.dim(node.input[0], axis), len(node.output)
    if total is None:
        return None
    if attr(node, "num_outputs") is not None:
        piece = -(-total // count)
        return [min(piece, total - piece * index) for index in range(count)]
    return [total // count] * count if total % count == 0 else None


@rule("Split")
def split(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x = node.input[0]
    rank = builder.rank(x)
    if rank is None:
        builder.pin_node(node, "Split of unknown rank")
        return
    axis = norm_axis(int(attr(node, "axis", 0)), rank)
    for other, other_layout in builder.tracked(x).items():
        if other != axis:
            for output in node.output:
                builder.set_output(output, other, other_layout)
    layout = builder.layouts.get((x, axis))
    if layout is None:
        return
    sizes = _split_sizes(builder, node, axis)
    if sizes is None or sum(sizes) != builder.atoms.total(layout):
        builder.pin(x, axis, "Split sizes are not constant", node)
        return
    offset = 0
    for output, size in zip(node.output, sizes):
        if size:
            part = builder.sub_layout(layout, offset, size)
            if part is None:
                builder.pin(x, axis, "Split cuts through a block of coupled channels (an attention head?)", node)
                return
            builder.set_output(output, axis, part)
        offset += size

    def fix(removal: Removal) -> None:
        new_sizes = [size - removal.count(out, axis) for out, size in zip(node.output, sizes)]
        if new_sizes == sizes:
            return
        remove_attr(node, "num_outputs")
        if opset(builder) >= 13:
            builder.write_param(node, 1, new_sizes, f"{node.name}_split")
        else:
            set_ints_attr(node, "split", new_sizes)

    builder.add_fixup(fix)


@rule("Slice")
def slice_(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    data, out = node.input[0], node.output[0]
    rank = builder.rank(data)
    starts, ends = builder.param(node, 1), builder.param(node, 2)
    axes = builder.param(node, 3) if input_at(node, 3) else None
    steps = builder.param(node, 4) if input_at(node, 4) else None
    if rank is None or starts is None or ends is None or (input_at(node, 3) and axes is None) or (
        input_at(node, 4) and steps is None
    ):
        if builder.tracked(data):
            builder.pin_node(node, "Slice with run-time bounds")
        return
    axes = [norm_axis(a, rank) for a in (axes if axes is not None else range(len(starts)))]
    steps = steps if steps is not None else [1] * len(starts)
    sliced: dict[int, tuple[int, int, int]] = {}  # axis -> (position in the lists, start, end)
    for position, axis in enumerate(axes):
        if (data, axis) not in builder.layouts:
            continue
        size = builder.atoms.total(builder.layouts[(data, axis)])
        start, end = starts[position], ends[position]
        start = min(max(start + size if start < 0 else start, 0), size)
        end = min(max(end + size if end < 0 else end, 0), size)
        if steps[position] != 1 or end <= start:
            builder.pin(data, axis, "Slice with a step or an empty range on a channel axis", node)
            continue
        sliced[axis] = (position, start, end)
    for axis, layout in builder.tracked(data).items():
        if axis in sliced:
            _, start, end = sliced[axis]
            part = builder.sub_layout(layout, start, end - start)
            if part is None:
                builder.pin(data, axis, "Slice cuts through a block of coupled channels (an attention head?)", node)
            builder.set_output(out, axis, part)
        else:
            builder.set_output(out, axis, layout)
    if not sliced:
        return

    def fix(removal: Removal) -> None:
        new_starts, new_ends = list(starts), list(ends)
        for axis, (position, start, end) in sliced.items():
            removed = removal.removed(data, axis)
            new_start = start - int(np.sum(removed < start))
            new_starts[position] = new_start
            new_ends[position] = new_start + (end - start) - int(np.sum((removed >= start) & (removed < end)))
        if new_starts != starts:
            builder.write_param(node, 1, new_starts, f"{node.name}_starts")
        if new_ends != ends:
            builder.write_param(node, 2, new_ends, f"{node.name}_ends")

    builder.add_fixup(fix)


@rule("Transpose")
def transpose(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    rank = builder.rank(node.input[0])
    perm = attr(node, "perm")
    if perm is None:
        if rank is None:
            builder.pin_node(node, "Transpose of unknown rank")
            return
        perm = list(reversed(range(rank)))
    inverse = {source: target for target, source in enumerate(perm)}
    forward(builder, node, node.input[0], node.output[0], inverse.get, None)


def _axes_of(builder: SpaceBuilder, node: onnx.NodeProto) -> list[int] | None:
    if opset(builder) >= 13:
        name = input_at(node, 1)
        return builder.param(node, 1) if name else []
    return list(attr(node, "axes", []))


@rule("Squeeze")
def squeeze(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, rank = node.input[0], builder.rank(node.input[0])
    axes = _axes_of(builder, node)
    dims = builder.dims(x)
    if not builder.tracked(x):
        return
    if rank is None or axes is None or (not axes and (dims is None or any(not isinstance(d, int) for d in dims))):
        builder.pin_node(node, "Squeeze with unknown axes")
        return
    removed = {norm_axis(a, rank) for a in axes} if axes else {i for i, d in enumerate(dims) if d == 1}
    forward(builder, node, x, node.output[0],
            lambda a: None if a in removed else a - sum(1 for r in removed if r < a), "squeezed channel axis")
    if axes:
        return

    # Without axes Squeeze drops every size-1 axis, so a channel axis pruned down to one channel
    # would vanish: spell the axes out.
    def fix(removal: Removal) -> None:
        if opset(builder) >= 13:
            builder.write_param(node, 1, sorted(removed), f"{node.name}_axes")
        else:
            set_ints_attr(node, "axes", sorted(removed))

    builder.add_fixup(fix)


@rule("Unsqueeze")
def unsqueeze(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, rank = node.input[0], builder.rank(node.input[0])
    axes = _axes_of(builder, node)
    if rank is None or not axes:
        if builder.tracked(x):
            builder.pin_node(node, "Unsqueeze with unknown axes")
        return
    out_rank = rank + len(axes)
    inserted = {norm_axis(a, out_rank) for a in axes}
    kept = [a for a in range(out_rank) if a not in inserted]
    forward(builder, node, x, node.output[0], lambda a: kept[a], None)


@rule("Shape")
def shape(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x = node.input[0]
    rank = builder.rank(x)
    tracked = builder.tracked(x)
    if not tracked:
        return
    if rank is None:
        builder.pin(x, None, "its shape is read by Shape", node)
        return
    start = norm_axis(int(attr(node, "start", 0)), rank)
    end = attr(node, "end")
    end = rank if end is None else min(norm_axis(int(end), rank), rank)
    for axis in tracked:
        if start <= axis < end:
            builder.pin(x, axis, "its size is read by Shape", node)


@rule("Gather")
def gather(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """Embedding lookups (a weight table indexed by token ids) keep the table's feature axes."""
    data, indices, out = node.input[0], node.input[1], node.output[0]
    rank, index_rank = builder.rank(data), builder.rank(indices)
    if rank is None or index_rank is None:
        builder.pin_node(node, "Gather of unknown rank")
        return
    axis = norm_axis(int(attr(node, "axis", 0)), rank)
    for index_axis in builder.tracked(indices):
        builder.pin(indices, index_axis, "Gather indices carry channels", node)
    for data_axis in range(rank):
        if data_axis == axis:
            if (data, axis) in builder.layouts:
                builder.pin(data, axis, "Gather picks entries along this axis", node)
            continue
        layout = builder.layout(data, data_axis, node, create=builder.is_weight(data))
        out_axis = data_axis if data_axis < axis else data_axis + index_rank - 1
        builder.set_output(out, out_axis, layout)
