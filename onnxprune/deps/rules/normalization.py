"""Normalization, pooling, resizing, padding, reductions and softmax."""

from __future__ import annotations

import onnx

from ..builder import Removal, SpaceBuilder
from . import rule
from .common import attr, forward, input_at, norm_axis, opset, same_axes


@rule("BatchNormalization", "InstanceNormalization")
def batch_norm(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, params = node.input[0], [name for name in node.input[1:] if name]
    if any(name for name in node.output[1:]):
        builder.pin_node(node, f"{node.op_type} in training mode")
        return
    if not all(builder.is_weight(name) for name in params):
        builder.pin_node(node, f"{node.op_type} parameters are computed at run time")
        return
    # Statistics are per channel, so channels can leave BN independently.
    layout = builder.merge([(x, 1)] + [(name, 0) for name in params], node)
    forward(builder, node, x, node.output[0], lambda a: a if a != 1 else None, None)
    builder.set_output(node.output[0], 1, layout)


@rule("LayerNormalization", "GroupNormalization", "LpNormalization", "MeanVarianceNormalization",
      "LRN", "RMSNormalization")
def statistics_over_axes(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, rank = node.input[0], builder.rank(node.input[0])
    if rank is None:
        builder.pin_node(node, f"{node.op_type} of unknown rank")
        return
    if node.op_type in ("LayerNormalization", "RMSNormalization"):
        first = norm_axis(int(attr(node, "axis", -1)), rank)
        mixed = set(range(first, rank))
    elif node.op_type == "LpNormalization":
        mixed = {norm_axis(int(attr(node, "axis", -1)), rank)}
    elif node.op_type == "MeanVarianceNormalization":
        mixed = {norm_axis(a, rank) for a in attr(node, "axes", [0, 2, 3])}
    else:  # GroupNormalization and LRN mix neighbouring channels
        mixed = {1}
    why = f"{node.op_type} computes statistics across this axis"
    for output in node.output[:1]:
        forward(builder, node, x, output, lambda a: None if a in mixed else a, why)


@rule("Softmax", "LogSoftmax", "Hardmax")
def softmax(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, rank = node.input[0], builder.rank(node.input[0])
    if rank is None:
        builder.pin_node(node, f"{node.op_type} of unknown rank")
        return
    if opset(builder) >= 13:
        mixed = {norm_axis(int(attr(node, "axis", -1)), rank)}
    else:  # before opset 13 the input is flattened to 2-D at `axis`
        mixed = set(range(norm_axis(int(attr(node, "axis", 1)), rank), rank))
    forward(builder, node, x, node.output[0], lambda a: None if a in mixed else a,
            f"{node.op_type} normalizes across this axis")


_REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@rule(*_REDUCE, "ArgMax", "ArgMin")
def reduce(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, rank = node.input[0], builder.rank(node.input[0])
    if not builder.tracked(x):
        return
    if rank is None:
        builder.pin_node(node, f"{node.op_type} of unknown rank")
        return
    if node.op_type in ("ArgMax", "ArgMin"):
        axes = [int(attr(node, "axis", 0))]
    elif opset(builder) >= 18 or (node.op_type == "ReduceSum" and opset(builder) >= 13):
        axes = builder.param(node, 1) if input_at(node, 1) else []
        if axes is None:
            builder.pin_node(node, f"{node.op_type} with run-time axes")
            return
        if not axes and attr(node, "noop_with_empty_axes", 0):
            same_axes(builder, node, x, node.output[0])
            return
    else:
        axes = list(attr(node, "axes", []))
    reduced = {norm_axis(a, rank) for a in axes} if axes else set(range(rank))
    keep = int(attr(node, "keepdims", 1))
    forward(builder, node, x, node.output[0],
            lambda a: None if a in reduced else (a if keep else a - sum(1 for r in reduced if r < a)),
            f"{node.op_type} reduces across this axis")


@rule("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "MaxRoiPool")
def pool(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    if len(node.output) > 1 and node.output[1]:
        builder.pin_node(node, "MaxPool indices encode channel positions")
        return
    forward(builder, node, node.input[0], node.output[0], lambda a: a if a < 2 else None, "pooled axis")


@rule("Resize", "Upsample")
def resize(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, out = node.input[0], node.output[0]
    tracked = builder.tracked(x)
    if not tracked:
        return
    if node.op_type == "Upsample":
        scales_name, sizes_name = input_at(node, 1), ""
    else:
        scales_name, sizes_name = input_at(node, 2), input_at(node, 3)
    if attr(node, "axes") is not None:
        builder.pin_node(node, "Resize with an axes attribute")
        return
    sizes = builder.param(node, 3) if sizes_name else None
    scales = builder.const(scales_name) if scales_name else None
    if sizes_name and sizes is not None:
        passes = {axis for axis in tracked if sizes[axis] == builder.atoms.total(tracked[axis])}
    elif scales is not None and scales.size:
        passes = {axis for axis in tracked if float(scales.reshape(-1)[axis]) == 1.0}
    else:
        builder.pin_node(node, f"{node.op_type} with run-time scales or sizes")
        return
    forward(builder, node, x, out, lambda a: a if a in passes else None, f"{node.op_type} rescales this axis")
    if sizes is None:
        return

    def fix(removal: Removal) -> None:
        new_sizes = [size - (removal.count(x, axis) if axis in passes else 0) for axis, size in enumerate(sizes)]
        if new_sizes != sizes:
            builder.write_param(node, 3, new_sizes, f"{node.name}_sizes")

    builder.add_fixup(fix)


@rule("Pad")
def pad(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    x, rank = node.input[0], builder.rank(node.input[0])
    if not builder.tracked(x):
        return
    pads = builder.param(node, 1) if opset(builder) >= 11 else list(attr(node, "pads", []))
    axes = builder.param(node, 3) if input_at(node, 3) else None
    if rank is None or pads is None or (input_at(node, 3) and axes is None):
        builder.pin_node(node, "Pad with run-time pads")
        return
    axes = [norm_axis(a, rank) for a in axes] if axes is not None else list(range(rank))
    padded = {axis for position, axis in enumerate(axes)
              if pads[position] != 0 or pads[position + len(axes)] != 0}
    forward(builder, node, x, node.output[0], lambda a: None if a in padded else a, "Pad adds channels")
