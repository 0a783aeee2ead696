"""Attention heads are proven, never assumed from a Reshape.

A Reshape that splits a channel axis into [H, D] (`[B, S, H*D] -> [B, S, H, D]`) makes H blocks of D
channels. That is how exporters write multi-head attention, but also YOLOv8's DFL box decoder
(`[B, 64, A] -> [B, 4, 16, A]`: four box sides, sixteen distance bins each, which a fixed Conv then
reads across the bins). Removing a block is only right where the blocks are attention heads, so a
split is accepted when its blocks reach the batch axes of a proven attention: scores Q @ K^T that a
Softmax over the keys normalizes, and those probabilities applied to V by a second MatMul. A split
that is not proven pins its axis, with the Reshape named in the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from .builder import SpaceBuilder

# Between Q @ K^T and Softmax: scaling, masks, soft-capping, casts.
_SCORE_OPS = ("Mul", "Div", "Add", "Sub", "Where", "Cast", "Identity", "Max", "Min", "Clip", "Tanh")
# Between Softmax and P @ V: dropout, casts, masking of fully masked rows.
_PROBABILITY_OPS = ("Cast", "Identity", "Dropout", "Where", "Mul")
_DEPTH = 8


def _attr(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _is_key_softmax(builder: SpaceBuilder, node: onnx.NodeProto) -> bool:
    """A Softmax over the last axis (the keys); before opset 13 `axis` flattens, the same when last."""
    if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
        return False
    rank = builder.rank(node.input[0])
    if rank is None:
        return False
    default = -1 if (builder.model.opset or 0) >= 13 else 1
    axis = int(_attr(node, "axis", default))
    return (axis + rank if axis < 0 else axis) == rank - 1


def _forward(builder: SpaceBuilder, tensor: str, through: tuple, found) -> bool:
    """Does `tensor` reach, through ops in `through` only, a (node, input index) that `found` accepts?"""
    frontier, seen = [tensor], set()
    for _ in range(_DEPTH):
        following = []
        for name in frontier:
            for node, index in builder.model.consumers(name):
                if found(node, index):
                    return True
                if node.op_type in through and node.output and node.output[0] not in seen:
                    seen.add(node.output[0])
                    following.append(node.output[0])
        frontier = following
    return False


def _softmax_before(builder: SpaceBuilder, tensor: str) -> bool:
    """Is `tensor` a key Softmax's output, through ops in _PROBABILITY_OPS?"""
    frontier = [tensor]
    for _ in range(_DEPTH):
        following = []
        for name in frontier:
            producer = builder.model.producer(name)
            if producer is None:
                continue
            if _is_key_softmax(builder, producer):
                return True
            if producer.op_type in _PROBABILITY_OPS:
                following.extend(n for n in producer.input if n and not builder.is_weight(n))
        frontier = following
    return False


def _is_scores(builder: SpaceBuilder, matmul: onnx.NodeProto) -> bool:
    """Q @ K^T: normalized by a key Softmax whose output then multiplies V (as the first operand)."""
    def applied(node, index):
        return node.op_type == "MatMul" and index == 0

    def softmax(node, index):
        return _is_key_softmax(builder, node) and _forward(builder, node.output[0], _PROBABILITY_OPS, applied)

    return _forward(builder, matmul.output[0], _SCORE_OPS, softmax)


def attention_roots(builder: SpaceBuilder) -> set[int]:
    """Classes of atoms on the batch axes of proven attention MatMuls (scores, or probabilities @ V)."""
    atoms, roots = builder.atoms, set()
    for node in builder.model.graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        a, b = node.input[0], node.input[1]
        ranks = builder.rank(a), builder.rank(b)
        if builder.is_weight(a) or builder.is_weight(b) or None in ranks or min(ranks) < 3:
            continue
        if not (_is_scores(builder, node) or _softmax_before(builder, a)):
            continue
        for name, rank in zip((a, b), ranks):
            for axis in range(rank - 2):
                layout = builder.layouts.get((name, axis))
                if layout is not None:
                    roots.update(atoms.find(leaf) for leaf, _ in atoms.leaves(layout))
    for layout in builder.attention_heads:  # fused attention ops prove the heads they read (contrib_attention)
        roots.update(atoms.find(leaf) for leaf, _ in atoms.leaves(layout))
    return roots


def settle_head_splits(builder: SpaceBuilder) -> None:
    """Heads for the splits proven to feed attention; a pin for every other split."""
    if not builder.head_splits:
        return
    atoms, proven = builder.atoms, attention_roots(builder)
    for tensor, axis, layout, node in builder.head_splits:
        leaves = atoms.leaves(layout)
        if all(atoms.find(leaf) in proven for leaf, _ in leaves):
            builder.head_axes.add((tensor, axis))
            continue
        count = sum(atoms.size[leaf] for leaf, _ in leaves)
        builder.pin(tensor, axis, f"{builder.model.node_label(node)} splits channels into {count} blocks, and no "
                                  "attention (Q @ K^T -> Softmax -> @ V) reads them as heads", node)
