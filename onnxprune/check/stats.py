"""Parameters, FLOPs and bytes of a Model, for the report."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ..deps.shape_values import ShapeValues
from ..io.model import Model
from ..io.protoio import WeightData
from . import counts as metrics


def folded_light_proto(model: Model, input_shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A weightless copy with shape computations (Shape -> Gather -> Div ...) folded to constants.

    onnx's shape inference cannot see through every such computation (torch's chunk uses Div), and
    a tensor of unknown shape would count as zero FLOPs.
    """
    light = model.light_proto(input_shapes)
    infos = model.infer_shapes(input_shapes)
    values = ShapeValues(model, infos)
    folded = {name for name, value in values.values.items() if value.fully_known}
    if not folded:
        return light
    kept = []
    for node in light.graph.node:
        outputs = [name for name in node.output if name]
        if outputs and all(name in folded for name in outputs):
            for name in outputs:
                light.graph.initializer.append(numpy_helper.from_array(np.asarray(values.values[name].value), name))
        else:
            kept.append(node)
    del light.graph.node[:]
    light.graph.node.extend(kept)
    return light


# Integer weights that hold parameters (quantized weights behind DequantizeLinear, int32 QDQ biases);
# int64 initializers are shape constants and indices, not parameters.
_PARAMETER_INTS = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32))
_PACKED_INTS = frozenset((onnx.TensorProto.INT4, onnx.TensorProto.UINT4))


def is_float_dtype(dtype: np.dtype) -> bool:
    """numpy floats and the ml_dtypes ones (bfloat16, float8), which numpy files under kind 'V'."""
    return dtype.kind == "f" or (dtype.kind == "V" and dtype.itemsize <= 2 and dtype.names is None)


def parameter_count(weights: Iterable[WeightData]) -> int:
    total = 0
    for weight in weights:
        if weight.array is not None:
            if is_float_dtype(weight.array.dtype) or weight.array.dtype in _PARAMETER_INTS:
                total += weight.array.size
        elif weight.data_type in _PACKED_INTS:
            total += int(np.prod(weight.shape, dtype=np.int64))
    return total


def model_stats(model: Model, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    flops = metrics.count_flops(folded_light_proto(model, input_shapes), input_shapes)
    params = parameter_count(model.weights.values())
    return {
        "params": int(params),
        "flops": int(flops.total),
        "flops_by_op": flops.by_op_type,
        "flops_unknown_nodes": flops.unknown,
        "weight_bytes": int(model.nbytes()),
    }
