"""Which weights TensorRT can run with sparse tensor cores, and along which axis.

The rule is TensorRT's, as Polygraphy's `inspect sparsity` (polygraphy/tools/sparse.py) encodes it:
- Conv: the weight's input-channel axis (1), at every kernel position and output channel;
- MatMul: a constant B along axis 0 (K), a constant A along axis 1;
- Gemm: B along axis 1 when transB=1 else 0; A along axis 0 when transA=1 else 1;
looking back from the operand through QuantizeLinear/DequantizeLinear/Cast (axis unchanged) and
Transpose (axis remapped) to an initializer; float32/float16/bfloat16 only; the axis length a
multiple of 4 (of M for N:M).

Three places where this departs from Polygraphy, all where Polygraphy is wrong for the graph it sees:
Transpose maps output axis a to input axis perm[a] (Polygraphy uses perm.index(a); the same for
every 2-D and every self-inverse perm), a constant MatMul operand of rank 3 or more (a batched
matmul, which TensorRT does not run on sparse kernels) is not eligible (Polygraphy checks its axis 0),
and an Identity is looked through (torch's TorchScript exporter reads every initializer equal to an
earlier one through an Identity; TensorRT's parser folds it into a constant weight).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..io.model import Model

SPARSE_DTYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
_AXIS_PRESERVING = ("QuantizeLinear", "DequantizeLinear", "TRT_FP8QuantizeLinear", "TRT_FP8DequantizeLinear", "Cast",
                    "Identity")


@dataclass
class Use:
    """One sparse-math operand: `node` reads `weight` (through `via`) with the sparse axis `axis`."""

    node: onnx.NodeProto
    operand: int  # which input of the node (0 = A / X, 1 = B / W)
    axis: int  # sparse axis in the weight's own layout
    via: list[str] = field(default_factory=list)  # op types looked through


@dataclass
class Candidate:
    """A weight that feeds sparse math: eligible, or not and why."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    uses: list[Use]
    reason: str | None = None  # None when eligible

    @property
    def eligible(self) -> bool:
        return self.reason is None

    @property
    def axis(self) -> int:
        return self.uses[0].axis

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nodes(self) -> list[str]:
        return [use.node.name or use.node.output[0] for use in self.uses]

    def to_dict(self) -> dict:
        first = self.uses[0]
        return {
            "name": self.name, "op": first.node.op_type, "nodes": self.nodes, "shape": list(self.shape),
            "dtype": self.dtype, "axis": self.axis, "via": first.via, "eligible": self.eligible,
            "reason": self.reason,
        }


def _operands(node: onnx.NodeProto) -> list[tuple[int, int | None]]:
    """(input index, sparse axis of that operand; None = 'K axis of a rank-r operand, decided later')."""
    if node.op_type == "Conv":
        return [(1, 1)]
    if node.op_type == "MatMul":
        return [(0, None), (1, None)]
    if node.op_type == "Gemm":
        attrs = {a.name: a.i for a in node.attribute}
        return [(0, 0 if attrs.get("transA", 0) else 1), (1, 1 if attrs.get("transB", 0) else 0)]
    return []


def _trace(
    model: Model, tensor: str, axis: int | None, operand: int | None
) -> tuple[str, int | None, list[str]] | None:
    """Follow `tensor` back to an initializer; (weight, axis in its layout, op types passed)."""
    via: list[str] = []
    for _ in range(64):  # chains of casts and transposes are short; the bound guards odd graphs
        if model.is_weight(tensor):
            return tensor, axis, via
        producer = model.producer(tensor)
        if producer is None:
            return None
        if producer.op_type in _AXIS_PRESERVING:
            via.append(producer.op_type)
            tensor = producer.input[0]
        elif producer.op_type == "Transpose":
            perm = next((list(a.ints) for a in producer.attribute if a.name == "perm"), None)
            source = producer.input[0]
            if perm is None:
                rank = _rank(model, source)
                if rank is None:
                    return None
                perm = list(reversed(range(rank)))
            if axis is None:
                # MatMul operand: its K axis is fixed by the MatMul side (A: last, B: first of the last two).
                axis = len(perm) - 1 if operand == 0 else len(perm) - 2
            via.append("Transpose")
            axis = perm[axis] if axis < len(perm) else None
            if axis is None:
                return None
            tensor = source
        else:
            return None
    return None


def _rank(model: Model, name: str) -> int | None:
    if model.is_weight(name):
        return model.weights[name].numpy().ndim
    info = model.infer_shapes().get(name)
    return len(info.shape) if info is not None and info.shape is not None else None


