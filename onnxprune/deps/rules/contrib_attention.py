"""Fused attention: ONNX Runtime's GroupQueryAttention, MultiHeadAttention and Attention
(com.microsoft, as fusion_attention.py / fusion_rotary_attention.py and onnxruntime-genai's builder
write them) and ONNX's own Attention (opset 23).

The channel of the space these make is a *unit* of heads: a KV group (its key and value head and the
query heads that read them) when there are several KV heads, else a query head (a single KV head,
multi-query attention, keeps its KV head and loses query heads inside the group). Each tensor holds
the units in order with a block of channels per unit: `group * head_size` on the query and the
output, `head_size` on key and value, `group` on per-query-head axes (attention bias, head sinks),
one on a cache's head axis. A packed QKV input is [q heads | k heads | v heads]. Fixups rewrite the
head-count attributes. head_size comes from the shapes, so it need not be hidden / heads. Each rule
records its units in `builder.attention_heads`: a Reshape that split the heads feeding a fused op is
proven attention (deps/attention.py), as one feeding Q @ K^T -> Softmax -> @ V is.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..atoms import Layout
from ..builder import Removal, SpaceBuilder
from . import CONTRIB, rule
from .common import attr, input_at, set_int_attr, set_ints_attr


@dataclass(frozen=True)
class Units:
    layout: Layout  # one channel per unit
    query_heads: int  # query heads per unit
    kv: bool  # do units carry a KV head (GQA/MHA), or are they query heads of a single KV head


def _units(builder: SpaceBuilder, heads: int, kv_heads: int) -> Units:
    if kv_heads > 1 or heads == 1:
        return Units(builder.atoms.fresh(kv_heads), heads // kv_heads, True)
    return Units(builder.atoms.fresh(heads), 1, False)


def _widen(builder: SpaceBuilder, units: Units, block: int) -> Layout:
    return builder.atoms.widen(units.layout, block)


def _kv_layout(builder: SpaceBuilder, node: onnx.NodeProto, units: Units, block: int) -> Layout:
    """Key or value channels: per unit, or one pinned KV head the query heads share."""
    if units.kv:
        return _widen(builder, units, block)
    layout = builder.atoms.fresh(block)
    builder.pin_layout(layout, f"{node.op_type} has a single KV head: it stays whole", node)
    return layout


def _tie(builder: SpaceBuilder, node: onnx.NodeProto, name: str, axis: int, layout: Layout | None) -> None:
    """Axis `axis` of input `name` holds `layout`; an input of unknown size there pins the heads."""
    if not name or layout is None:
        return
    own = builder.layout(name, axis, node)
    if own is None:
        builder.pin_layout(layout, f"{node.op_type} input '{name}' has an unknown size on axis {axis}", node)
        return
    builder.tie([own, layout], node)


def _tie_optional_heads(builder: SpaceBuilder, node: onnx.NodeProto, name: str, axis: int, layout: Layout) -> None:
    """A per-head axis that may broadcast (size 1): tied only when it is not."""
    rank = builder.rank(name) if name else None
    if rank is None:
        if name:
            builder.pin_layout(layout, f"{node.op_type} input '{name}' has an unknown rank", node)
        return
    axis = axis + rank if axis < 0 else axis
    if 0 <= axis < rank and builder.dim(name, axis) != 1:
        _tie(builder, node, name, axis, layout)


def _pin_other_axes(builder: SpaceBuilder, node: onnx.NodeProto, name: str, keep: set[int]) -> None:
    for axis in builder.tracked(name) if name else {}:
        if axis not in keep:
            builder.pin(name, axis, f"{node.op_type} mixes this axis of '{name}'", node)


def _pass_axes(builder: SpaceBuilder, src: str, dst: str, axes: dict[int, int]) -> None:
    """Batch and sequence axes go through attention unchanged."""
    for axis, layout in builder.tracked(src).items():
        if axis in axes:
            builder.set_output(dst, axes[axis], layout)


def _removed_units(removal: Removal, tensor: str, axis: int, block: int) -> int:
    return removal.count(tensor, axis) // block


def _output(node: onnx.NodeProto, index: int) -> str:
    return node.output[index] if index < len(node.output) else ""


def _cache(builder: SpaceBuilder, node: onnx.NodeProto, past: list[str], present: list[str], axis: int,
           units: Units) -> None:
    """Past inputs and present outputs: their head axis holds one KV head per unit."""
    for name in past:
        _pin_other_axes(builder, node, name, {axis} if units.kv else set())
        if name and units.kv:
            _tie(builder, node, name, axis, units.layout)
    for name in present:
        if name and units.kv:
            builder.set_output(name, axis, units.layout)


@rule("GroupQueryAttention", domain=CONTRIB)
def group_query_attention(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """query [B, S, H*D] or packed QKV [B, S, (H + 2*KV)*D], key and value [B, S, KV*D], past and
    present [B, KV, T, D]; attention_bias [B|1, H|1, S, T], head_sink [H], output_qk [B, H, S, T]."""
    heads, kv_heads = int(attr(node, "num_heads", 0)), int(attr(node, "kv_num_heads", 0))
    query, key, value = node.input[0], input_at(node, 1), input_at(node, 2)
    width = builder.dim(query, 2) if builder.rank(query) == 3 else None
    if not heads or not kv_heads or heads % kv_heads or width is None:
        builder.pin_node(node, f"{node.op_type} with unknown head counts or query width")
        return
    head_size = width // (heads + 2 * kv_heads) if not key else width // heads
    if head_size * (heads + (0 if key else 2 * kv_heads)) != width:
        builder.pin_node(node, f"{node.op_type} query width {width} is not a whole number of heads")
        return
    quantized = [attr(node, name, b"NONE") for name in ("k_quant_type", "v_quant_type")]
    if attr(node, "kv_cache_bit_width", 0) or any(value not in (b"NONE", "NONE") for value in quantized):
        builder.pin_node(node, f"{node.op_type} with a quantized KV cache")
        return
    units = _units(builder, heads, kv_heads)
    builder.attention_heads.append(units.layout)
    q_layout = _widen(builder, units, units.query_heads * head_size)
    k_layout, v_layout = (_kv_layout(builder, node, units, head_size) for _ in range(2))
    if key:
        _tie(builder, node, query, 2, q_layout)
        _tie(builder, node, key, 2, k_layout)
        _tie(builder, node, value, 2, v_layout)
    else:
        _tie(builder, node, query, 2, builder.concat_layouts([q_layout, k_layout, v_layout]))
    per_query = _widen(builder, units, units.query_heads)
    _tie_optional_heads(builder, node, input_at(node, 10), -3, per_query)  # attention_bias
    _tie_optional_heads(builder, node, input_at(node, 11), 0, per_query)  # head_sink
    for index in (5, 6, 7, 8, 9, 12, 13, 14, 15, 16):  # sequence lengths, rotary caches, scales, QK-norm weights
        _pin_other_axes(builder, node, input_at(node, index), set())
    _cache(builder, node, [input_at(node, 3), input_at(node, 4)], [_output(node, 1), _output(node, 2)], 1, units)
    output = node.output[0]
    for name in (query, key, value):
        _pin_other_axes(builder, node, name, {0, 1, 2})
    _pass_axes(builder, query, output, {0: 0, 1: 1})
    builder.set_output(output, 2, q_layout)
    builder.set_output(_output(node, 3), 1, per_query)
    builder.head_axes.add((output, 2))
    block = units.query_heads * head_size

    def fix(removal: Removal) -> None:
        removed = _removed_units(removal, output, 2, block)
        if removed:
            set_int_attr(node, "num_heads", heads - removed * units.query_heads)
            if units.kv:
                set_int_attr(node, "kv_num_heads", kv_heads - removed)

    builder.add_fixup(fix)


@rule("MultiHeadAttention", domain=CONTRIB)
def multi_head_attention(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """query [B, S, H*D]; key/value [B, L, H*D], or already split [B, H, L, D] (cross attention);
    bias [q | k | v]; attention_bias [B|1, H|1, S, T]; past and present [B, H, T, D]; output
    [B, S, H*Dv]; qk [B, H, S, T]. The packed forms ([B, L, H, 3, D] QKV, [B, L, H, 2, D] KV) have no
    CPU kernel to check a rewrite against, and the beam-search cache indirection is not followed:
    those pin."""
    heads = int(attr(node, "num_heads", 0))
    query, key, value, bias = node.input[0], input_at(node, 1), input_at(node, 2), input_at(node, 3)
    q_rank, k_rank = builder.rank(query), builder.rank(key) if key else None
    if not heads or q_rank != 3 or (key and k_rank not in (3, 4)) or input_at(node, 9):
        builder.pin_node(node, f"{node.op_type} of a form not handled (packed QKV or KV, beam search cache)")
        return
    units = Units(builder.atoms.fresh(heads), 1, True)
    builder.attention_heads.append(units.layout)
    width = builder.dim(query, 2)
    head_size = width // heads if width else None
    _tie(builder, node, query, 2, _widen(builder, units, head_size) if head_size else None)
    _pin_other_axes(builder, node, query, {0, 1, 2})
    v_size = _mha_key_value(builder, node, units, heads, key, value, k_rank, head_size)
    if not head_size or not v_size:
        builder.pin_node(node, f"{node.op_type} with unknown head sizes")
        return
    if bias:
        sections = [_widen(builder, units, size) for size in (head_size, head_size, v_size)]
        _tie(builder, node, bias, 0, builder.concat_layouts(sections))
    per_head = units.layout
    _tie_optional_heads(builder, node, input_at(node, 5), -3, per_head)  # attention_bias
    _pin_other_axes(builder, node, input_at(node, 4), set())  # key_padding_mask
    _cache(builder, node, [input_at(node, 6), input_at(node, 7)], [_output(node, 1), _output(node, 2)], 1, units)
    output = node.output[0]
    _pass_axes(builder, query, output, {0: 0, 1: 1})
    builder.set_output(output, 2, _widen(builder, units, v_size))
    builder.set_output(_output(node, 3), 1, per_head)
    builder.head_axes.add((output, 2))

    def fix(removal: Removal) -> None:
        removed = _removed_units(removal, output, 2, v_size)
        if removed:
            set_int_attr(node, "num_heads", heads - removed)

    builder.add_fixup(fix)


def _mha_key_value(builder: SpaceBuilder, node: onnx.NodeProto, units: Units, heads: int, key: str, value: str,
                   k_rank: int | None, head_size: int | None) -> int | None:
    """Ties MultiHeadAttention's key and value; returns the value head size."""
    if not key:
        return head_size
    if k_rank == 4:  # [B, H, L, D]: keys and values already split into heads (cross attention)
        for name in (key, value):
            _tie(builder, node, name, 1, units.layout)
            _pin_other_axes(builder, node, name, {0, 1, 2})
        return builder.dim(value, 3) if value else None
    v_width = builder.dim(value, 2) if value else None
    v_size = v_width // heads if v_width else None
    _tie(builder, node, key, 2, _widen(builder, units, head_size) if head_size else None)
    _tie(builder, node, value, 2, _widen(builder, units, v_size) if v_size else None)
    for name in (key, value):
        _pin_other_axes(builder, node, name, {0, 1, 2})
    return v_size


