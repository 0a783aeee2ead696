"""Which weights recovery trains, and how trained values go back into the Model.

A weight trains when every node reading it uses it as a learned parameter: the kernels and biases
of Conv/ConvTranspose/Gemm/MatMul, the scale and shift of normalizations, PRelu slopes, embedding
tables, and per-channel vectors added to or multiplied into a feature map (a bias after a MatMul,
a layer scale). Everything else is frozen: integer and quantized tensors, scalars, shape and index
constants, grids and strides of a detector's decoding (their non-1 dims are not the channel axis),
and anything read by a node the interpreter runs outside autograd.

Writing back keeps each initializer's name, element type and shape (only its values change), so
the graph, the file layout and every other reader of the weight stay as they were.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..io.model import Model

# (op type, input index) pairs whose initializer is a learned parameter.
_ROLES = {
    ("Conv", 1), ("Conv", 2), ("ConvTranspose", 1), ("ConvTranspose", 2),
    ("Gemm", 0), ("Gemm", 1), ("Gemm", 2), ("MatMul", 0), ("MatMul", 1),
    ("BatchNormalization", 1), ("BatchNormalization", 2), ("InstanceNormalization", 1),
    ("InstanceNormalization", 2), ("LayerNormalization", 1), ("LayerNormalization", 2),
    ("SkipLayerNormalization", 2), ("SkipLayerNormalization", 3), ("SkipLayerNormalization", 4),
    ("PRelu", 1), ("Gather", 0),
}
_CHANNEL_VECTOR_OPS = ("Add", "Sub", "Mul")


def _channel_vector(shape: tuple[int, ...], partner_rank: int | None) -> bool:
    """A per-channel vector for a feature map of `partner_rank`: one non-1 dim, on the channel axis
    (axis 1 of NCHW-like maps, the last axis of [N, C] and [N, T, C])."""
    big = [i for i, d in enumerate(shape) if d != 1]
    if len(big) != 1 or partner_rank is None or len(shape) > partner_rank:
        return False
    position = partner_rank - len(shape) + big[0]
    return position == (1 if partner_rank >= 4 else partner_rank - 1)


def choose_trainable(model: Model, untracked_ops: set[str] = frozenset()) -> tuple[list[str], Counter]:
    """(names of the weights to train, why the other float weights are frozen: reason -> count).

    `untracked_ops`: op types the interpreter runs outside autograd; their weights stay frozen.
    """
    shapes = model.infer_shapes()
    trainable, frozen = [], Counter()
    for name, weight in model.weights.items():
        array = weight.array
        if array is None or (array.dtype.kind != "f" and array.dtype.name != "bfloat16"):
            continue
        if array.size <= 1:
            frozen["scalar"] += 1
            continue
        if name in model.output_names:
            frozen["graph output"] += 1
            continue
        reason = None
        for node, index in model.consumers(name):
            if index < 0:
                reason = "read inside a subgraph"
            elif node.op_type in untracked_ops:
                reason = f"read by {node.op_type} (run without gradients)"
            elif (node.op_type, index) in _ROLES:
                continue
            elif node.op_type in _CHANNEL_VECTOR_OPS and len(node.input) == 2:
                partner = node.input[1 - index]
                info = shapes.get(partner)
                if not model.is_weight(partner) and info is not None and \
                        _channel_vector(tuple(array.shape), info.rank):
                    continue
                reason = f"a constant of {node.op_type} (not a per-channel vector)"
            else:
                reason = f"read by {node.op_type} as input {index}"
            if reason:
                break
        if reason is None and not model.consumers(name):
            reason = "unused"
        if reason:
            frozen[reason] += 1
        else:
            trainable.append(name)
    return trainable, frozen


def write_back(model: Model, trained: dict[str, np.ndarray]) -> int:
    """Store trained float32 values under the same names, in each weight's own dtype and shape."""
    for name, values in trained.items():
        original = model.weight(name)
        if tuple(values.shape) != tuple(original.shape):
            raise AssertionError(f"trained '{name}' has shape {values.shape}, the weight {original.shape}")
        model.set_weight(name, np.asarray(values).astype(original.dtype, copy=False))
    return len(trained)
