"""Convolutions, normalizations, pooling and resizing, as ONNX defines them (padding included)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .ops_common import Node, UnsupportedOp, arg, axis_of, ints, op

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _same_pads(auto_pad: str, sizes, kernel, strides, dilations) -> list[int]:
    """SAME_UPPER / SAME_LOWER: output = ceil(input / stride), the odd pad at the end (upper) or start."""
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


def _pads(node: Node, sizes, kernel, strides, dilations) -> list[int]:
    auto_pad = node.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(auto_pad, sizes, kernel, strides, dilations)
    if auto_pad == "VALID":
        return [0] * (2 * len(sizes))
    return list(node.get("pads", [0] * (2 * len(sizes))))


def _torch_pads(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, .., e1, e2, ..] -> torch's F.pad order (last axis first)."""
    half = len(pads) // 2
    out = []
    for axis in reversed(range(half)):
        out += [pads[axis], pads[axis + half]]
    return out


def _symmetric(pads: list[int]) -> list[int] | None:
    half = len(pads) // 2
    return pads[:half] if pads[:half] == pads[half:] else None


@op("Conv")
def _conv(node: Node, x: list) -> torch.Tensor:
    data, weight, bias = x[0], x[1], arg(x, 2)
    spatial = weight.dim() - 2
    if spatial not in _CONV:
        raise UnsupportedOp(f"{spatial}-D convolution")
    kernel = list(weight.shape[2:])
    strides = list(node.get("strides", [1] * spatial))
    dilations = list(node.get("dilations", [1] * spatial))
    pads = _pads(node, data.shape[2:], kernel, strides, dilations)
    padding = _symmetric(pads)
    if padding is None:
        data, padding = F.pad(data, _torch_pads(pads)), [0] * spatial
    return _CONV[spatial](data, weight, bias, strides, padding, dilations, node.get("group", 1))