def find_candidates(model: Model, group: int = 4) -> list[Candidate]:
    """Every initializer that feeds Conv/MatMul/Gemm sparse math in the main graph, in graph order."""
    found: dict[str, Candidate] = {}
    for node in model.graph.node:
        for operand, axis in _operands(node):
            if operand >= len(node.input) or not node.input[operand]:
                continue
            traced = _trace(model, node.input[operand], axis, operand if node.op_type == "MatMul" else None)
            if traced is None:
                continue
            name, weight_axis, via = traced
            array = model.weights[name].numpy()
            if weight_axis is None:  # MatMul operand read directly
                weight_axis = max(array.ndim - 1, 0) if operand == 0 else max(array.ndim - 2, 0)
            use = Use(node, operand, weight_axis, via)
            if name in found:
                found[name].uses.append(use)
            else:
                dtype = onnx.TensorProto.DataType.Name(model.weights[name].header.data_type).lower()
                found[name] = Candidate(name, tuple(array.shape), dtype, [use])
    for candidate in found.values():
        candidate.reason = _ineligible_reason(model, candidate, group)
    return list(found.values())


def _ineligible_reason(model: Model, candidate: Candidate, group: int) -> str | None:
    header = model.weights[candidate.name].header
    if header.data_type not in SPARSE_DTYPES:
        return f"dtype {candidate.dtype} (sparse math takes float32, float16, bfloat16)"
    first = candidate.uses[0]
    if first.node.op_type == "MatMul" and len(candidate.shape) > 2:
        return f"rank-{len(candidate.shape)} MatMul operand (batched matmul: no sparse kernels)"
    if len(candidate.shape) == 0 or candidate.axis >= len(candidate.shape):
        return "scalar operand"
    if any(use.axis != first.axis for use in candidate.uses):
        return "read along different axes by different nodes"
    length = candidate.shape[candidate.axis]
    if length % group:
        return f"axis {candidate.axis} has {length} elements, not a multiple of {group}"
    return None


# TensorRT runs a weight sparse only as a GEMM on sparse tensor cores, tiled in multiples of 8 output
# rows and 16 along the reduced (sparse) axis. NVIDIA's ASP (apex.contrib.sparsity, the tool of
# TensorRT's sparsity workflow) skips every weight of another shape for that reason ("check for
# NVIDIA's TC compatibility": size(0) % 8, size(1) % 16; for a Conv size(1) is its input channels per
# group). TensorRT also picks the sparse kernel only when it is faster than the dense one, which its
# engineers report needs about 256 input and output channels (NVIDIA/TensorRT#3849, #4065); below the
# tile shape it cannot be faster at all. A weight of another shape gains nothing from zeros and loses
# accuracy (YOLOv8's 1x16x1x1 DFL Conv holds a fixed arange(16): zeroing half moves boxes by pixels).
TILE_ROWS, TILE_DEPTH = 8, 16


def rows_of(candidate: Candidate) -> int:
    """The GEMM's output rows a weight makes: a Conv's output channels, the other axis of a matrix."""
    if len(candidate.shape) != 2:
        return candidate.shape[0]
    return candidate.shape[1 - candidate.axis]


def untiled_reason(candidate: Candidate) -> str | None:
    """Why TensorRT's sparse tensor cores cannot run this eligible weight faster, or None."""
    rows, depth = rows_of(candidate), candidate.shape[candidate.axis]
    if rows % TILE_ROWS == 0 and depth % TILE_DEPTH == 0:
        return None
    return (f"{rows} output rows x {depth} along the sparse axis: TensorRT's sparse tensor-core tiles need "
            f"multiples of {TILE_ROWS} and {TILE_DEPTH}, so zeros gain nothing (--sparse-any-shape sparsifies it)")


def apply_policy(model: Model, candidates: list[Candidate], exclude: list[str], min_params: int,
                 any_shape: bool = False) -> None:
    """Mark eligible candidates left dense: `--exclude`d nodes, weights below `--sparse-min-params`, and
    by default (unless `any_shape`) weights whose shape TensorRT's sparse kernels cannot speed up."""
    for candidate in candidates:
        if not candidate.eligible:
            continue
        if not any_shape:
            candidate.reason = untiled_reason(candidate)
            if candidate.reason:
                continue
        for pattern in exclude:
            if any(fnmatch.fnmatchcase(node, pattern) for node in candidate.nodes):
                candidate.reason = f"excluded by --exclude '{pattern}'"
                break
        if candidate.eligible and candidate.size < min_params:
            candidate.reason = f"{candidate.size} parameters, below --sparse-min-params {min_params}"
