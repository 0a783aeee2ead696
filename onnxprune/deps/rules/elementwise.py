"""Element-wise ops: activations pass channels through; n-ary ops tie broadcast operands."""

from __future__ import annotations

import onnx

from ..builder import SpaceBuilder
from . import rule

UNARY = (
    "Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Gelu", "Mish", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Sin", "Cos",
    "Floor", "Ceil", "Round", "Sign", "Not", "Identity", "Cast", "ThresholdedRelu", "IsNaN", "IsInf",
    "Dropout", "Clip", "CastLike", "Shrink",
)
NARY = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "PRelu", "BitShift",
)


def broadcast(builder: SpaceBuilder, node: onnx.NodeProto, operands: list[str]) -> None:
    """Numpy broadcasting: right-aligned axes of equal size are the same channels."""
    operands = [name for name in operands if name]
    ranks = [builder.rank(name) for name in operands]
    if any(rank is None for rank in ranks):
        if any(builder.tracked(name) for name in operands):
            builder.pin_node(node, f"{node.op_type} operand of unknown rank")
        return
    out_rank = max(ranks)
    for out_axis in range(out_rank):
        parts = []
        for name, rank in zip(operands, ranks):
            axis = out_axis - (out_rank - rank)
            if axis >= 0 and builder.dim(name, axis) != 1:
                parts.append((name, axis))
        layout = builder.merge(parts, node) if parts else None
        for output in node.output:
            builder.set_output(output, out_axis, layout)


@rule(*UNARY)
def unary(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    # Only input 0 carries data: Clip's bounds, Dropout's ratio and CastLike's target do not.
    broadcast(builder, node, [node.input[0]])


@rule(*NARY)
def nary(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    broadcast(builder, node, list(node.input))
