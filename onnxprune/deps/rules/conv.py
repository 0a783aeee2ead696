"""Conv and ConvTranspose: plain, depthwise and grouped."""

from __future__ import annotations

import onnx

from ..builder import SpaceBuilder
from . import rule
from .common import attr, input_at, set_int_attr


def _depthwise_group_fixup(node: onnx.NodeProto, x: str, group: int):
    # A depthwise conv has one group per channel: the group count follows the channel count. (Counted
    # on the input: the weight may be a view, computed from constants at run time.)
    return lambda removal: set_int_attr(node, "group", group - removal.count(x, 1))


def _pin_kernel_axes(builder: SpaceBuilder, node: onnx.NodeProto, x: str) -> None:
    """A kernel slides along every axis after the channels: channels tracked there cannot pass."""
    for axis in builder.tracked(x):
        if axis >= 2:
            builder.pin(x, axis, f"{node.op_type} slides its kernel along this axis", node)


def _tie_groups(builder: SpaceBuilder, layout, group: int, node: onnx.NodeProto):
    """Split `layout` into `group` equal pieces and tie them: in-group index i leaves every group."""
    size = builder.atoms.total(layout) // group
    pieces = [builder.sub_layout(layout, index * size, size) for index in range(group)]
    if any(piece is None for piece in pieces):
        builder.pin_layout(layout, "grouped Conv groups cut through coupled channel blocks", node)
        return None
    builder.tie(pieces, node)
    return pieces[0]


@rule("Conv")
def conv(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, weight, bias, y = node.input[0], node.input[1], input_at(node, 2), node.output[0]
    if not builder.is_weight(weight) or (bias and not builder.is_weight(bias)):
        builder.pin_node(node, "Conv weight or bias is computed at run time, not an initializer")
        return
    out_channels, in_per_group = builder.weight_shape(weight)[:2]
    group = int(attr(node, "group", 1))
    _pin_kernel_axes(builder, node, x)
    builder.set_output(y, 0, builder.layout(x, 0, create=False))
    bias_axes = [(bias, 0)] if bias else []
    if group == 1:
        builder.merge([(x, 1), (weight, 1)], node)
        builder.set_output(y, 1, builder.merge([(weight, 0)] + bias_axes, node))
    elif in_per_group == 1 and out_channels == group:
        layout = builder.merge([(x, 1), (weight, 0)] + bias_axes, node)
        builder.set_output(y, 1, layout)
        builder.add_fixup(_depthwise_group_fixup(node, x, group))
    else:
        x_layout = builder.layout(x, 1, node)
        if x_layout is None or builder.atoms.total(x_layout) != in_per_group * group:
            builder.pin_node(node, "grouped Conv whose input channel count is unknown")
            return
        in_piece = _tie_groups(builder, x_layout, group, node)
        builder.tie([in_piece, builder.layout(weight, 1, node)], node)
        out_layout = builder.layout(weight, 0, node)
        _tie_groups(builder, out_layout, group, node)
        if bias:
            builder.merge([(weight, 0), (bias, 0)], node)
        builder.set_output(y, 1, out_layout)


@rule("ConvTranspose")
def conv_transpose(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, weight, bias, y = node.input[0], node.input[1], input_at(node, 2), node.output[0]
    if not builder.is_weight(weight) or (bias and not builder.is_weight(bias)):
        builder.pin_node(node, "ConvTranspose weight or bias is computed at run time")
        return
    in_channels, out_per_group = builder.weight_shape(weight)[:2]
    group = int(attr(node, "group", 1))
    _pin_kernel_axes(builder, node, x)
    builder.set_output(y, 0, builder.layout(x, 0, create=False))
    bias_axes = [(bias, 0)] if bias else []
    if group == 1:
        builder.merge([(x, 1), (weight, 0)], node)
        builder.set_output(y, 1, builder.merge([(weight, 1)] + bias_axes, node))
    elif out_per_group == 1 and in_channels == group:
        builder.set_output(y, 1, builder.merge([(x, 1), (weight, 0)] + bias_axes, node))
        builder.add_fixup(_depthwise_group_fixup(node, x, group))
    else:
        builder.pin_node(node, "grouped ConvTranspose is not supported")
