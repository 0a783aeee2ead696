"""Reshape, Flatten and Expand: axes merged into one, split into several, or broadcast.

A Reshape is cut into groups of input axes and output axes with equal products. One axis to one axis
keeps its layout. One tracked axis split into several (`[B,S,H*D] -> [B,S,H,D]`) becomes blocks: the
outer output axis gets a new space whose channels are blocks of the inner size (attention heads). A
merge of one tracked axis with untracked ones widens it (`[H, D] -> H*D`, blocks again) or repeats
it (`[n_rep, H] -> n_rep*H`). Literal sizes in the target are rewritten after pruning.
"""

from __future__ import annotations

from collections import Counter
from math import prod

import onnx

from ..builder import Removal, SpaceBuilder
from . import rule
from .common import attr, norm_axis


def _product(dims):
    """Product of dims as (integer part, sorted symbolic names); None when a dim is unknown."""
    product, symbols = 1, []
    for dim in dims:
        if isinstance(dim, int):
            product *= dim
        elif isinstance(dim, str):
            symbols.append(dim)
        else:
            return None
    return product, tuple(sorted(symbols))


def _times(a, b):
    return a[0] * b[0], tuple(sorted(a[1] + b[1]))


def _divides(a, b) -> bool:
    return a[0] != 0 and b[0] % a[0] == 0 and not Counter(a[1]) - Counter(b[1])


def _match(in_dims, out_dims, i: int, j: int):
    """Grow one group from input axis i and output axis j; (i_end, j_end) or None."""
    left, right = _product(in_dims[i:i + 1]), _product(out_dims[j:j + 1])
    if left is None or right is None:
        return None
    i, j = i + 1, j + 1
    while left != right:
        if _divides(left, right) and i < len(in_dims) and _product(in_dims[i:i + 1]) is not None:
            left, i = _times(left, _product(in_dims[i:i + 1])), i + 1
        elif _divides(right, left) and j < len(out_dims) and _product(out_dims[j:j + 1]) is not None:
            right, j = _times(right, _product(out_dims[j:j + 1])), j + 1
        else:
            return None
    return i, j


def _groups(in_dims, out_dims):
    """[((i0, i1), (j0, j1)), ...]: input axes i0..i1 hold exactly output axes j0..j1.

    Groups are matched from the left, then from the right; what is left in the middle must be one
    axis on each side (a run-time batch that shape inference named differently), or nothing tracked.
    """
    head, i, j = [], 0, 0
    while i < len(in_dims) and j < len(out_dims):
        end = _match(in_dims, out_dims, i, j)
        if end is None:
            break
        head.append(((i, end[0]), (j, end[1])))
        i, j = end
    tail, i_end, j_end = [], len(in_dims), len(out_dims)
    reversed_in, reversed_out = in_dims[::-1], out_dims[::-1]
    while i_end > i and j_end > j:
        end = _match(reversed_in, reversed_out, len(in_dims) - i_end, len(out_dims) - j_end)
        if end is None or len(in_dims) - end[0] < i or len(out_dims) - end[1] < j:
            break
        start_i, start_j = len(in_dims) - end[0], len(out_dims) - end[1]
        tail.insert(0, ((start_i, i_end), (start_j, j_end)))
        i_end, j_end = start_i, start_j
    middle = [((i, i_end), (j, j_end))] if (i, j) != (i_end, j_end) else []
    return head + middle + tail


def _resolve_minus_one(in_dims, out_dims, target) -> tuple:
    """Shape inference leaves a -1 next to a symbolic batch unknown; work it out from the total."""
    if -1 not in target or len(target) != len(out_dims):
        return tuple(out_dims)
    position = target.index(-1)
    if isinstance(out_dims[position], int):
        return tuple(out_dims)
    total = _product(in_dims)
    rest = _product([d for i, d in enumerate(out_dims) if i != position])
    if total is None or rest is None or rest[0] == 0 or total[0] % rest[0] or Counter(rest[1]) - Counter(total[1]):
        return tuple(out_dims)
    left = list((Counter(total[1]) - Counter(rest[1])).elements())
    quotient = total[0] // rest[0]
    resolved = list(out_dims)
    if not left:
        resolved[position] = quotient
    elif len(left) == 1 and quotient == 1:
        resolved[position] = left[0]  # e.g. the batch: [N, 8, 1, 1] -> [-1, 8]
    return tuple(resolved)


def _static(dims) -> int | None:
    return prod(dims) if all(isinstance(d, int) for d in dims) else None


