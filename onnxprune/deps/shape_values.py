"""Values computed from tensor shapes (Shape -> Gather -> Div -> Slice bounds, and so on).

Exporters compute split points, slice bounds and reshape targets from `Shape` at run time (torch's
`chunk` does). Such a value is harmless to a channel space only if every place it ends up is a
parameter that a rule rewrites with a constant. We evaluate these small integer subgraphs here,
remember which (tensor, axis) sizes each value was derived from, and let the builder pin those axes
wherever a derived value leaks into anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..io.model import Model, TensorInfo

_NO_SOURCES: frozenset = frozenset()


@dataclass(frozen=True)
class Origin:
    """Where one element of a shape value comes from: the (tensor, axis) sizes it was computed from,
    and, when it is an unchanged copy of one size, which one."""

    sources: frozenset = _NO_SOURCES
    copy_of: tuple[str, int] | None = None
    factor: int = 1  # the element is factor * size(copy_of): repeat_kv's kv_heads * n_rep


_CONSTANT = Origin()
_mix_elements = np.frompyfunc(lambda a, b: Origin(a.sources | b.sources), 2, 1)


def _scaled(origin: Origin, other: Origin, other_value) -> Origin:
    """origin * other: still a copy (scaled) when the other factor is a plain constant."""
    if origin.copy_of is not None and not other.sources:
        return Origin(origin.sources, origin.copy_of, origin.factor * int(other_value))
    if other.copy_of is not None and not origin.sources:
        return other  # handled by the symmetric call
    return Origin(origin.sources | other.sources)


_scale_elements = np.vectorize(_scaled, otypes=[object])
_is_copy = np.vectorize(lambda origin: origin.copy_of is not None, otypes=[bool])


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise arithmetic: each result reads both operands' sources and copies nothing."""
    result = _mix_elements(a, b)
    if isinstance(result, Origin):  # 0-d inputs give a bare element back
        return _origins_like(np.empty(()), result)
    return result


def _origins_like(array: np.ndarray, origin: Origin = _CONSTANT) -> np.ndarray:
    out = np.empty(np.shape(array), dtype=object)
    out.fill(origin)
    return out


@dataclass
class ShapeValue:
    value: np.ndarray  # int64 (or bool), entries where `known` is False are meaningless
    known: np.ndarray  # bool, same shape
    # Per element: x.view(x.size(0), -1) reads the batch size only, and must not pin the channels.
    origins: np.ndarray  # object array of Origin, same shape

    @property
    def fully_known(self) -> bool:
        return bool(np.all(self.known))

    def element(self, index: int) -> Origin:
        return self.origins.reshape(-1)[index]

    @property
    def all_sources(self) -> frozenset:
        return frozenset().union(*(o.sources for o in self.origins.reshape(-1).tolist()))


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # ONNX integer Div truncates toward zero, numpy's // floors.
    safe = np.where(b == 0, 1, b)
    return np.sign(a) * np.sign(safe) * (np.abs(a) // np.abs(safe))


_BINARY = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum,
    "Equal": np.equal, "Less": np.less, "Greater": np.greater, "Mod": np.mod,
}


