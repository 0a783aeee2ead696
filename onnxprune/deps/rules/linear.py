"""Gemm and MatMul with a constant weight."""

from __future__ import annotations

import onnx

from ..builder import SpaceBuilder
from . import rule
from .common import attr, input_at


@rule("Gemm")
def gemm(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    a, b, c, y = node.input[0], node.input[1], input_at(node, 2), node.output[0]
    if not builder.is_weight(b) or builder.is_weight(a) or (c and not builder.is_weight(c)):
        builder.pin_node(node, "Gemm whose B (or C) is not a constant weight")
        return
    k_of_a = 0 if attr(node, "transA", 0) else 1
    k_of_b, n_of_b = (1, 0) if attr(node, "transB", 0) else (0, 1)
    builder.merge([(a, k_of_a), (b, k_of_b)], node)
    n_axes = [(b, n_of_b)]
    m_axes = [(a, 1 - k_of_a)]
    if c:
        c_rank = builder.rank(c) or 0
        if c_rank >= 1 and builder.dim(c, c_rank - 1) != 1:
            n_axes.append((c, c_rank - 1))
        if c_rank == 2 and builder.dim(c, 0) != 1:
            m_axes.append((c, 0))
    builder.set_output(y, 1, builder.merge(n_axes, node))
    if len(m_axes) > 1:
        builder.set_output(y, 0, builder.merge(m_axes, node))
    else:
        builder.set_output(y, 0, builder.layout(a, 1 - k_of_a, create=False))


@rule("MatMul")
def matmul(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    a, b, y = node.input[0], node.input[1], node.output[0]
    rank_a, rank_b = builder.rank(a), builder.rank(b)
    if builder.is_weight(b) and not builder.is_weight(a) and rank_b == 2 and rank_a and rank_a >= 2:
        builder.merge([(a, rank_a - 1), (b, 0)], node)
        builder.set_output(y, rank_a - 1, builder.layout(b, 1, node))
        for axis in range(rank_a - 1):
            builder.set_output(y, axis, builder.layout(a, axis, create=False))
    elif builder.is_weight(a) and not builder.is_weight(b) and rank_a == 2 and rank_b and rank_b >= 2:
        builder.merge([(a, 1), (b, rank_b - 2)], node)
        builder.set_output(y, rank_b - 2, builder.layout(a, 0, node))
        for axis in list(range(rank_b - 2)) + [rank_b - 1]:
            builder.set_output(y, axis, builder.layout(b, axis, create=False))
    elif not builder.is_weight(a) and not builder.is_weight(b) and rank_a and rank_b and min(rank_a, rank_b) >= 2:
        _matmul_of_activations(builder, node, a, b, y, rank_a, rank_b)
    else:
        builder.pin_node(node, "MatMul with a constant operand of rank other than 2")


def _matmul_of_activations(builder: SpaceBuilder, node: onnx.NodeProto, a: str, b: str, y: str,
                           rank_a: int, rank_b: int) -> None:
    """Q @ K^T and P @ V: batch axes (heads) broadcast like Add; the contraction axis ties both."""
    out_rank = max(rank_a, rank_b)
    for out_axis in range(out_rank - 2):
        parts = []
        for name, rank in ((a, rank_a), (b, rank_b)):
            axis = out_axis - (out_rank - rank)
            if axis >= 0 and builder.dim(name, axis) != 1:
                parts.append((name, axis))
        builder.set_output(y, out_axis, builder.merge(parts, node) if parts else None)
    builder.set_output(y, out_rank - 2, builder.layout(a, rank_a - 2, create=False))
    builder.set_output(y, out_rank - 1, builder.layout(b, rank_b - 1, create=False))
    builder.merge([(a, rank_a - 1), (b, rank_b - 2)], node)
