"""Facts about a graph that the channel builder needs before any rule runs: QDQ weights and names that
subgraphs define again."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from ..io.model import Model
from ..io.protoio import np_dtype

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Dequantized:
    """y = DequantizeLinear(q, scale, zero_point) with all three constant: a weight stored quantized."""

    q: str
    scale: str
    zero_point: str  # '' when absent
    axis: int | None  # the quantization axis of q, None for one scale for the whole tensor

    def members(self, axis: int) -> list[tuple[str, int]]:
        """The initializer axes that lose the same channels as axis `axis` of the dequantized value."""
        tied = [(self.q, axis)]
        if axis == self.axis:
            tied += [(self.scale, 0)] + ([(self.zero_point, 0)] if self.zero_point else [])
        return tied


def _attr(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def quantization_axis(node: onnx.NodeProto, rank: int, scale_shape: tuple[int, ...], axis_size: int | None):
    """(axis or None for per tensor, understood): blocked quantization (opset 21 block_size) and scales
    whose shape matches neither form are not understood."""
    if _attr(node, "block_size", 0) or len(scale_shape) > 1:
        return None, False
    size = 1
    for dim in scale_shape:
        size *= dim
    axis = int(_attr(node, "axis", 1))
    axis = axis + rank if axis < 0 else axis
    if len(scale_shape) == 1 and 0 <= axis < rank and axis_size == scale_shape[0]:
        return axis, True
    if size == 1:
        return None, True
    return None, False


def find_dequantized(model: Model) -> dict[str, Dequantized]:
    """DequantizeLinear nodes of the main graph whose inputs are all initializers, by output name."""
    found: dict[str, Dequantized] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in _DEFAULT_DOMAINS or len(node.input) < 2:
            continue
        q, scale = node.input[0], node.input[1]
        zero_point = node.input[2] if len(node.input) > 2 else ""
        if not all(model.is_weight(name) for name in (q, scale, zero_point) if name) or not (q and scale):
            continue
        if any(np_dtype(model.weights[name].data_type) is None for name in (q, scale, zero_point) if name):
            continue  # int4/uint4 and other packed types are never sliced: the consumer pins
        q_shape, scale_shape = model.weights[q].shape, tuple(model.weights[scale].shape)
        if zero_point and tuple(model.weights[zero_point].shape) != scale_shape:
            continue
        rank = len(q_shape)
        axis = int(_attr(node, "axis", 1))
        axis_size = q_shape[axis + rank if axis < 0 else axis] if -rank <= axis < rank else None
        quant_axis, understood = quantization_axis(node, rank, scale_shape, axis_size)
        if understood and node.output and node.output[0]:
            found[node.output[0]] = Dequantized(q, scale, zero_point, quant_axis)
    return found


def subgraph_definitions(node: onnx.NodeProto) -> set[str]:
    """Every name an If/Loop/Scan subgraph of `node` (at any depth) defines: inputs, initializers, outputs."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for graph in graphs:
            names.update(t.name for t in graph.input)
            names.update(t.name for t in graph.initializer)
            names.update(t.values.name for t in graph.sparse_initializer)
            for inner in graph.node:
                names.update(name for name in inner.output if name)
                names.update(subgraph_definitions(inner))
    return names
