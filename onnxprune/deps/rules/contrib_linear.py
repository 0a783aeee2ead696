"""ONNX Runtime's fused linear and activation ops (com.microsoft).

MatMulNBits is a MatMul whose weight B is stored quantized in blocks along K: B [N, k_blocks, blob]
(blob = block_size * bits / 8 bytes), scales and zero points [N, k_blocks] (or flattened, N-major),
bias [N]. Output features (N) are rows of all of them, sliced like any weight's. Input features (K)
can only go a whole block at a time: the space reaching A's last axis is coarsened to blocks of
block_size, and each removed block drops B's blob, its scale and its zero point. Zero points packed
several to a byte (bits < 8) are unpacked, cut and repacked by a fixup. The rewrite is exact in
float (accuracy_level 0); at accuracy_level 4 ORT quantizes the activations to int8, and that
quantization changes when zero blocks leave the row, within its own noise (SmolLM2 int4: 4e-2 of the
logits' range after pruning, against 9e-2 between levels 4 and 0 on the dense model).

FastGelu, BiasGelu, Gelu and QuickGelu are element-wise, with an optional bias on the last axis.
(BiasAdd and BiasSplitGelu have no CPU kernel to check a rewrite against: they pin, by name.)
"""

from __future__ import annotations

import numpy as np
import onnx

from ..builder import Removal, SpaceBuilder
from . import CONTRIB, rule
from .common import attr, input_at, set_int_attr
from .elementwise import broadcast


@rule("FastGelu", "BiasGelu", "Gelu", "QuickGelu", domain=CONTRIB)
def biased_activation(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    broadcast(builder, node, list(node.input))


def _flat_rows(builder: SpaceBuilder, node: onnx.NodeProto, name: str, rows, per_row: int) -> None:
    """A per-row parameter: [N, ...] shares rows with B; flattened [N * per_row] holds blocks of per_row."""
    if not name:
        return
    shape = builder.weight_shape(name)
    own = builder.layout(name, 0, node)
    builder.tie([own, rows if len(shape) > 1 else builder.atoms.widen(rows, per_row)], node)


@rule("MatMulNBits", domain=CONTRIB)
def matmul_nbits(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    a, b, scales = node.input[0], node.input[1], node.input[2]
    zero_points, g_idx, bias = input_at(node, 3), input_at(node, 4), input_at(node, 5)
    k, n, bits, block = (int(attr(node, name, 0)) for name in ("K", "N", "bits", "block_size"))
    rank = builder.rank(a)
    params = [name for name in (b, scales, zero_points, bias) if name]
    if not all(builder.is_weight(name) for name in params) or g_idx or attr(node, "weight_prepacked", 0) or (
            rank is None or not (k and n and bits and block)):
        builder.pin_node(node, f"{node.op_type} with run-time or prepacked weights, g_idx, or unknown sizes")
        return
    k_blocks = -(-k // block)
    if builder.weight_shape(b) != (n, k_blocks, block * bits // 8):
        builder.pin_node(node, f"{node.op_type} B of shape {builder.weight_shape(b)} does not match N, K, bits")
        return
    packed_zeros = bool(zero_points) and builder.model.weights[zero_points].data_type == onnx.TensorProto.UINT8 and (
        bits < 8)
    zero_row = -(-k_blocks * bits // 8) if packed_zeros else k_blocks

    # Output features: rows of B, scales, zero points and bias.
    rows = builder.layout(b, 0, node)
    _flat_rows(builder, node, scales, rows, k_blocks)
    _flat_rows(builder, node, zero_points, rows, zero_row)
    if bias:
        builder.tie([builder.layout(bias, 0, node), rows], node)
    output = node.output[0]
    for axis in range(rank - 1):
        builder.set_output(output, axis, builder.layout(a, axis, create=False))
    builder.set_output(output, rank - 1, rows)

    # Input features: whole blocks, when the block grid is exact and the per-block parameters are 2-D.
    blocks = builder.layout(b, 1, node)
    k_layout = builder.layout(a, rank - 1, node)
    if k % block or len(builder.weight_shape(scales)) != 2 or (zero_points and len(builder.weight_shape(
            zero_points)) != 2):
        builder.pin_layout(blocks, f"{node.op_type} input features: a partial last block or flattened scales", node)
        if k_layout is not None:
            builder.pin(a, rank - 1, f"{node.op_type} input features: a partial last block or flattened scales",
                        node)
    else:
        builder.tie([k_layout, builder.atoms.widen(blocks, block)], node)
        builder.tie([builder.layout(scales, 1, node), blocks], node)
        if zero_points and not packed_zeros:
            builder.tie([builder.layout(zero_points, 1, node), blocks], node)

    def fix(removal: Removal) -> None:
        removed_rows, removed_blocks = removal.removed(b, 0), removal.removed(b, 1)
        if removed_rows.size:
            set_int_attr(node, "N", n - removed_rows.size)
        if removed_blocks.size:
            set_int_attr(node, "K", k - removed_blocks.size * block)
            if packed_zeros:
                current = builder.model.weight(zero_points)
                builder.model.set_weight(zero_points, _drop_packed(current, removed_blocks, bits, k_blocks))

    builder.add_fixup(fix)


def _drop_packed(packed: np.ndarray, removed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Remove entries `removed` from each row of `count` values packed `8 // bits` to a byte, lowest
    bits first (ORT's order), and pack the rest the same way."""
    per_byte = 8 // bits
    shifts = (np.arange(per_byte) * bits).astype(np.uint8)
    values = ((packed[..., None] >> shifts) & ((1 << bits) - 1)).reshape(packed.shape[0], -1)[:, :count]
    kept = np.delete(values, removed, axis=1)
    width = -(-kept.shape[1] // per_byte) * per_byte
    padded = np.zeros((kept.shape[0], width), np.uint8)
    padded[:, :kept.shape[1]] = kept
    grouped = padded.reshape(kept.shape[0], -1, per_byte) << shifts
    return np.bitwise_or.reduce(grouped, axis=2).astype(np.uint8)
