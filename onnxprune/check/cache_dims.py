"""The head size of a KV-cache input whose last dim is symbolic, read from the attention it feeds.

ONNX Runtime GenAI's builder declares its caches `[batch_size, kv_heads, past_sequence_length,
kv_cache_dim]`: the last dim is the attention's head size, fixed by the weights, yet symbolic in the
declaration. Any other value makes GroupQueryAttention refuse the feed, so check.dim_choice must not
guess it like a sequence length. The head size is what the weights say: a GroupQueryAttention's
query width over its heads (over num_heads + 2 * kv_num_heads when Q, K and V come packed in one
tensor); a MultiHeadAttention's query width over num_heads. Widths are read from the weights of the
projection that makes the query (MatMul / MatMulNBits / Gemm, through a bias Add); when they cannot
be, nothing is suggested and the dim keeps its generic guess.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..io.model import Model
from .inputs import InputSpec, _key

# Attention op -> indices of its past key and past value inputs.
_PAST_INPUTS = {"GroupQueryAttention": (3, 4), "MultiHeadAttention": (6, 7)}
# How many ops between a cache input and the attention (a Cast to fp16, an Identity).
_PASS_THROUGH = ("Cast", "Identity")


def _attr(node, name: str) -> int | None:
    return next((attr.i for attr in node.attribute if attr.name == name), None)


def _width(model: Model, name: str, producers: Mapping[str, object], depth: int = 4) -> int | None:
    """The last dim of `name`, read from the weights of the projection that makes it."""
    node = producers.get(name)
    if node is None or depth == 0:
        return None
    weights = model.weights
    if node.op_type == "MatMulNBits":
        return _attr(node, "N")
    if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in weights:
        shape = tuple(weights[node.input[1]].shape)
        if len(shape) == 2:
            return shape[0] if node.op_type == "Gemm" and _attr(node, "transB") else shape[-1]
        return None
    if node.op_type in ("Add", "Cast", "Identity"):
        for source in node.input:
            if source not in weights:
                return _width(model, source, producers, depth - 1)
    return None


def cache_head_sizes(model: Model, specs: list[InputSpec]) -> dict[str | tuple[str, int], tuple[int, str]]:
    """Suggestions (dim_choice's keys) for the symbolic last dim of each KV-cache input an attention reads."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output if out}
    by_name = {spec.name: spec for spec in specs}
    found: dict[str | tuple[str, int], tuple[int, str]] = {}
    for node in graph.node:
        indices = _PAST_INPUTS.get(node.op_type)
        heads = _attr(node, "num_heads")
        if indices is None or node.domain != "com.microsoft" or not heads:
            continue
        width = _width(model, node.input[0], producers)
        if width is None:
            continue
        packed = node.op_type == "GroupQueryAttention" and (len(node.input) < 2 or not node.input[1])
        parts = heads + 2 * (_attr(node, "kv_num_heads") or heads) if packed else heads
        if width % parts:
            continue
        head_size = width // parts
        for index in indices:
            name = node.input[index] if index < len(node.input) else ""
            for _ in range(3):  # back through a Cast or Identity to the graph input
                producer = producers.get(name)
                if producer is None or producer.op_type not in _PASS_THROUGH:
                    break
                name = producer.input[0]
            spec = by_name.get(name)
            if spec is None or spec.shape is None or len(spec.shape) != 4 or isinstance(spec.shape[3], int):
                continue
            reason = f"the head size of {node.op_type} '{node.name or node.output[0]}'"
            found.setdefault(_key(spec.name, 3, spec.shape[3]), (head_size, reason))
    return found
