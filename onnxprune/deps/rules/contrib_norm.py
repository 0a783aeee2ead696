"""ONNX Runtime's normalizations, as its fusions write them (fusion_simplified_layernorm.py,
fusion_skiplayernorm.py) and onnxruntime-genai's model builder emits them.

SimplifiedLayerNormalization (an RMSNorm; ORT registers it in the default domain) and the Skip forms
(SkipLayerNormalization, SkipSimplifiedLayerNormalization: residual add + norm in one op) compute
their statistics over the hidden axis, so removing one hidden channel changes every output: that
axis is pinned, the norm's weights in the same space, and the other axes pass. The Skip forms add
input, skip and bias first, so those share the hidden channels, and output 3 (input_skip_bias_sum,
the residual stream) carries them on.

QK-norm (Qwen3, Gemma 3) is an RMSNorm over each head's dimension. Written on [B, S, H, D] it needs
nothing special (the head axis passes); onnxruntime-genai writes it on the heads merged into the
sequence axis, Reshape [B, S, H*D] -> [B, S*H, D] -> norm -> Reshape back, which the Reshape rule
cannot follow (a symbolic axis times the heads): `per_head_norm` takes the three nodes as one.
"""

from __future__ import annotations

import onnx

from ..builder import SpaceBuilder
from . import CONTRIB, pattern, rule
from .common import attr, input_at, norm_axis
from .reshape import _fix_target


def _normalize(builder: SpaceBuilder, node: onnx.NodeProto, operands: list[str], weights: list[str], first: int,
               rank: int, full: list[str], stats: list[str]) -> None:
    """Operands (right-aligned, broadcast) and weights (over the normalized axes) share each axis; the
    normalized axes [first, rank) are pinned. `full` outputs have the input's shape, `stats` outputs
    only its leading axes (mean, inverse standard deviation)."""
    why = f"{node.op_type} normalizes over this axis"
    for axis in range(rank):
        names = operands + (weights if axis >= first else [])
        parts = []
        for name in names:
            own_rank = builder.rank(name)
            own_axis = axis - (rank - own_rank) if own_rank is not None else -1
            if own_axis >= 0 and builder.dim(name, own_axis) != 1:
                parts.append((name, own_axis))
        layout = builder.merge(parts, node) if parts else None
        if layout is not None and axis >= first:
            builder.pin_layout(layout, why, node)
        for output in full + (stats if axis < first else []):
            builder.set_output(output, axis, layout)


def _outputs(node: onnx.NodeProto, indices: tuple[int, ...]) -> list[str]:
    return [node.output[i] for i in indices if i < len(node.output) and node.output[i]]


@rule("SimplifiedLayerNormalization")
def simplified_layer_norm(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """Y = X / rms(X over axes [axis:]) * scale; output 1 is the inverse RMS (training only)."""
    x, rank = node.input[0], builder.rank(node.input[0])
    if rank is None:
        builder.pin_node(node, f"{node.op_type} of unknown rank")
        return
    first = norm_axis(int(attr(node, "axis", -1)), rank)
    weights = [name for name in node.input[1:] if name]
    _normalize(builder, node, [x], weights, first, rank, _outputs(node, (0,)), _outputs(node, (1,)))


@rule("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", domain=CONTRIB)
def skip_layer_norm(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    """Inputs input, skip, gamma (beta), bias; outputs output, mean, inv_std_var, input_skip_bias_sum.
    The skip may broadcast ([1, S, H] or [S, H]); gamma, beta and bias are [H]."""
    x, skip, rank = node.input[0], input_at(node, 1), builder.rank(node.input[0])
    if rank is None or (skip and builder.rank(skip) is None):
        builder.pin_node(node, f"{node.op_type} of unknown rank")
        return
    weights = [name for name in node.input[2:] if name]
    _normalize(builder, node, [x] + ([skip] if skip else []), weights, rank - 1, rank, _outputs(node, (0, 3)),
               _outputs(node, (1, 2)))


# Norms over the last axis alone, in the default domain, that QK-norm is written with.
_PER_HEAD_NORMS = ("SimplifiedLayerNormalization", "RMSNormalization", "LayerNormalization")


def _sole_consumer(builder: SpaceBuilder, name: str, op_types) -> onnx.NodeProto | None:
    consumers = builder.model.consumers(name)
    if len(consumers) != 1 or name in builder.model.output_names:
        return None
    node, index = consumers[0]
    if index != 0 or node.op_type not in op_types or node.domain not in ("", "ai.onnx"):
        return None
    return node


@pattern("Reshape")
def per_head_norm(builder: SpaceBuilder, node: onnx.NodeProto) -> bool:
    """x [..., H*D] -> Reshape [..., -1, D] -> norm over the last axis -> Reshape back to x's shape.

    The pair of Reshapes is the identity on x's layout, and each row the norm sees is one head's D
    channels, so the heads pass and only whole heads can go. The first target must hold -1 where
    the heads merge (it then needs no rewrite); the second's literal H*D is rewritten."""
    x, merged = node.input[0], node.output[0]
    tracked, dims = builder.tracked(x), builder.dims(x)
    if not tracked or dims is None or set(tracked) != {len(dims) - 1} or not isinstance(dims[-1], int):
        return False
    norm = _sole_consumer(builder, merged, _PER_HEAD_NORMS)
    back = _sole_consumer(builder, norm.output[0], ("Reshape",)) if norm is not None else None
    target = builder.partial_param(node, 1)
    merged_dims = builder.dims(merged)
    if back is None or target is None or merged_dims is None or any(name for name in norm.output[1:]):
        return False
    head_size = target[-1]
    if not isinstance(head_size, int) or head_size <= 0 or dims[-1] % head_size or -1 not in target[:-1]:
        return False
    if norm_axis(int(attr(norm, "axis", -1)), len(merged_dims)) != len(merged_dims) - 1:
        return False
    if any(builder.rank(name) != 1 for name in norm.input[1:] if name):
        return False  # a scale per head and dim ([H, D]) would have to be sliced: left to the plain rules
    restored = builder.dims(back.output[0])
    if restored is None or tuple(restored) != tuple(dims) or any(d is None for d in dims):
        return False
    last = len(dims) - 1
    heads = builder.atoms.fresh(dims[-1] // head_size)
    if not builder.atoms.unify(tracked[last], builder.atoms.widen(heads, head_size)):
        builder.pin(x, last, f"a per-head {norm.op_type} cuts through coupled channels", norm)
    builder.set_output(back.output[0], last, tracked[last])
    back_target = builder.partial_param(back, 1)
    if back_target is None:
        builder.pin(x, last, "the Reshape after a per-head norm has an unknown target", back)
    else:
        _fix_target(builder, back, back.output[0], back_target)
    builder.claim(norm)
    builder.claim(back)
    return True