class ShapeValues:
    def __init__(self, model: Model, shapes: dict[str, TensorInfo]):
        self.model = model
        self.shapes = shapes
        self.values: dict[str, ShapeValue] = {}
        for node in model.graph.node:
            if node.domain in ("", "ai.onnx"):
                try:
                    self._evaluate(node)
                except (ValueError, IndexError, TypeError):
                    continue  # not something we can evaluate: it stays a run-time value

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str) -> ShapeValue | None:
        return self.values.get(name)

    def _operand(self, name: str) -> ShapeValue | None:
        if name in self.values:
            return self.values[name]
        if name and self.model.is_weight(name):
            array = self.model.weight(name)
            if array.dtype.kind in "iub" and array.size <= 64:
                return ShapeValue(np.asarray(array), np.ones(array.shape, bool), _origins_like(array))
        return None

    def _evaluate(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        if op == "Shape":
            self._shape(node)
            return
        inputs = [self._operand(name) if name else None for name in node.input]
        present = [value for value in inputs if value is not None]
        if not any(name in self.values for name in node.input) or len(present) != sum(1 for n in node.input if n):
            return
        result = self._compute(node, op, inputs)
        if result is not None:
            value, known, origins = result
            value = np.asarray(value)
            if origins is None:  # a mix of everything: every element reads every source
                origins = _origins_like(value, Origin(frozenset().union(*(v.all_sources for v in present))))
            elif not isinstance(origins, np.ndarray):  # numpy hands single elements back bare
                origins = _origins_like(value, origins)
            self.values[node.output[0]] = ShapeValue(value, np.asarray(known, bool), origins)

    def _shape(self, node: onnx.NodeProto) -> None:
        info = self.shapes.get(node.input[0])
        if info is None or info.shape is None:
            return
        rank = len(info.shape)
        start = _attr(node, "start", 0)
        end = _attr(node, "end", rank)
        start, end = (s + rank if s < 0 else s for s in (start, end))
        start, end = max(0, min(start, rank)), max(0, min(end, rank))
        dims = info.shape[start:end]
        value = np.array([d if isinstance(d, int) else 0 for d in dims], np.int64)
        known = np.array([isinstance(d, int) for d in dims], bool)
        origins = np.empty(len(dims), dtype=object)
        for position, axis in enumerate(range(start, end)):
            if node.input[0] in self.values:  # the length of a shape value is static: nothing to track
                origins[position] = _CONSTANT
            else:
                origins[position] = Origin(frozenset({(node.input[0], axis)}), (node.input[0], axis))
        self.values[node.output[0]] = ShapeValue(value, known, origins)

    def _compute(self, node, op, inputs):
        """(value, known, per-element origins or None for 'all of the inputs')."""
        first = inputs[0]
        if op in ("Identity", "Cast"):
            if op == "Cast" and _attr(node, "to") not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
                return None
            return first.value.astype(np.int64), first.known, first.origins
        if op == "Gather":
            indices = inputs[1]
            if not indices.fully_known:
                return None
            axis = _attr(node, "axis", 0)
            pick = indices.value
            return (np.take(first.value, pick, axis=axis), np.take(first.known, pick, axis=axis),
                    np.take(first.origins, pick, axis=axis))
        if op == "Concat":
            axis = _attr(node, "axis", 0)

            def flat(array):
                return array.reshape(-1) if array.ndim == 0 else array

            return (np.concatenate([flat(v.value) for v in inputs], axis),
                    np.concatenate([flat(v.known) for v in inputs], axis),
                    np.concatenate([flat(v.origins) for v in inputs], axis))
        if op in ("Unsqueeze", "Squeeze", "Reshape"):
            return self._reshape(node, op, inputs)
        if op == "Slice":
            if not all(v.fully_known for v in inputs[1:] if v is not None) or first.value.ndim != 1:
                return None
            start, end = int(inputs[1].value.reshape(-1)[0]), int(inputs[2].value.reshape(-1)[0])
            step = int(inputs[4].value.reshape(-1)[0]) if len(inputs) > 4 and inputs[4] is not None else 1
            picked = slice(start, end, step)
            return first.value[picked], first.known[picked], first.origins[picked]
        if op == "Mul" and inputs[0].value.dtype.kind in "iu" and inputs[1].value.dtype.kind in "iu":
            a, b = inputs[0], inputs[1]
            left = _scale_elements(a.origins, b.origins, b.value)
            right = _scale_elements(b.origins, a.origins, a.value)
            origins = np.where(_is_copy(left), left, right)
            return a.value * b.value, np.logical_and(a.known, b.known), origins
        if op in _BINARY or op == "Div":
            a, b = inputs[0], inputs[1]
            if op == "Div":
                value = _int_div(a.value, b.value) if a.value.dtype.kind in "iu" else a.value / b.value
            else:
                value = _BINARY[op](a.value, b.value)
            return value, np.logical_and(a.known, b.known), _mix(a.origins, b.origins)
        if op in ("Neg", "Abs"):
            no_copy = np.frompyfunc(lambda o: Origin(o.sources), 1, 1)(first.origins)
            return (np.negative if op == "Neg" else np.abs)(first.value), first.known, no_copy
        if op == "Where":
            cond, a, b = inputs
            known = cond.known & np.where(cond.value, a.known, b.known)
            # A known condition selects one branch: the element copies what that branch copies.
            chosen = np.where(cond.value, a.origins, b.origins)
            mixed = _mix(_mix(cond.origins, a.origins), b.origins)
            origins = np.where(cond.known, np.frompyfunc(
                lambda m, c: Origin(m.sources, c.copy_of if m.sources == c.sources else None), 2, 1)(mixed, chosen),
                mixed)
            return np.where(cond.value, a.value, b.value), known, origins
        if op == "ConstantOfShape":
            if not first.fully_known or first.value.size > 8 or int(np.prod(first.value)) > 64:
                return None
            fill = _attr(node, "value")
            fill = onnx.numpy_helper.to_array(fill).reshape(-1)[0] if fill is not None else 0
            value = np.full(tuple(int(d) for d in first.value), fill)
            if value.dtype.kind not in "iub":
                return None
            return value, np.ones(value.shape, bool), _origins_like(value, Origin(first.all_sources))
        if op == "ReduceProd" and _attr(node, "keepdims", 1) == 0 and len(inputs) == 1:
            return np.prod(first.value), np.all(first.known), None
        return None

    def _reshape(self, node, op, inputs):
        first = inputs[0]
        if op == "Reshape":
            target = inputs[1]
            if not target.fully_known:
                return None
            shape = tuple(int(d) for d in target.value)
            return first.value.reshape(shape), first.known.reshape(shape), first.origins.reshape(shape)
        axes = _attr(node, "axes")
        if axes is None and len(inputs) > 1 and inputs[1] is not None:
            axes = [int(a) for a in inputs[1].value.reshape(-1)]
        if op == "Unsqueeze":
            axes = tuple(axes)
            return (np.expand_dims(first.value, axes), np.expand_dims(first.known, axes),
                    np.expand_dims(first.origins, axes))
        axes = tuple(axes) if axes else None
        return np.squeeze(first.value, axes), np.squeeze(first.known, axes), np.squeeze(first.origins, axes)
