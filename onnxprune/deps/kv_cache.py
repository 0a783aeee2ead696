"""KV-cache graph inputs and outputs: `past_key_values.N.key` in, `present.N.key` out.

A decoder exported with its cache reads the keys and values of earlier tokens as graph inputs and
returns them, one token longer, as graph outputs; the runtime feeds each step's outputs back as
the next step's inputs. Their head axis (BNSH: [batch, kv_heads, seq, head_size]; ONNX Runtime's
Attention packs both as [2, batch, heads, seq, head_size]) carries the model's KV heads, so
removing a KV group must shrink it too. That is safe exactly when the input and its output are
the same channel space (whatever leaves one leaves the other, so the loop stays consistent) and
the new size is declared on both: the runtime allocates the first, empty, past from that size,
from the model's inputs or its config (io/runtime_config.py writes those). Every other axis of a
cache input stays pinned, like any graph input's. Which inputs are caches: io/runtime_config.py.
"""

from __future__ import annotations

import json

import onnx

from ..io.model import Model
from ..io.runtime_config import KV_HEADS_KEY, CachePair, find_cache_pairs
from .space import Removal

__all__ = ["CachePair", "cache_head_axes", "find_cache_pairs", "settle_cache_outputs"]

def cache_head_axes(pairs: dict[str, CachePair]) -> set[tuple[str, int]]:
    """(tensor, axis) of every cache input's head axis: the graph-input axes allowed to follow a space."""
    return {(pair.past, pair.head_axis) for pair in pairs.values()}


def settle_cache_outputs(builder, pairs: dict[str, CachePair]) -> set[str]:
    """Pin what must stay of the cache pairs (every axis but the heads, and the heads when input and
    output are not one space); returns the outputs whose head axis may shrink, and registers the fixup
    that declares their new size."""
    free: set[str] = set()
    for pair in set(pairs.values()):
        past_key, present_key = (pair.past, pair.head_axis), (pair.present, pair.head_axis)
        if builder.same_space(past_key, present_key):
            free.add(pair.present)
        elif past_key in builder.layouts or present_key in builder.layouts:
            why = f"KV cache '{pair.past}' and '{pair.present}' would lose different heads"
            builder.pin(pair.past, pair.head_axis, why)
            builder.pin(pair.present, pair.head_axis, why)
    if free:
        chosen = sorted({pairs[name] for name in free}, key=lambda pair: pair.past)
        builder.add_fixup(lambda removal: _resize(builder.model, chosen, removal))
    return free


def _resize(model: Model, pairs: list[CachePair], removal: Removal) -> None:
    """Declare the new head count on the cache inputs and outputs, and record which heads went in the
    metadata (validation feeds and compares the pruned model's caches with it)."""
    values = {value.name: value for value in list(model.graph.input) + list(model.graph.output)}
    record: dict[str, dict] = {}
    for pair in pairs:
        removed = removal.removed(pair.past, pair.head_axis)
        for name in (pair.past, pair.present):
            dims = values[name].type.tensor_type.shape.dim
            if len(dims) > pair.head_axis and dims[pair.head_axis].HasField("dim_value"):
                dims[pair.head_axis].dim_value -= removed.size
            heads = values[pair.past].type.tensor_type.shape.dim[pair.head_axis].dim_value
            record[name] = {"axis": pair.head_axis, "heads": heads, "removed": [int(i) for i in removed]}
    if any(entry["removed"] for entry in record.values()):
        set_metadata(model.proto, KV_HEADS_KEY, json.dumps(record))


def set_metadata(proto: onnx.ModelProto, key: str, value: str) -> None:
    for entry in proto.metadata_props:
        if entry.key == key:
            entry.value = value
            return
    proto.metadata_props.add(key=key, value=value)
