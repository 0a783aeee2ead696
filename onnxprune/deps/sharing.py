"""Weights reached through Identity, Cast and constant arithmetic, and weights read more than once.

Exporters share and wrap weights in ways a rule never sees: torch's TorchScript exporter replaces
identical initializers by one tensor plus Identity nodes (every LayerNorm scale equal to 1 becomes
one tensor, read by every LayerNorm and maybe by a bias Add), quantizers dequantize int8 weights with
Cast -> Mul(scale), a tied embedding is read by a Gather and by the LM head.

*Views.* A float tensor computed from constants only, by Identity, Cast, Transpose or element-wise
arithmetic, is a weight to the rules (a Conv may read one). Its layouts are pulled from its sources
when a rule asks for them, so removing a channel slices the initializers underneath and the view
follows at run time.

*Readers.* A node that reads a weight (or a view) on an axis that has a layout must have looked at
that layout while its rule ran (LayoutTable.reads); one that did not (a LayerNormalization's scale,
a Resize's scales, a Transpose that ran before the axis had a layout) would see the weight shrink
behind its back. An initializer is then un-shared: that reader gets its own copy, which keeps only
the axes the reader did account for. The copy is the same array until one side is sliced, and it is
given back its original name after the rewrite if neither was. A view cannot be copied that way:
its space is pinned instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..io.model import Model, TensorInfo
from .quantized import Dequantized

if TYPE_CHECKING:
    from .builder import SpaceBuilder
    from .space import Removal

VIEW_OPS = ("Identity", "Cast", "Transpose", "Mul", "Div", "Add", "Sub", "Neg")
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
               onnx.TensorProto.DOUBLE)
_DEFAULT_DOMAINS = ("", "ai.onnx")


def _key(node: onnx.NodeProto) -> str:
    return node.output[0] if node.output else node.name


def find_views(model: Model, shapes: dict[str, TensorInfo], dequantized: dict[str, Dequantized]) -> dict:
    """{tensor: the node computing it} for float tensors of static shape computed from constants only."""
    views: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        if node.op_type not in VIEW_OPS or node.domain not in _DEFAULT_DOMAINS or len(node.output) != 1:
            continue
        inputs = [name for name in node.input if name]
        if not inputs or not all(model.is_weight(n) or n in views or n in dequantized for n in inputs):
            continue
        info = shapes.get(node.output[0])
        if info is None or info.elem_type not in FLOAT_TYPES or info.shape is None or not all(
                isinstance(d, int) for d in info.shape):
            continue
        if any(shapes.get(name) is None or shapes[name].shape is None for name in inputs):
            continue
        views[node.output[0]] = node
    return views


def _perm(node: onnx.NodeProto, rank: int) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == "perm":
            return list(attribute.ints)
    return list(reversed(range(rank)))


def view_sources(builder: SpaceBuilder, tensor: str, axis: int) -> list[tuple[str, int]]:
    """The (input, axis) pairs whose channels axis `axis` of the view `tensor` is made of."""
    node = builder.views[tensor]
    rank = builder.rank(tensor)
    if node.op_type == "Transpose":
        return [(node.input[0], _perm(node, rank)[axis])]
    operands = node.input[:1] if node.op_type in ("Identity", "Cast", "Neg") else node.input
    sources = []
    for name in operands:
        name_rank = builder.rank(name)
        source_axis = axis - (rank - name_rank)
        if name and source_axis >= 0 and builder.dim(name, source_axis) != 1:
            sources.append((name, source_axis))
    return sources


def pull_view(builder: SpaceBuilder, tensor: str, axis: int, node: onnx.NodeProto | None) -> list:
    """The sources' layouts of a view's axis, recorded as read by the node computing the view."""
    reader, layouts = builder.layouts.reader, []
    view_key = _key(builder.views[tensor])
    try:
        for source, source_axis in view_sources(builder, tensor, axis):
            builder.layouts.reader = view_key
            layouts.append(builder.layout(source, source_axis, node))
    finally:
        builder.layouts.reader = reader
    return layouts


def _accounted(builder: SpaceBuilder, node: onnx.NodeProto, tensor: str, axis: int, anyone: set) -> bool:
    if (_key(node), tensor, axis) in builder.layouts.reads:
        return True
    # A pattern rule handles several nodes at once and records their reads under the first one.
    return builder.is_claimed(node) and (tensor, axis) in anyone


def settle_readers(builder: SpaceBuilder, pinned_roots: set[int]) -> None:
    """Un-share initializers (or pin views) read on a sliceable axis by a node that did not follow it."""
    model, atoms = builder.model, builder.atoms
    reader, builder.layouts.reader = builder.layouts.reader, None
    try:
        anyone = {(tensor, axis) for _, tensor, axis in builder.layouts.reads}
        for tensor in list(model.weights) + list(builder.views) + list(builder.dequantized):
            axes = {axis: layout for axis, layout in builder.layouts.of(tensor).items()
                    if any(atoms.find(leaf) not in pinned_roots for leaf, _ in atoms.leaves(layout))}
            if not axes:
                continue
            for node, index in list(model.consumers(tensor)):
                missed = [axis for axis in axes if index < 0 or not _accounted(builder, node, tensor, axis, anyone)]
                if not missed:
                    continue
                if index >= 0 and model.is_weight(tensor):
                    _unshare(builder, node, index, tensor, missed, [a for a in axes if a not in missed])
                else:
                    for axis in missed:
                        builder.pin(tensor, axis, f"'{tensor}' is also read by {model.node_label(node)}, which does "
                                                  "not follow its channels", node)
    finally:
        builder.layouts.reader = reader


def _unshare(builder: SpaceBuilder, node: onnx.NodeProto, index: int, tensor: str, missed: list[int],
             kept_axes: list[int]) -> None:
    """`node` reads its own copy of `tensor`, sliced along `kept_axes` only."""
    model = builder.model
    copy = model.add_weight(f"{tensor}_{node.name or _key(node)}", model.weight(tensor))
    node.input[index] = copy
    model.invalidate()
    builder.shapes[copy] = builder.shapes.get(tensor) or TensorInfo(model.weights[tensor].data_type,
                                                                   model.weights[tensor].shape)
    for axis in kept_axes:
        builder.layouts[(copy, axis)] = builder.layouts[(tensor, axis)]

    def reshare(removal: Removal) -> None:
        # Both sides still hold the same values (nothing left the axes the reader does not follow, and
        # no pass refit one side, as compensation does): one tensor again, as the input had it.
        if copy not in model.weights or any(removal.count(tensor, axis) for axis in missed):
            return
        ours, theirs = model.weights[tensor].array, model.weights[copy].array
        if ours is theirs or (ours is not None and theirs is not None and ours.shape == theirs.shape
                              and ours.dtype == theirs.dtype and np.array_equal(ours, theirs)):
            node.input[index] = tensor
            model.invalidate()

    builder.add_fixup(reshare)
