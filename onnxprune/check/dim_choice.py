"""Values for symbolic dims that the ORIGINAL model runs at: real image sizes and sequence lengths.

A symbolic dim set to 1 breaks most detectors (a YOLO neck concatenates an upsampled map with a
lateral one: at 1x1 their sizes differ) and leaves text models a single token. So:

- image-like inputs (rank-4 float, [N,C,H,W] or [N,H,W,C] with 1-4 channels) get a size that is a
  multiple of the network's total stride, derived from the graph (strides of Conv and pooling,
  divided by Resize scales), starting from the model's own hints: sizes in its metadata (e.g.
  Ultralytics' `imgsz`), the fixed size of another image input, the fixed side of this one (a text
  line 48 high is read 4x as wide), else 224;
- other non-batch symbolic dims (sequence, time) get a real length, SEQUENCE_LENGTH;
- batch dims are left to resolve_shapes (1).

`candidates()` lists the preferred choice first, then other sizes to try when the original does not
run at it (check.first_run runs them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..io.model import Model
from .cache_dims import cache_head_sizes
from .inputs import InputSpec, _is_float, _key

SEQUENCE_LENGTH = 32
DEFAULT_IMAGE_SIZE = 224
# Text-line recognizers take a fixed height under ~100 px and a width several times it.
_LINE_HEIGHT_LIMIT, _LINE_ASPECT = 96, 4
_FALLBACK_SIZES = (32, 64, 128, 256, 320, 416, 512, 640)
_METADATA_KEYS = ("imgsz", "img_size", "image_size", "input_size", "image_shape", "input_shape")
# Rank-4 float inputs that are not images (an LLM's KV cache, recurrent states).
_NOT_IMAGE_WORDS = ("past", "cache", "key", "value", "state", "hidden", "memory")

Key = str | tuple[str, int]
Suggestions = dict[Key, tuple[int, str]]


@dataclass
class ImageInput:
    """An image-like input: the axes of H and W, their total strides and the size to start from."""

    name: str
    spatial: tuple[int, int]
    strides: tuple[int, int]
    start: tuple[int, int]
    reason: str
    symbolic: list[int] = field(default_factory=list)  # spatial axes that are symbolic


def image_axes(spec: InputSpec) -> tuple[int, int] | None:
    """(H axis, W axis) of an image-like input, or None."""
    shape = spec.shape
    if shape is None or len(shape) != 4 or not _is_float(spec.dtype):
        return None
    if any(word in spec.name.lower() for word in _NOT_IMAGE_WORDS):
        return None

    def channels(dim) -> bool:
        return isinstance(dim, int) and 1 <= dim <= 4

    # The W axis symbolic or both sides fixed: a KV cache [B, heads, past, head_dim] has its
    # symbolic dim where H would be and a fixed one where W would be.
    if channels(shape[1]) and (not isinstance(shape[3], int) or isinstance(shape[2], int)):
        return 2, 3
    if channels(shape[3]) and not channels(shape[1]) and (not isinstance(shape[2], int) or isinstance(shape[1], int)):
        return 1, 2
    return None


def total_strides(model: Model, start: str) -> tuple[int, int]:
    """The largest (H, W) downsampling any tensor reached from `start` has: Conv and pooling strides
    multiply, Resize/Upsample scales and ConvTranspose strides divide, Shape and Size stop."""
    factor: dict[str, tuple[float, float]] = {start: (1.0, 1.0)}
    largest = [1.0, 1.0]
    for node in model.graph.node:
        known = [factor[name] for name in node.input if name in factor]
        if not known or node.op_type in ("Shape", "Size"):
            continue
        fh, fw = max(f[0] for f in known), max(f[1] for f in known)
        op = node.op_type
        if op in ("Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool", "ConvTranspose"):
            strides = _ints(node, "strides") or [1, 1]
            sh, sw = (strides + strides)[:2] if len(strides) == 1 else strides[-2:]
            if op == "ConvTranspose":
                fh, fw = fh / sh, fw / sw
            else:
                fh, fw = fh * sh, fw * sw
        elif op in ("Resize", "Upsample"):
            scales = _resize_scales(model, node)
            if scales is None:
                continue  # sizes computed at run time: the tensor it matches carries the factor
            fh, fw = fh / scales[0], fw / scales[1]
        elif op == "SpaceToDepth":
            block = _ints(node, "blocksize")[0]
            fh, fw = fh * block, fw * block
        elif op == "DepthToSpace":
            block = _ints(node, "blocksize")[0]
            fh, fw = fh / block, fw / block
        for out in node.output:
            if out:
                factor[out] = (fh, fw)
        largest = [max(largest[0], fh), max(largest[1], fw)]
    return max(1, round(largest[0])), max(1, round(largest[1]))


def _resize_scales(model: Model, node) -> tuple[float, float] | None:
    index = 1 if node.op_type == "Upsample" else 2
    if len(node.input) <= index or not model.is_weight(node.input[index]):
        return None
    scales = np.asarray(model.weight(node.input[index]), dtype=np.float64).ravel()
    if scales.size < 2 or np.any(scales[-2:] <= 0):
        return None
    # NHWC graphs resize axes (1, 2); scales of 1 on the last axis say which layout this is.
    pair = scales[-2:] if not (scales.size == 4 and scales[-1] == 1 and scales[1] != 1) else scales[1:3]
    return float(pair[0]), float(pair[1])


def _ints(node, name: str) -> list[int]:
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints) if attr.ints else [int(attr.i)]
    return []


def metadata_size(model: Model) -> tuple[int, int] | None:
    """An image size the exporter wrote into the metadata (Ultralytics: imgsz '[640, 640]')."""
    for prop in model.proto.metadata_props:
        if prop.key.lower() not in _METADATA_KEYS:
            continue
        numbers = [int(n) for n in re.findall(r"\d+", prop.value)]
        sizes = [n for n in numbers if 8 <= n <= 8192]
        if len(sizes) == 1:
            return sizes[0], sizes[0]
        if len(sizes) >= 2:
            return sizes[-2], sizes[-1]
    return None


def image_inputs(model: Model, specs: list[InputSpec], overrides: Mapping[str, tuple[int, ...]]) -> list[ImageInput]:
    """The image-like inputs with a symbolic side (not given by --shapes), each with a start size."""
    layouts = {spec.name: axes for spec in specs if (axes := image_axes(spec)) is not None}
    fixed_sizes = {spec.name: (spec.shape[axes[0]], spec.shape[axes[1]]) for spec in specs
                   if (axes := layouts.get(spec.name)) and all(isinstance(spec.shape[a], int) for a in axes)}
    fixed_sizes.update({name: (shape[layouts[name][0]], shape[layouts[name][1]])
                        for name, shape in overrides.items() if name in layouts})
    hint = metadata_size(model)
    found = []
    for spec in specs:
        axes = layouts.get(spec.name)
        if axes is None or spec.name in overrides or spec.name in fixed_sizes:
            continue
        symbolic = [a for a in axes if not isinstance(spec.shape[a], int)]
        h, w = (spec.shape[a] for a in axes)
        if hint is not None:
            start, reason = hint, "the size in the model's metadata"
        elif fixed_sizes:
            start, reason = next(iter(fixed_sizes.values())), "the size of the model's other image input"
        elif isinstance(h, int) or isinstance(w, int):
            side = h if isinstance(h, int) else w
            wide = side < _LINE_HEIGHT_LIMIT and isinstance(h, int)
            other = side * _LINE_ASPECT if wide else side
            start = (h, other) if isinstance(h, int) else (other, w)
            reason = "a text line's width" if wide else "the model's fixed side"
        else:
            start, reason = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE), "an image size"
        strides = total_strides(model, spec.name)
        found.append(ImageInput(spec.name, axes, strides, start, reason, symbolic))
    return found


def candidates(model: Model, specs: list[InputSpec], overrides: Mapping[str, tuple[int, ...]]) -> list[Suggestions]:
    """Suggestions for symbolic dims, the preferred first, then other image sizes to try."""
    images = image_inputs(model, specs, overrides)
    # A KV cache's symbolic head size is fixed by the weights: no sequence-length guess for it.
    base: Suggestions = cache_head_sizes(model, [spec for spec in specs if spec.name not in overrides])
    image_keys = set()
    for image in images:
        spec = next(s for s in specs if s.name == image.name)
        image_keys |= {_key(spec.name, axis, spec.shape[axis]) for axis in image.symbolic}
    for spec in specs:
        if spec.shape is None or spec.name in overrides:
            continue
        for axis, dim in enumerate(spec.shape):
            key = _key(spec.name, axis, spec.shape[axis])
            batch_like = axis == 0 or (isinstance(dim, str) and "batch" in dim.lower())
            if isinstance(dim, int) or batch_like or key in image_keys or key in base:
                continue
            base[key] = (SEQUENCE_LENGTH, "a sequence length")
    for key in [k for k in base if isinstance(k, str) and "+" in k]:
        # Optimum names a KV-cache model's mask length "past_sequence_length + sequence_length".
        terms = [term.strip() for term in key.split("+")]
        if all(term.isdigit() or term in base for term in terms):
            total = sum(int(term) if term.isdigit() else base[term][0] for term in terms)
            base[key] = (total, "the sum its name says")
    # ONNX Runtime GenAI names it "total_sequence_length": the past plus the new tokens.
    past = [k for k in base if isinstance(k, str) and "past" in k.lower() and "+" not in k]
    new = [k for k in base if isinstance(k, str) and "seq" in k.lower() and not any(
        word in k.lower() for word in ("past", "total", "+"))]
    for key in [k for k in base if isinstance(k, str) and "total" in k.lower()]:
        if past and new:
            base[key] = (base[past[0]][0] + base[new[0]][0], f"'{past[0]}' + '{new[0]}'")
    if not images:
        return [base]
    options: list[Suggestions] = []
    sizes = [None, *_FALLBACK_SIZES]  # None: each input's own start size
    for size in sizes:
        chosen = dict(base)
        for image in images:
            spec = next(s for s in specs if s.name == image.name)
            for position, axis in enumerate(image.spatial):
                if axis not in image.symbolic:
                    continue
                stride = image.strides[position]
                start = image.start[position] if size is None else size
                value = math.ceil(start / stride) * stride
                reason = image.reason if size is None else "a size the original runs at"
                if stride > 1:
                    reason += f", a multiple of the total stride {stride}"
                chosen.setdefault(_key(spec.name, axis, spec.shape[axis]), (value, reason))
        if chosen not in options:
            options.append(chosen)
    return options


def shapes_template(spec: InputSpec, images: dict[str, tuple[int, int]]) -> str:
    """`NAME:1x3xHxW` for a --shapes hint: fixed dims as they are, batch 1, placeholders elsewhere."""
    if spec.shape is None:
        return f"{spec.name}:DxDx..."
    axes = images.get(spec.name, ())
    parts = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            parts.append(str(dim))
        elif axis in axes:
            parts.append("H" if axis == axes[0] else "W")
        elif axis == 0 or (isinstance(dim, str) and "batch" in dim.lower()):
            parts.append("1")
        else:
            parts.append("SEQ" if spec.dtype.kind in "iub" or len(spec.shape) <= 3 else "D")
    return f"{spec.name}:{'x'.join(parts)}"