@rule("Attention", domain=CONTRIB)
def attention(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """input [B, S, In] @ weights [In, q + k + v] (+ bias) -> heads; past and present [2, B, H, T, D];
    attention_bias [B|1, H|1, S, T]; output [B, S, v]. qkv_hidden_sizes gives q, k, v (default equal)."""
    heads = int(attr(node, "num_heads", 0))
    x, weights, bias = node.input[0], input_at(node, 1), input_at(node, 2)
    rank = builder.rank(x)
    if not heads or not builder.is_weight(weights) or (bias and not builder.is_weight(bias)) or rank is None:
        builder.pin_node(node, f"{node.op_type} whose weights are not constants, or of unknown rank")
        return
    total = builder.weight_shape(weights)[1]
    sizes = [int(v) for v in attr(node, "qkv_hidden_sizes", [])] or [total // 3] * 3
    if sum(sizes) != total or any(size % heads for size in sizes):
        builder.pin_node(node, f"{node.op_type} projections are not whole heads")
        return
    units = Units(builder.atoms.fresh(heads), 1, True)
    builder.attention_heads.append(units.layout)
    q_size, k_size, v_size = (size // heads for size in sizes)
    sections = builder.concat_layouts([_widen(builder, units, size) for size in (q_size, k_size, v_size)])
    _tie(builder, node, weights, 1, sections)
    _tie(builder, node, bias, 0, sections)
    builder.merge([(x, rank - 1), (weights, 0)], node)  # the projection's input channels, as MatMul's
    _tie_optional_heads(builder, node, input_at(node, 5), -3, units.layout)  # attention_bias
    _pin_other_axes(builder, node, input_at(node, 3), set())  # mask_index
    _cache(builder, node, [input_at(node, 4)], [_output(node, 1)], 2, units)
    output = node.output[0]
    _pass_axes(builder, x, output, {axis: axis for axis in range(rank - 1)})
    builder.set_output(output, rank - 1, _widen(builder, units, v_size))
    builder.head_axes.add((output, rank - 1))

    def fix(removal: Removal) -> None:
        removed = _removed_units(removal, output, rank - 1, v_size)
        if removed:
            set_int_attr(node, "num_heads", heads - removed)
            if attr(node, "qkv_hidden_sizes") is not None:
                set_ints_attr(node, "qkv_hidden_sizes", [size - removed * (size // heads) for size in sizes])

    builder.add_fixup(fix)


@rule("Attention")
def onnx_attention(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """ONNX's Attention (opset 23): Q [B, Hq, S, D] and K, V [B, Hkv, L, D], or 3D [B, S, H*D] with
    q_num_heads and kv_num_heads; attn_mask [.., Hq|1, S, T]; past and present [B, Hkv, T, D]."""
    q, k, v = node.input[0], node.input[1], node.input[2]
    ranks = {builder.rank(name) for name in (q, k, v)}
    if len(ranks) != 1 or ranks.issubset({None}) or next(iter(ranks)) not in (3, 4):
        builder.pin_node(node, f"{node.op_type} with operands of unknown or mixed rank")
        return
    four_d = next(iter(ranks)) == 4
    if four_d:
        heads, kv_heads = builder.dim(q, 1), builder.dim(k, 1)
        head_size, v_size = builder.dim(q, 3), builder.dim(v, 3)
    else:
        heads, kv_heads = int(attr(node, "q_num_heads", 0)), int(attr(node, "kv_num_heads", 0))
        head_size = builder.dim(q, 2) // heads if heads and builder.dim(q, 2) else None
        v_size = builder.dim(v, 2) // kv_heads if kv_heads and builder.dim(v, 2) else None
    if not heads or not kv_heads or heads % kv_heads or not head_size or not v_size:
        builder.pin_node(node, f"{node.op_type} with unknown head counts or sizes")
        return
    units = _units(builder, heads, kv_heads)
    builder.attention_heads.append(units.layout)
    per_query = _widen(builder, units, units.query_heads)
    if four_d:
        _tie(builder, node, q, 1, per_query)
        for name in (k, v):
            _tie(builder, node, name, 1, _kv_layout(builder, node, units, 1))
        for name in (q, k, v):
            _pin_other_axes(builder, node, name, {0, 1, 2})
    else:
        _tie(builder, node, q, 2, _widen(builder, units, units.query_heads * head_size))
        _tie(builder, node, k, 2, _kv_layout(builder, node, units, head_size))
        _tie(builder, node, v, 2, _kv_layout(builder, node, units, v_size))
        for name in (q, k, v):
            _pin_other_axes(builder, node, name, {0, 1, 2})
    _tie_optional_heads(builder, node, input_at(node, 3), -3, per_query)  # attn_mask
    _cache(builder, node, [input_at(node, 4), input_at(node, 5)], [_output(node, 1), _output(node, 2)], 1, units)
    output = node.output[0]
    out_axis, out_layout = (1, per_query) if four_d else (2, _widen(builder, units, units.query_heads * v_size))
    _pass_axes(builder, q, output, {0: 0, 2: 2} if four_d else {0: 0, 1: 1})
    builder.set_output(output, out_axis, out_layout)
    builder.set_output(_output(node, 3), 1, per_query)
    builder.head_axes.add((output, out_axis))
    block = builder.atoms.total(out_layout) // builder.atoms.total(units.layout)

    def fix(removal: Removal) -> None:
        removed = _removed_units(removal, output, out_axis, block)
        if removed and not four_d:
            set_int_attr(node, "q_num_heads", heads - removed * units.query_heads)
            if units.kv:
                set_int_attr(node, "kv_num_heads", kv_heads - removed)

    builder.add_fixup(fix)


def _rotary(builder: SpaceBuilder, node: onnx.NodeProto, x: str, cos_cache: str) -> None:
    """The rotation mixes the two halves (or neighbours) of each head's dimension and nothing else:
    whole heads pass. 3D input [B, S, H*D]: head_size from num_heads, else from cos_cache (D/2 wide)."""
    rank, output = builder.rank(x), node.output[0]
    if rank not in (3, 4):
        builder.pin_node(node, f"{node.op_type} of unknown rank")
        return
    if rank == 4:  # [B, H, S, D]
        _pin_other_axes(builder, node, x, {0, 1, 2})
        _pass_axes(builder, x, output, {0: 0, 1: 1, 2: 2})
        return
    heads, rotary_dim = int(attr(node, "num_heads", 0)), int(attr(node, "rotary_embedding_dim", 0))
    width = builder.dim(x, 2)
    cos_width = builder.dim(cos_cache, builder.rank(cos_cache) - 1) if builder.rank(cos_cache) else None
    head_size = width // heads if heads and width else (2 * cos_width if cos_width and not rotary_dim else None)
    tracked = builder.tracked(x)
    _pass_axes(builder, x, output, {0: 0, 1: 1})
    if 2 not in tracked:
        return
    if not head_size or not width or width % head_size:
        builder.pin(x, 2, f"{node.op_type} whose head size is unknown", node)
        return
    units = builder.atoms.fresh(width // head_size)
    builder.tie([tracked[2], builder.atoms.widen(units, head_size)], node)
    builder.set_output(output, 2, tracked[2])
    if not heads:
        return

    def fix(removal: Removal) -> None:
        removed = removal.count(x, 2) // head_size
        if removed:
            set_int_attr(node, "num_heads", heads - removed)

    builder.add_fixup(fix)


@rule("RotaryEmbedding", domain=CONTRIB)
def rotary_embedding(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """ORT's: input, position_ids, cos_cache, sin_cache."""
    _rotary(builder, node, node.input[0], input_at(node, 2))


@rule("RotaryEmbedding")
def onnx_rotary_embedding(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """ONNX's (opset 23): X, cos_cache, sin_cache, position_ids."""
    _rotary(builder, node, node.input[0], input_at(node, 1))
