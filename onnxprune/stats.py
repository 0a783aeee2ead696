"""Parameters, FLOPs and bytes of a Model, for the report."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from . import metrics
from .deps.shape_values import ShapeValues
from .model import Model


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


def model_stats(model: Model, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    flops = metrics.count_flops(folded_light_proto(model, input_shapes), input_shapes)
    params = sum(w.array.size for w in model.weights.values() if w.array is not None and w.array.dtype.kind == "f")
    return {
        "params": int(params),
        "flops": int(flops.total),
        "flops_by_op": flops.by_op_type,
        "flops_unknown_nodes": flops.unknown,
        "weight_bytes": int(model.nbytes()),
    }
