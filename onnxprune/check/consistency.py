"""A cheap consistency check of every node: parameter shapes against the data they meet.

onnx's full check does not compare a LayerNormalization's scale with the axis it normalizes, nor a
Conv's weight with its input's channels: ONNX Runtime does, when it runs the node. A rewrite that
missed one reader of a weight therefore writes a model that passes the checker and fails in ORT.
This check runs before every save, --no-validate included, and refuses to write such a model with
one line naming the node. It reads shapes only (inferred on the light graph, initializer headers,
the values of small integer parameters such as Split sizes and Reshape targets), never weight data,
so it costs the same for a 14 GB model as for a small one.

Only static facts count: a symbolic dim is never a mismatch, so a valid model never fails here.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..io.model import Model
from ..io.shapes import TensorInfo, collect, onnx_inference

Dims = tuple  # of int (static), str (symbolic) or None (unknown)
_ELEMENTWISE = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift",
)
_LAYER_NORMS = ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization")
_SMALL = 4096  # integer parameters up to this size are read (Split sizes, Reshape targets)


class _Shapes:
    def __init__(self, model: Model):
        self.model = model
        # onnx's own inference only (ORT's symbolic pass can take seconds): symbolic dims are never
        # compared anyway.
        self.infos: dict[str, TensorInfo] = {}
        collect(onnx_inference(model.light_proto()), self.infos)

    def dims(self, name: str) -> Dims | None:
        if not name:
            return None
        if self.model.is_weight(name):
            return tuple(self.model.weights[name].shape)
        info = self.infos.get(name)
        return None if info is None or info.shape is None else tuple(info.shape)

    def ints(self, name: str) -> list[int] | None:
        """The value of a small integer initializer (a parameter, not a weight)."""
        if not name or not self.model.is_weight(name):
            return None
        weight = self.model.weights[name]
        if weight.array is None or weight.array.dtype.kind not in "iu" or weight.array.size > _SMALL:
            return None
        return [int(v) for v in np.asarray(weight.array).reshape(-1)]


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _static(dim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool)


def _differ(a, b) -> bool:
    return _static(a) and _static(b) and a != b


def _broadcast_clash(shapes: list[Dims]) -> tuple[int, list] | None:
    """(axis from the right, the clashing sizes) where numpy broadcasting certainly fails."""
    for offset in range(1, max(len(s) for s in shapes) + 1):
        sizes = {s[-offset] for s in shapes if len(s) >= offset and _static(s[-offset]) and s[-offset] != 1}
        if len(sizes) > 1:
            return offset, sorted(sizes)
    return None


def _fits(param: Dims, target: Dims) -> bool:
    """Does `param` broadcast to `target` one way (numpy rules, `target` unchanged)?"""
    if len(param) > len(target):
        return False
    return not any(_differ(p, t) and p != 1 for p, t in zip(param[::-1], target[::-1]))


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


def _conv(node, shapes: _Shapes) -> str | None:
    x, w, b = shapes.dims(_input(node, 0)), shapes.dims(_input(node, 1)), shapes.dims(_input(node, 2))
    if x is None or w is None or len(x) < 2 or len(w) < 2:
        return None
    group = int(_attr(node, "group", 1))
    if node.op_type == "Conv":
        if _static(w[1]) and _differ(x[1], w[1] * group):
            return f"its weight takes {w[1] * group} input channels ({w[1]} x group {group}), its input has {x[1]}"
        if _static(w[0]) and w[0] % group:
            return f"its weight has {w[0]} output channels, not a multiple of group {group}"
        out = w[0]
    else:
        if _differ(x[1], w[0]):
            return f"its weight takes {w[0]} input channels, its input has {x[1]}"
        out = w[1] * group if _static(w[1]) else None
    if b is not None and len(b) == 1 and _differ(b[0], out):
        return f"its bias has {b[0]} entries for {out} output channels"
    return None


def _per_channel(node, shapes: _Shapes) -> str | None:
    """BatchNormalization / InstanceNormalization: every parameter has one entry per channel (axis 1)."""
    x = shapes.dims(_input(node, 0))
    if x is None or len(x) < 2:
        return None
    for index, name in enumerate(node.input[1:], 1):
        dims = shapes.dims(name)
        if dims is not None and len(dims) == 1 and _differ(dims[0], x[1]):
            return f"input {index} ('{name}') has {dims[0]} entries for {x[1]} channels"
    return None


def _layer_norm(node, shapes: _Shapes) -> str | None:
    x = shapes.dims(_input(node, 0))
    if x is None:
        return None
    axis = int(_attr(node, "axis", -1))
    axis = axis + len(x) if axis < 0 else axis
    normalized = x[axis:]
    for index in (1, 2):
        name = _input(node, index)
        dims = shapes.dims(name)
        if dims is None:
            continue
        if not _fits(dims, normalized):
            return f"input {index} ('{name}') of shape {list(dims)} does not fit the normalized {list(normalized)}"
    return None


def _group_norm(node, shapes: _Shapes) -> str | None:
    x = shapes.dims(_input(node, 0))
    groups = _attr(node, "num_groups")
    if x is None or len(x) < 2 or groups is None:
        return None
    if _static(x[1]) and x[1] % int(groups):
        return f"{x[1]} channels do not split into {groups} groups"
    return None


def _gemm(node, shapes: _Shapes) -> str | None:
    a, b, c = (shapes.dims(_input(node, i)) for i in range(3))
    if a is None or b is None or len(a) != 2 or len(b) != 2:
        return None
    m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
    k2, n = (b[1], b[0]) if _attr(node, "transB", 0) else (b[0], b[1])
    if _differ(k, k2):
        return f"A has {k} columns, B has {k2} rows"
    if c is not None and not _fits(c, (m, n)):
        return f"C of shape {list(c)} does not broadcast to [{m}, {n}]"
    return None


def _matmul(node, shapes: _Shapes) -> str | None:
    a, b = shapes.dims(_input(node, 0)), shapes.dims(_input(node, 1))
    if a is None or b is None or not a or not b:
        return None
    k_a = a[-1]
    k_b = b[0] if len(b) == 1 else b[-2]
    if _differ(k_a, k_b):
        return f"A has {k_a} columns, B has {k_b} rows"
    if len(a) > 2 and len(b) > 2:
        clash = _broadcast_clash([a[:-2], b[:-2]])
        if clash is not None:
            return f"batch sizes {clash[1]} do not broadcast"
    return None


def _elementwise(node, shapes: _Shapes) -> str | None:
    dims = [shapes.dims(name) for name in node.input if name]
    if len(dims) < 2 or any(d is None for d in dims):
        return None
    clash = _broadcast_clash(dims)
    if clash is None:
        return None
    return f"operands of shapes {', '.join(str(list(d)) for d in dims)} do not broadcast"


def _concat(node, shapes: _Shapes) -> str | None:
    dims = [shapes.dims(name) for name in node.input if name]
    if not dims or any(d is None for d in dims) or len({len(d) for d in dims}) != 1:
        return None
    rank = len(dims[0])
    axis = int(_attr(node, "axis", 0))
    axis = axis + rank if axis < 0 else axis
    for other in range(rank):
        sizes = {d[other] for d in dims if _static(d[other])}
        if other != axis and len(sizes) > 1:
            return f"operands differ on axis {other} ({sorted(sizes)}), which is not the concat axis {axis}"
    return None


def _split(node, shapes: _Shapes, opset: int) -> str | None:
    x = shapes.dims(_input(node, 0))
    sizes = shapes.ints(_input(node, 1)) if opset >= 13 else _attr(node, "split")
    if x is None or not sizes:
        return None
    axis = int(_attr(node, "axis", 0))
    axis = axis + len(x) if axis < 0 else axis
    if 0 <= axis < len(x) and _differ(sum(sizes), x[axis]):
        return f"split sizes {list(sizes)} add up to {sum(sizes)}, axis {axis} has {x[axis]}"
    return None


def _reshape(node, shapes: _Shapes) -> str | None:
    x, target = shapes.dims(_input(node, 0)), shapes.ints(_input(node, 1))
    if x is None or target is None or not all(_static(d) for d in x):
        return None
    total = int(np.prod(x, dtype=np.int64))
    if total == 0:  # an empty tensor: -1 is ambiguous and sizes are not what is being checked
        return None
    allow_zero = int(_attr(node, "allowzero", 0))
    sizes = [x[i] if (v == 0 and not allow_zero and i < len(x)) else v for i, v in enumerate(target)]
    known = int(np.prod([s for s in sizes if s != -1], dtype=np.int64))
    if -1 in sizes:
        bad = known == 0 or total % known != 0
    else:
        bad = known != total
    if bad:
        return f"target shape {target} does not hold the {total} elements of its input {list(x)}"
    return None


def _expand(node, shapes: _Shapes) -> str | None:
    x, shape = shapes.dims(_input(node, 0)), shapes.ints(_input(node, 1))
    if x is None or shape is None:
        return None
    clash = _broadcast_clash([x, tuple(shape)])
    return None if clash is None else f"input {list(x)} does not broadcast to {shape}"


def _check(node: onnx.NodeProto, shapes: _Shapes, opset: int) -> str | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        return _conv(node, shapes)
    if op in ("BatchNormalization", "InstanceNormalization"):
        return _per_channel(node, shapes)
    if op in _LAYER_NORMS:
        return _layer_norm(node, shapes)
    if op == "GroupNormalization":
        return _group_norm(node, shapes)
    if op == "Gemm":
        return _gemm(node, shapes)
    if op == "MatMul":
        return _matmul(node, shapes)
    if op in _ELEMENTWISE or op == "PRelu":
        return _elementwise(node, shapes)
    if op == "Concat":
        return _concat(node, shapes)
    if op == "Split":
        return _split(node, shapes, opset)
    if op == "Reshape":
        return _reshape(node, shapes)
    if op == "Expand":
        return _expand(node, shapes)
    return None


def inconsistencies(model: Model) -> list[str]:
    """One line per main-graph node whose parameters certainly do not fit its data."""
    shapes = _Shapes(model)
    opset = model.opset or 0
    found = []
    for node in model.graph.node:
        problem = _check(node, shapes, opset)
        if problem:
            found.append(f"{model.node_label(node)}: {problem}")
    return found


def first_inconsistency(model: Model) -> str | None:
    found = inconsistencies(model)
    return found[0] if found else None
