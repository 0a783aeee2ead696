"""QuantizeLinear and DequantizeLinear (QDQ models).

A DequantizeLinear of constant weights needs no rule: the builder treats its output as a weight whose
axes are the quantized initializer's (and, on the quantization axis, the per-channel scale's and zero
point's). On activations both ops map element to element, so channels pass through; a per-axis scale
on the channel axis joins the channel's space and is sliced with it. Blocked quantization (opset 21
`block_size`) ties blocks of channels to one scale entry: not handled, it pins.
"""

from __future__ import annotations

import onnx

from ...io.protoio import np_dtype
from ..builder import SpaceBuilder
from ..quantized import quantization_axis
from . import rule
from .common import attr, input_at, norm_axis, same_axes


@rule("QuantizeLinear", "DequantizeLinear")
def quantize_linear(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, y = node.input[0], node.output[0]
    if y in builder.dequantized:
        return  # a quantized weight: its layouts are made when a consumer asks for them
    if builder.is_weight(x):  # a constant the builder did not take as a quantized weight
        builder.pin_node(node, f"{node.op_type} of a constant with {_why_not(builder, node)}: not handled")
        return
    scale, zero_point = input_at(node, 1), input_at(node, 2)
    rank = builder.rank(x)
    scale_dims = builder.dims(scale) if scale else None
    if rank is None or scale_dims is None or any(not isinstance(d, int) for d in scale_dims):
        if builder.tracked(x):
            builder.pin_node(node, f"{node.op_type} whose input rank or scale shape is unknown")
        return
    axis = norm_axis(int(attr(node, "axis", 1)), rank)
    axis_size = builder.dim(x, axis) if 0 <= axis < rank else None
    axis, understood = quantization_axis(node, rank, tuple(scale_dims), axis_size)
    if not understood:
        builder.pin_node(node, f"{node.op_type} with blocked or unrecognized quantization parameters")
        return
    same_axes(builder, node, x, y)
    if axis is None:
        return
    if not all(builder.is_weight(name) for name in (scale, zero_point) if name):
        builder.pin_node(node, f"{node.op_type} with a per-axis scale computed at run time")
        return
    items = [(x, axis), (scale, 0)] + ([(zero_point, 0)] if zero_point else [])
    builder.set_output(y, axis, builder.merge(items, node))



def _why_not(builder: SpaceBuilder, node: onnx.NodeProto) -> str:
    if attr(node, "block_size", 0):
        return "blocked quantization (block_size)"
    packed = [name for name in node.input if builder.model.is_weight(name)
              and np_dtype(builder.model.weights[name].data_type) is None]
    return "a packed element type (int4...)" if packed else "quantization parameters of unexpected shape"