@op("ConvTranspose")
def _conv_transpose(node: Node, x: list) -> torch.Tensor:
    data, weight, bias = x[0], x[1], arg(x, 2)
    spatial = weight.dim() - 2
    if spatial not in _CONV_T:
        raise UnsupportedOp(f"{spatial}-D transposed convolution")
    groups = node.get("group", 1)
    kernel = list(weight.shape[2:])
    strides = list(node.get("strides", [1] * spatial))
    dilations = list(node.get("dilations", [1] * spatial))
    extra = list(node.get("output_padding", [0] * spatial))
    sizes = data.shape[2:]
    # Full output (every position some input reaches), then output_padding at the end, then crop pads.
    full = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(sizes, strides, kernel, dilations)]
    auto_pad = node.get("auto_pad", "NOTSET")
    if "output_shape" in node.attrs or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        wanted = list(node.attrs["output_shape"])[-spatial:] if "output_shape" in node.attrs else \
            [n * s for n, s in zip(sizes, strides)]
        totals = [f + e - w for f, e, w in zip(full, extra, wanted)]
        if auto_pad == "SAME_UPPER":
            pads = [t // 2 for t in totals] + [t - t // 2 for t in totals]
        else:
            pads = [t - t // 2 for t in totals] + [t // 2 for t in totals]
    elif auto_pad == "VALID":
        pads = [0] * (2 * spatial)
    else:
        pads = list(node.get("pads", [0] * (2 * spatial)))
    out = _CONV_T[spatial](data, weight, None, strides, 0, 0, groups, dilations)
    if any(extra):
        out = F.pad(out, _torch_pads([0] * spatial + extra))
    index = [slice(None), slice(None)]
    for axis in range(spatial):
        index.append(slice(pads[axis], out.shape[2 + axis] - pads[axis + spatial]))
    out = out[tuple(index)]
    if bias is not None:
        out = out + bias.reshape(1, -1, *([1] * spatial))
    return out


def _channel_shape(value: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    return value.reshape(1, -1, *([1] * (data.dim() - 2)))


@op("BatchNormalization")
def _batch_norm(node: Node, x: list) -> torch.Tensor:
    data, scale, bias, mean, var = x[:5]
    if node.get("training_mode", 0) or node.outputs > 1:  # running statistics as outputs: training
        raise UnsupportedOp("BatchNormalization in training mode")
    # Inference form: the running statistics are constants of the exported model.
    inverse = torch.rsqrt(var.detach() + node.get("epsilon", 1e-5))
    return (data - _channel_shape(mean.detach(), data)) * _channel_shape(inverse * scale, data) + \
        _channel_shape(bias, data)


@op("InstanceNormalization")
def _instance_norm(node: Node, x: list) -> torch.Tensor:
    return F.instance_norm(x[0], weight=x[1], bias=x[2], eps=node.get("epsilon", 1e-5))


@op("LayerNormalization")
def _layer_norm(node: Node, x: list):
    data, scale, bias = x[0], x[1], arg(x, 2)
    axis = axis_of(node.get("axis", -1), data.dim())
    eps = node.get("epsilon", 1e-5)
    shape = tuple(data.shape[axis:])
    if node.outputs == 1 and tuple(scale.shape) == shape and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(data, shape, scale, bias, eps)
    dims = tuple(range(axis, data.dim()))
    mean = data.mean(dim=dims, keepdim=True)
    inverse = torch.rsqrt(((data - mean) ** 2).mean(dim=dims, keepdim=True) + eps)
    out = (data - mean) * inverse * scale
    out = out + bias if bias is not None else out
    return (out, mean, inverse) if node.outputs > 1 else out


@op("com.microsoft:SkipLayerNormalization")
def _skip_layer_norm(node: Node, x: list):
    summed = x[0] + x[1] + (x[4] if arg(x, 4) is not None else 0)
    out = F.layer_norm(summed, (summed.shape[-1],), x[2], arg(x, 3), node.get("epsilon", 1e-12))
    if node.outputs > 1:
        raise UnsupportedOp("SkipLayerNormalization's statistics outputs")
    return out


# ------------------------------------------------------------ pooling


def _pool_geometry(node: Node, data: torch.Tensor):
    kernel = list(node.attrs["kernel_shape"])
    spatial = len(kernel)
    strides = list(node.get("strides", [1] * spatial))
    dilations = list(node.get("dilations", [1] * spatial))
    pads = _pads(node, data.shape[2:], kernel, strides, dilations)
    return spatial, kernel, strides, dilations, pads


@op("MaxPool")
def _max_pool(node: Node, x: list) -> torch.Tensor:
    data = x[0]
    spatial, kernel, strides, dilations, pads = _pool_geometry(node, data)
    if node.outputs > 1 or spatial not in _MAX_POOL:
        raise UnsupportedOp("MaxPool indices output" if node.outputs > 1 else f"{spatial}-D pooling")
    padding = _symmetric(pads)
    if padding is None or any(p > k // 2 for p, k in zip(padding, kernel)):
        data, padding = F.pad(data, _torch_pads(pads), value=-math.inf), [0] * spatial
    return _MAX_POOL[spatial](data, kernel, strides, padding, dilations, ceil_mode=bool(node.get("ceil_mode", 0)))


@op("AveragePool")
def _avg_pool(node: Node, x: list) -> torch.Tensor:
    data = x[0]
    spatial, kernel, strides, dilations, pads = _pool_geometry(node, data)
    if spatial not in _AVG_POOL or any(d != 1 for d in dilations):
        raise UnsupportedOp("dilated or >3-D average pooling")
    include = bool(node.get("count_include_pad", 0))
    ceil = bool(node.get("ceil_mode", 0))
    padding = _symmetric(pads)
    if padding is not None and all(p <= k // 2 for p, k in zip(padding, kernel)):
        return _AVG_POOL[spatial](data, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include)
    # Asymmetric pads: sum over the zero-padded input, divided by the count of real (or padded) cells.
    padded = F.pad(data, _torch_pads(pads))
    total = _AVG_POOL[spatial](padded, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    ones = torch.ones((1, 1, *data.shape[2:]), dtype=data.dtype, device=data.device)
    mask = F.pad(ones, _torch_pads(pads), value=1.0 if include else 0.0)
    share = _AVG_POOL[spatial](mask, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    return total / share


@op("GlobalAveragePool")
def _global_avg(node: Node, x: list) -> torch.Tensor:
    return x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True)


@op("GlobalMaxPool")
def _global_max(node: Node, x: list) -> torch.Tensor:
    return x[0].amax(dim=tuple(range(2, x[0].dim())), keepdim=True)


# ------------------------------------------------------------ resizing


def _source_coordinates(mode: str, out: int, size: int, scale: float, device) -> torch.Tensor:
    """Where output position i samples the input (ONNX Resize's coordinate_transformation_mode), in
    float32 as ONNX Runtime computes it: 3 / 0.6f is 5 there, 4.9999998 in float64, a different pixel."""
    i = torch.arange(out, dtype=torch.float32, device=device)
    scale = float(np.float32(scale))
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out > 1 else torch.zeros_like(i)
    if mode == "align_corners":
        return i * ((size - 1) / (out - 1)) if out > 1 else torch.zeros_like(i)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_half_pixel_for_nn":
        return (i + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        offset = size / 2 * (1 - adjustment)
        return offset + (i + 0.5) / scale - 0.5
    raise UnsupportedOp(f"Resize coordinate_transformation_mode '{mode}'")


def _nearest(coordinates: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "round_prefer_floor":
        return torch.ceil(coordinates - 0.5)
    if mode == "round_prefer_ceil":
        return torch.floor(coordinates + 0.5)
    if mode == "floor":
        return torch.floor(coordinates)
    if mode == "ceil":
        return torch.ceil(coordinates)
    raise UnsupportedOp(f"Resize nearest_mode '{mode}'")


def _resize_axis(value: torch.Tensor, axis: int, out: int, scale: float, node: Node) -> torch.Tensor:
    size = value.shape[axis]
    mode = node.get("mode", "nearest")
    transform = node.get("coordinate_transformation_mode", "half_pixel")
    coordinates = _source_coordinates(transform, out, size, scale, value.device)
    if mode == "nearest":
        index = _nearest(coordinates, node.get("nearest_mode", "round_prefer_floor"))
        index = index.clamp(0, size - 1).to(torch.int64)
        return value.index_select(axis, index)
    if mode == "linear":
        coordinates = coordinates.clamp(0, size - 1)
        low = torch.floor(coordinates).to(torch.int64)
        high = torch.clamp(low + 1, max=size - 1)
        weight = (coordinates - low).to(value.dtype)
        shape = [1] * value.dim()
        shape[axis] = out
        weight = weight.reshape(shape)
        return value.index_select(axis, low) * (1 - weight) + value.index_select(axis, high) * weight
    raise UnsupportedOp(f"Resize mode '{mode}'")


@op("Resize")
def _resize(node: Node, x: list) -> torch.Tensor:
    value = x[0]
    if node.get("antialias", 0) or node.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedOp("Resize antialias / keep_aspect_ratio_policy")
    if node.get("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise UnsupportedOp("Resize tf_crop_and_resize")
    rank = value.dim()
    axes = [axis_of(a, rank) for a in node.get("axes", range(rank))]
    scales, sizes = arg(x, 2), arg(x, 3)
    sizes = ints(sizes) if sizes is not None and sizes.numel() else None
    scales = [float(s) for s in scales.reshape(-1).tolist()] if scales is not None and scales.numel() else None
    for position, axis in enumerate(axes):
        size = value.shape[axis]
        if sizes is not None:
            out = sizes[position]
            scale = out / size
        else:
            scale = scales[position]
            out = math.floor(size * scale)
        if out == size and scale == 1.0:
            continue
        value = _resize_axis(value, axis, out, scale, node)
    return value


# ------------------------------------------------------------ quantization (inference only)


@op("DequantizeLinear")
def _dequantize(node: Node, x: list) -> torch.Tensor:
    data, scale, zero = x[0], x[1], arg(x, 2)
    if node.get("block_size", 0):
        raise UnsupportedOp("blocked DequantizeLinear")
    shape = [1] * data.dim()
    if scale.numel() > 1:
        shape[axis_of(node.get("axis", 1), data.dim())] = -1
    values = data.to(scale.dtype)
    if zero is not None:
        values = values - zero.to(scale.dtype).reshape(shape)
    return values * scale.reshape(shape)
