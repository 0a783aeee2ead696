"""What the op families share: the node record, the registry, attribute and dtype helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper


class UnsupportedOp(Exception):
    """A node this interpreter cannot evaluate (an attribute value or mode it does not implement)."""


@dataclass(frozen=True)
class Node:
    op_type: str
    domain: str
    name: str
    attrs: dict[str, Any]
    opset: int  # of the default domain
    outputs: int  # number of outputs the graph asks for (trailing optional ones included)

    @property
    def key(self) -> str:
        return self.op_type if self.domain in ("", "ai.onnx") else f"{self.domain}:{self.op_type}"

    def get(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    @classmethod
    def from_proto(cls, proto: onnx.NodeProto, opset: int) -> Node:
        attrs = {}
        for attribute in proto.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                attrs[attribute.name] = numpy_helper.to_array(attribute.t)
            elif attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS,
                                    onnx.AttributeProto.SPARSE_TENSOR):
                attrs[attribute.name] = None
            else:
                value = helper.get_attribute_value(attribute)
                attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value
        return cls(proto.op_type, proto.domain, proto.name or (proto.output[0] if proto.output else ""), attrs,
                   opset, len(proto.output))


OpFunction = Callable[[Node, list], Any]
OPS: dict[str, OpFunction] = {}


def op(*names: str) -> Callable[[OpFunction], OpFunction]:
    """Register an op function under ONNX op names ("Relu", or "com.microsoft:Gelu" for other domains)."""
    def register(function: OpFunction) -> OpFunction:
        for name in names:
            OPS[name] = function
        return function
    return register


ONNX_TO_TORCH = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8,
    TensorProto.INT16: torch.int16, TensorProto.UINT16: torch.int32, TensorProto.INT32: torch.int32,
    TensorProto.UINT32: torch.int64, TensorProto.INT64: torch.int64, TensorProto.UINT64: torch.int64,
    TensorProto.BOOL: torch.bool,
}


def cast_to(x: torch.Tensor, onnx_type: int) -> torch.Tensor:
    """ONNX Cast: half precision rounds through its type and is carried back in float32."""
    target = ONNX_TO_TORCH.get(onnx_type)
    if target is None:
        raise UnsupportedOp(f"cast to ONNX type {onnx_type}")
    if target in (torch.float16, torch.bfloat16):
        return x.to(target).to(torch.float32)
    if x.is_floating_point() and not target.is_floating_point and target != torch.bool:
        # float -> int truncates toward zero in ONNX Runtime, as in C; NaN has no defined value
        return torch.trunc(x).to(target)
    return x.to(target)


def ints(value: torch.Tensor | None) -> list[int] | None:
    """A 1-D integer tensor (shapes, axes, pads) as Python ints."""
    if value is None:
        return None
    return [int(v) for v in value.reshape(-1).tolist()]


def scalar(value: torch.Tensor | None) -> float | int | bool | None:
    return None if value is None or value.numel() == 0 else value.reshape(-1)[0].item()


def attr_or_input(node: Node, args: list, name: str, index: int) -> list[int] | None:
    """Attributes that later opsets moved into inputs (axes, pads, split, ...)."""
    if name in node.attrs and node.attrs[name] is not None:
        return list(node.attrs[name])
    return ints(args[index]) if len(args) > index and args[index] is not None else None


def arg(args: list, index: int) -> torch.Tensor | None:
    return args[index] if len(args) > index else None


def axis_of(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
