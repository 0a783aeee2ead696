"""FLOPs of ONNX Runtime's contrib ops, and shapes through them, for check.counts.

ONNX's shape inference knows no `com.microsoft` op (nor the `SimplifiedLayerNormalization` ORT
registers in the default domain): every tensor after the first one has no shape, so an ORT-optimized
or GenAI-built LLM counted 0 FLOPs. Shapes there come from ONNX Runtime's own symbolic shape
inference (`onnxruntime.tools.symbolic_shape_infer`, which has a rule for each contrib op), used
only to fill what ONNX's inference left unknown.

The formulas follow check.counts' conventions (a multiply-add is 2 FLOPs, cheap elementwise work
1 per element) so that one model counts about the same in its decomposed and its fused form: an
attention costs its two batched products, 2*B*N*S*T*H each, plus its scale and softmax per score.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx

Shape = tuple[int, ...]
ShapeOf = Callable[[str], Shape | None]
Counter = Callable[[onnx.NodeProto, ShapeOf], int | None]

CONTRIB_DOMAINS = ("com.microsoft",)


def _attr(node: onnx.NodeProto, name: str, default: int | None = None) -> int | None:
    for attr in node.attribute:
        if attr.name == name:
            return attr.i
    return default


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


def _output(node: onnx.NodeProto, index: int) -> str:
    return node.output[index] if index < len(node.output) else ""


def _elements(times: int, bias_input: int | None = None) -> Counter:
    """`times` FLOPs per output element, one more where an optional bias input is present."""

    def count(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
        y = shape_of(node.output[0])
        if y is None:
            return None
        extra = 1 if bias_input is not None and _input(node, bias_input) else 0
        return (times + extra) * math.prod(y)

    return count


def _matmul_k(k_of: Callable[[onnx.NodeProto, ShapeOf], int | None], extra_per_output: int = 0) -> Counter:
    def count(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
        y, k = shape_of(node.output[0]), k_of(node, shape_of)
        if y is None or k is None:
            return None
        return (2 * k + extra_per_output) * math.prod(y)

    return count


def _k_attribute(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    """MatMulNBits/MatMulBnb4 carry K as an attribute (the weight is packed, its shape says nothing)."""
    return _attr(node, "K")


def _k_of_a(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    a = shape_of(node.input[0])
    if not a:
        return None
    trans_a = _attr(node, "transA", 0)
    return a[-2] if trans_a and len(a) >= 2 else a[-1]


def _scores(batch: int, heads: int, queries: int, keys: int, head_size: int, value_size: int) -> int:
    """Q.K^T and P.V (2 FLOPs a multiply-add) plus scale and softmax once per score."""
    per_score = 2 * head_size + 2 * value_size + 2
    return batch * heads * queries * keys * per_score


def _group_query_attention(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    # output [B, S, N*H]; the attended length is the past_key's [B, kvN, P, H] P plus the S new tokens
    # (a present that shares the past's buffer is as long as the buffer, not as the text).
    y, past = shape_of(node.output[0]), shape_of(_input(node, 3))
    heads = _attr(node, "num_heads")
    if y is None or len(y) != 3 or not heads:
        return None
    batch, queries, hidden = y
    head_size = hidden // heads
    keys = queries + (past[2] if past is not None and len(past) == 4 else 0)
    flops = _scores(batch, heads, queries, keys, head_size, head_size)
    if _attr(node, "do_rotary", 0):  # rotary inside: q and the new k, ~3 FLOPs an element
        kv_heads = _attr(node, "kv_num_heads") or heads
        flops += 3 * batch * queries * (heads + kv_heads) * head_size
    return flops


def _multi_head_attention(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    # output [B, S, N*Hv]; the attended length: present_key [B, N, T, H], else the key's [B, L, N*H].
    y, heads = shape_of(node.output[0]), _attr(node, "num_heads")
    if y is None or len(y) != 3 or not heads:
        return None
    batch, queries, hidden_v = y
    query = shape_of(node.input[0])
    present, key = shape_of(_output(node, 1)), shape_of(_input(node, 1))
    if present is not None and len(present) == 4:
        keys, head_size = present[2], present[3]
    elif key is not None and len(key) == 3:
        keys, head_size = key[1], key[2] // heads
    elif query is not None and len(query) == 3 and not _input(node, 1):
        keys, head_size = queries, hidden_v // heads
    else:
        return None
    return _scores(batch, heads, queries, keys, head_size, hidden_v // heads)


def _attention(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    # com.microsoft Attention projects Q, K and V itself: input [B, S, D] x weights [D, 3*hidden].
    x, w, y = shape_of(node.input[0]), shape_of(_input(node, 1)), shape_of(node.output[0])
    heads = _attr(node, "num_heads")
    if x is None or w is None or y is None or len(x) != 3 or len(y) != 3 or not heads:
        return None
    batch, queries, _ = x
    flops = 2 * batch * queries * math.prod(w)
    if _input(node, 2):
        flops += batch * queries * w[-1]
    present = shape_of(_output(node, 1))  # [2, B, N, T, H]
    keys = present[3] if present is not None and len(present) == 5 else queries
    head_size = y[2] // heads
    return flops + _scores(batch, heads, queries, keys, head_size, head_size)


def onnx_attention(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    """ONNX's own Attention (opset 23): Q [B, N, S, H] (or [B, S, N*H] with q_num_heads), K [B, kvN, T, H]."""
    q, k, v = shape_of(node.input[0]), shape_of(_input(node, 1)), shape_of(_input(node, 2))
    if q is None or k is None or v is None:
        return None
    if len(q) == 4 and len(k) == 4 and len(v) == 4:
        return _scores(q[0], q[1], q[2], k[2], q[3], v[3])
    heads, kv_heads = _attr(node, "q_num_heads"), _attr(node, "kv_num_heads")
    if len(q) == 3 and len(k) == 3 and len(v) == 3 and heads and kv_heads:
        return _scores(q[0], heads, q[1], k[1], q[2] // heads, v[2] // kv_heads)
    return None


# fmt: off
COUNTERS: dict[str, Counter] = {
    "MatMulNBits": _matmul_k(_k_attribute),
    "MatMulBnb4": _matmul_k(_k_attribute),
    "FusedMatMul": _matmul_k(_k_of_a),
    "MatMulInteger16": _matmul_k(_k_of_a),
    "MatMulIntegerToFloat": _matmul_k(_k_of_a),
    "DynamicQuantizeMatMul": _matmul_k(_k_of_a),
    "GemmFastGelu": _matmul_k(_k_of_a, extra_per_output=2),
    "GroupQueryAttention": _group_query_attention,
    "MultiHeadAttention": _multi_head_attention,
    "Attention": _attention,
    # Norms count one FLOP an output element, as check.counts counts LayerNormalization; the Skip
    # forms add the residual first (one more), and their optional bias one more again.
    "SimplifiedLayerNormalization": _elements(1),
    "SkipSimplifiedLayerNormalization": _elements(2, bias_input=4),
    "SkipLayerNormalization": _elements(2, bias_input=4),
    "EmbedLayerNormalization": _elements(2),
    "LayerNormalization": _elements(1),
    "RotaryEmbedding": _elements(3),  # x*cos + rotate(x)*sin
    "FastGelu": _elements(1, bias_input=1),
    "BiasGelu": _elements(2),
    "Gelu": _elements(1),
    "QuickGelu": _elements(1),
    "BiasAdd": _elements(2),
    "BiasSplitGelu": _elements(2),
    "DequantizeLinear": _elements(1),
    "QuantizeLinear": _elements(1),
}
# fmt: on
# Contrib ops ONNX Runtime registers in the default domain, where ONNX itself has no such op.
DEFAULT_DOMAIN_CONTRIB = frozenset(("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"))


def counter_for(node: onnx.NodeProto) -> Counter | None:
    """The contrib formula for `node`, or None when it is not a contrib op this module knows."""
    if node.domain in CONTRIB_DOMAINS:
        return COUNTERS.get(node.op_type)
    if node.domain in ("", "ai.onnx") and node.op_type in DEFAULT_DOMAIN_CONTRIB:
        return COUNTERS[node.op_type]
    return None


def needs_ort_shapes(graph: onnx.GraphProto) -> bool:
    """True when ONNX's shape inference cannot see through some node: a contrib op."""
    return any(node.domain in CONTRIB_DOMAINS or (node.domain in ("", "ai.onnx")
                                                  and node.op_type in DEFAULT_DOMAIN_CONTRIB)
               for node in graph.node)


def ort_static_shapes(light: onnx.ModelProto, notes: list[str]) -> dict[str, Shape]:
    """Static shapes by ONNX Runtime's symbolic shape inference over `light` (inputs fixed, weights
    as typed inputs; io.shapes runs it, with its contrib fixes, away from the user's folder); {} with
    a note when it is not installed or gives up on this graph."""
    from ..io.shapes import symbolic_inference

    copy = onnx.ModelProto()
    copy.CopyFrom(light)  # the inference writes value_info into the model it is given
    inferred = symbolic_inference(copy)
    if inferred is None:
        notes.append("onnxruntime's symbolic shape inference is missing (sympy) or gave up on this graph: "
                     "FLOPs after the first contrib op or unresolved dim are not counted")
        return {}
    shapes: dict[str, Shape] = {}
    for value in (*inferred.graph.value_info, *inferred.graph.output):
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            shapes[value.name] = tuple(dim.dim_value for dim in dims)
    return shapes
