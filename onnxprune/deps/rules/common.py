"""Small helpers shared by the rules."""

from __future__ import annotations

import onnx
from onnx import helper

from ..builder import SpaceBuilder


def attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def set_int_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    for attribute in node.attribute:
        if attribute.name == name:
            attribute.i = int(value)
            return
    node.attribute.append(helper.make_attribute(name, int(value)))


def set_ints_attr(node: onnx.NodeProto, name: str, values) -> None:
    remove_attr(node, name)
    node.attribute.append(helper.make_attribute(name, [int(v) for v in values]))


def remove_attr(node: onnx.NodeProto, name: str) -> None:
    for index, attribute in enumerate(node.attribute):
        if attribute.name == name:
            del node.attribute[index]
            return


def input_at(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


def opset(builder: SpaceBuilder) -> int:
    return builder.model.opset or 0


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def forward(builder: SpaceBuilder, node: onnx.NodeProto, src: str, dst: str, axis_map, why: str | None) -> None:
    """Carry the tracked axes of `src` to `dst`. axis_map(axis) gives the new axis, or None for an
    axis that does not survive: it is pinned with `why`, or left to the caller when `why` is None."""
    for axis, layout in builder.tracked(src).items():
        target = axis_map(axis)
        if target is not None:
            builder.set_output(dst, target, layout)
        elif why is not None:
            builder.pin(src, axis, why, node)


def same_axes(builder: SpaceBuilder, node: onnx.NodeProto, src: str, dst: str) -> None:
    forward(builder, node, src, dst, lambda axis: axis, None)
