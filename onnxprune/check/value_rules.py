"""Which values an integer or bool input accepts, read from the graph, so random data stays valid.

Random 0/1 integers are valid token ids for any vocabulary, but not what real inputs look like, and
some models fail on them outright or take another branch: a position id must stay below the rows of
the position table ("indices element out of data bounds" otherwise), a VAD model's sample rate must
be the one its `If` compares against. For each integer input we follow its values through ops that
keep them (Cast, Unsqueeze, Reshape, ...) or shift them by a constant (Add, Sub) to

- the Gather (or GatherBlockQuantized, EmbedLayerNormalization, OneHot) that uses them as indices
  into a table of R rows: ids in [0, R), shifted back by any constant added on the way;
- an Equal with a constant, for scalar inputs: one of the constants compared against;

and masks (bool inputs, inputs named like masks) become 0/1 masks, mostly 1.
"""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import onnx

from ..io.model import Model
from .inputs import InputSpec, ValueRule

# Ops whose output holds the same values as their first input (maybe moved, repeated or cast).
_KEEP_VALUES = {"Cast", "CastLike", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Slice",
                "Transpose", "Tile", "Split", "Concat", "Gather"}
# Don't wander through a whole LLM: ids reach their table within a few ops.
_MAX_VISITS = 256


def attach_value_rules(model: Model, specs: list[InputSpec],
                       ranges: dict[str, tuple[float, float]] | None = None) -> list[InputSpec]:
    """`specs` with `values` set: from --val-range (`ranges`, "" the default) first, else from the graph."""
    ranges = ranges or {}
    out = []
    for spec in specs:
        bounds = ranges.get(spec.name, ranges.get(""))
        if bounds is not None:
            rule = ValueRule("uniform", bounds[0], bounds[1], why="--val-range")
        elif spec.dtype == np.bool_ or spec.dtype.kind in "iu":
            rule = graph_rule(model, spec)
        else:
            rule = None
        out.append(dataclasses.replace(spec, values=rule))
    return out


def graph_rule(model: Model, spec: InputSpec) -> ValueRule | None:
    """The rule for one integer or bool input, or None when the graph says nothing about its values."""
    low, high, tables, compared = _follow(model, spec.name)
    if tables:
        if high <= max(low, 0):
            return None  # the constants added on the way leave no valid id: let the user say
        return ValueRule("ids", max(0.0, low), high, why=f"indexes {', '.join(sorted(tables)[:2])}")
    scalar = spec.shape is not None and all(d == 1 for d in spec.shape if isinstance(d, int)) and (
        len(spec.shape) == 0 or spec.shape == (1,))
    if compared and scalar:
        return ValueRule("choices", choices=tuple(compared), why="compared with in the graph")
    if spec.dtype == np.bool_ or "mask" in spec.name.lower():
        return ValueRule("mask", why="a mask")
    return None


def _follow(model: Model, name: str) -> tuple[float, float, set[str], list[float]]:
    """Walk the values of input `name` forward: the bounds [low, high) that keep every index in
    range, the tables indexed, and the constants it is compared with (when not shifted first)."""
    low, high = -np.inf, np.inf
    tables: set[str] = set()
    compared: list[float] = []
    queue: deque[tuple[str, float]] = deque([(name, 0.0)])
    seen: set[str] = {name}
    visits = 0
    while queue and visits < _MAX_VISITS:
        tensor, shift = queue.popleft()
        for node, index in model.consumers(tensor):
            visits += 1
            op = node.op_type
            follow: list[tuple[str, float]] = []
            if index < 0:
                continue  # read inside a subgraph: not followed
            rows = _table_rows(model, node, index)
            if rows is not None:
                table, count = rows
                tables.add(table)
                low, high = max(low, -shift), min(high, count - shift)
            elif op == "Equal" and len(node.input) == 2:
                other = _constant(model, node.input[1 - index], limit=1 << 16)
                count = _one_hot_depth(other)
                if count is not None:  # x == arange(K): a one-hot over K classes (tf2onnx, jax2tf)
                    tables.add(f"one-hot of {count}")
                    low, high = max(low, -shift), min(high, count - shift)
                elif other is not None and other.size <= 8 and shift == 0:
                    compared += [float(v) for v in other.ravel() if float(v) not in compared]
            elif op in ("Add", "Sub") and len(node.input) == 2:
                other = _constant(model, node.input[1 - index])
                if other is not None and other.size == 1 and (op == "Add" or index == 0):  # c - x: not followed
                    step = float(other.ravel()[0])
                    follow = [(out, shift + (step if op == "Add" else -step)) for out in node.output]
            elif op in _KEEP_VALUES and (index == 0 or op == "Concat"):
                follow = [(out, shift) for out in node.output]
            for out, out_shift in follow:
                if out and out not in seen:
                    seen.add(out)
                    queue.append((out, out_shift))
    return low, high, tables, compared


def _table_rows(model: Model, node: onnx.NodeProto, index: int) -> tuple[str, int] | None:
    """(table name, rows) when input `index` of `node` indexes a table; None otherwise."""
    op, domain = node.op_type, node.domain
    if op == "Gather" and domain in ("", "ai.onnx") and index == 1:
        axis = _attribute(node, "axis", 0)
        return _rows(model, node.input[0], axis)
    if op == "GatherBlockQuantized" and index == 1:
        return _rows(model, node.input[0], _attribute(node, "gather_axis", 0))
    if op == "EmbedLayerNormalization" and domain == "com.microsoft":
        table = {0: 2, 1: 4, 8: 3}.get(index)
        if table is not None and table < len(node.input) and node.input[table]:
            return _rows(model, node.input[table], 0)
    if op == "OneHot" and index == 0:
        depth = _constant(model, node.input[1])
        if depth is not None and depth.size == 1:
            return f"OneHot '{node.name or node.output[0]}'", int(depth.ravel()[0])
    return None


def _rows(model: Model, table: str, axis: int) -> tuple[str, int] | None:
    """The size of `table` along `axis`: from the weight (through a dequantizing op), else inferred."""
    source = table
    producer = model.producer(source)
    while producer is not None and producer.op_type in ("DequantizeLinear", "Cast", "Identity", "Mul") and (
            not model.is_weight(source)):
        source = producer.input[0]
        producer = model.producer(source)
    shape = tuple(model.weights[source].shape) if model.is_weight(source) else None
    if shape is None:
        info = model.infer_shapes().get(table)
        shape = info.shape if info is not None else None
    if not shape or not -len(shape) <= axis < len(shape) or not isinstance(shape[axis], int) or shape[axis] < 1:
        return None
    return table, int(shape[axis])


def _one_hot_depth(values: np.ndarray | None) -> int | None:
    """K when `values` holds exactly 0, 1, ..., K-1 along one axis (K > 8), else None."""
    if values is None or values.size <= 8 or values.dtype.kind not in "iuf":
        return None
    flat = values.ravel()
    if np.array_equal(flat, np.arange(flat.size)):
        return int(flat.size)
    return None


def _constant(model: Model, name: str, limit: int = 64) -> np.ndarray | None:
    if not name or not model.is_weight(name):
        return None
    if int(np.prod(model.weights[name].shape or ())) > limit:
        return None  # a big weight is no constant worth reading here
    try:
        return np.asarray(model.weight(name))
    except Exception:  # an opaque dtype (float8, int4): not a comparison constant
        return None


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default