@rule("Reshape")
def reshape(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    tracked = builder.tracked(x)
    if not tracked:
        return
    # Entries known only at run time (x.view(x.size(0), -1) reads the batch) are fine away from the
    # channel axes: they are recomputed from unpruned sizes.
    target = builder.partial_param(node, 1)
    in_dims, out_dims = builder.dims(x), builder.dims(out)
    if target is None or in_dims is None or out_dims is None or len(target) != len(out_dims):
        builder.pin_node(node, "Reshape with a run-time or unknown shape")
        return
    out_dims = _resolve_minus_one(in_dims, out_dims, target)
    groups = _groups(in_dims, out_dims)
    why = "Reshape mixes this axis with other tracked axes"
    for (i0, i1), (j0, j1) in groups:
        ins = [axis for axis in range(i0, i1) if axis in tracked]
        if not ins:
            continue
        layout = _group_layout(builder, tracked, in_dims, out_dims, (i0, i1), (j0, j1))
        if layout is None:
            for axis in ins:
                builder.pin(x, axis, why if i1 - i0 > 1 or j1 - j0 > 1 else "Reshape moves this axis", node)
            continue
        builder.set_output(out, layout[1], layout[0])
        if layout[2] > 1:  # [.., H*D, ..] -> [.., H, D, ..]: heads only if attention reads them so
            builder.head_splits.append((out, layout[1], layout[0], node))
        if any(target[j] == 0 and not attr(node, "allowzero", 0) and j != ins[0] for j in range(j0, j1)):
            builder.pin(x, ins[0], "Reshape copies a size (0) from another axis", node)
    _fix_target(builder, node, out, target)


def _group_layout(builder: SpaceBuilder, tracked, in_dims, out_dims, ins, outs):
    """(layout, output axis, block) for the one tracked axis of a group, or None when it cannot be
    followed; block > 1 when the axis was split into blocks of that many channels."""
    (i0, i1), (j0, j1) = ins, outs
    axes = [axis for axis in range(i0, i1) if axis in tracked]
    if len(axes) != 1:
        return None
    axis = axes[0]
    outer, inner = _static(in_dims[i0:axis]), _static(in_dims[axis + 1:i1])
    if outer is None or inner is None:
        return None
    # Merged with untracked axes: [H, D] -> H*D makes each channel a block of D channels, and
    # [n, C] -> n*C repeats the layout n times.
    layout = builder.atoms.widen(tracked[axis], inner) * outer
    if j1 - j0 == 1:
        return layout, j0, 1
    # Split: the first output axis of size > 1 keeps whole blocks of everything after it.
    head = next((j for j in range(j0, j1) if out_dims[j] != 1), j0)
    before, size, after = _static(out_dims[j0:head]), out_dims[head], _static(out_dims[head + 1:j1])
    if before != 1 or not isinstance(size, int) or after is None:
        return None
    heads = builder.atoms.fresh(size)
    if not builder.atoms.unify(layout, builder.atoms.widen(heads, after)):
        return None
    return heads, head, after


def _fix_target(builder: SpaceBuilder, node: onnx.NodeProto, out: str, target: list, axes=None) -> None:
    """After pruning, literal sizes of tracked output axes shrink by what each axis lost.

    `target` (input 1 of the node) is indexed by output axis; `axes` are those to rewrite (default:
    every tracked axis with a literal size)."""
    if axes is None:
        axes = [axis for axis in builder.tracked(out) if target[axis] is not None and target[axis] > 1]
    # An entry copied at run time from a size of the same space (torch's expand(b, kv, n, s, d) reads
    # kv off the tensor) follows the pruning by itself.
    derived = builder.shape_values.get(node.input[1])
    follows = [axis for axis in axes if derived is not None and derived.element(axis).copy_of is not None]
    for axis in follows:
        builder.size_slot(node, 1, axis, out, axis)
    axes = [axis for axis in axes if axis not in follows]
    if not axes:
        return
    if not follows and builder.param(node, 1) is not None:
        values = [int(v) for v in target]

        def fix(removal: Removal) -> None:
            new = list(values)
            for axis in axes:
                new[axis] -= removal.count(out, axis)
            if new != values:
                builder.write_param(node, 1, new, f"{node.name}_shape")

        builder.add_fixup(fix)
        return
    # The target mixes run-time entries (the batch) with constants: torch's view(b, s, H, D) exports
    # as Concat(b, s, [H], [D]). Rewrite the constants that hold the sizes, if they are constants.
    slots = {}
    for axis in axes:
        slot = _concat_constant_slot(builder, node.input[1], axis)
        if slot is None:
            builder.pin(out, axis, f"{node.op_type} target is computed at run time", node)
        else:
            slots[axis] = slot
    if not slots:
        return

    def fix_slots(removal: Removal) -> None:
        concat = next(iter(slots.values()))[0]
        parts: dict[int, list[int]] = {}
        for axis, (_, index, element, original) in slots.items():
            parts.setdefault(index, list(original))[element] -= removal.count(out, axis)
        if all(parts[index] == slots_original(index) for index in parts):
            return
        # Exporters share one target Concat between the Q, K and V reshapes of every layer; this
        # node gets its own copy so that each layer's heads stay independent.
        own = builder.model.clone_node_before(concat, node, f"{concat.name or 'concat'}_{node.name or 'target'}")
        node.input[1] = own.output[0]
        for index, values in parts.items():
            builder.write_param(own, index, values, f"{own.name}_part{index}")

    def slots_original(index: int) -> list[int]:
        return next(original for _, i, _, original in slots.values() if i == index)

    builder.add_fixup(fix_slots)


def _concat_constant_slot(builder: SpaceBuilder, name: str, position: int):
    """(Concat node, input index, element, original values) of a shape entry that a Concat takes
    from a constant. Writes are computed from the original values, so repeating them is harmless."""
    producer = builder.model.producer(name)
    if producer is None or producer.op_type != "Concat" or int(attr(producer, "axis", 0)) not in (0, -1):
        return None
    offset = 0
    for index, part in enumerate(producer.input):
        size = builder.dim(part, 0) if builder.rank(part) == 1 else None
        if size is None:
            return None
        if offset <= position < offset + size:
            if not builder.is_weight(part):
                return None
            original = [int(v) for v in builder.model.weight(part).reshape(-1)]
            return producer, index, position - offset, original
        offset += size
    return None


@rule("Expand")
def expand(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    tracked = builder.tracked(x)
    if not tracked:
        return
    shape, rank = builder.partial_param(node, 1), builder.rank(x)
    if shape is None or rank is None:
        builder.pin_node(node, "Expand with an unknown shape")
        return
    out_rank = max(rank, len(shape))
    rewrite = []
    for axis, layout in tracked.items():
        out_axis = axis + out_rank - rank
        position = out_axis - (out_rank - len(shape))
        entry = shape[position] if position >= 0 else 1
        size = builder.atoms.total(layout)
        if entry is None or (entry != 1 and entry != size) or (entry == size > 1 and position != out_axis):
            builder.pin(x, axis, "Expand broadcasts this axis to a size read at run time" if entry is None
                        else "Expand broadcasts this axis", node)
            continue
        builder.set_output(out, out_axis, layout)
        if entry == size > 1:
            rewrite.append(out_axis)
    _fix_target(builder, node, out, shape, rewrite)


@rule("Tile")
def tile(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """Tiling an axis r times repeats its layout r times (repeat_kv written with Tile)."""
    x, out = node.input[0], node.output[0]
    tracked = builder.tracked(x)
    if not tracked:
        return
    repeats = builder.param(node, 1)
    if repeats is None:
        builder.pin_node(node, "Tile with run-time repeats")
        return
    for axis, layout in tracked.items():
        builder.set_output(out, axis, layout * repeats[axis])


@rule("Flatten")
def flatten(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """Flatten is a Reshape to [prod(dims[:axis]), prod(dims[axis:])]: two merge groups."""
    x, out = node.input[0], node.output[0]
    tracked = builder.tracked(x)
    dims = builder.dims(x)
    if not tracked:
        return
    if dims is None:
        builder.pin_node(node, "Flatten of unknown shape")
        return
    split = norm_axis(int(attr(node, "axis", 1)), len(dims))
    out_dims = (_static(dims[:split]), _static(dims[split:]))
    for (i0, i1), j in (((0, split), 0), ((split, len(dims)), 1)):
        ins = [axis for axis in range(i0, i1) if axis in tracked]
        if not ins:
            continue
        layout = _group_layout(builder, tracked, dims, out_dims, (i0, i1), (j, j + 1))
        if layout is None:
            for axis in ins:
                builder.pin(x, axis, "Flatten mixes this axis with other tracked axes", node)
        else:
            builder.set_output(out, j, layout[0])
