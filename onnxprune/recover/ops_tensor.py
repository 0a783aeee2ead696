"""Layout and shape ops: Concat, Split, Slice, Reshape, Transpose, Gather, Shape, Constant, Pad, ..."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .ops_common import Node, UnsupportedOp, arg, attr_or_input, axis_of, ints, op, scalar


def _device(x: list) -> torch.device:
    return next((v.device for v in x if isinstance(v, torch.Tensor)), torch.device("cpu"))


def _long(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=device)


@op("Shape")
def _shape(node: Node, x: list) -> torch.Tensor:
    dims = list(x[0].shape)
    start, end = node.get("start", 0), node.get("end", len(dims))
    return _long(dims[slice(start, end)], x[0].device)


@op("Size")
def _size(node: Node, x: list) -> torch.Tensor:
    return _long(x[0].numel(), x[0].device)


@op("Constant")
def _constant(node: Node, x: list) -> torch.Tensor:
    from .interpreter import to_torch

    for name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if name in node.attrs and node.attrs[name] is not None:
            value = node.attrs[name]
            dtype = np.float32 if name.startswith("value_float") else np.int64 if name != "value" else None
            return to_torch(np.asarray(value, dtype=dtype))
    raise UnsupportedOp("Constant without a numeric value")


@op("ConstantOfShape")
def _constant_of_shape(node: Node, x: list) -> torch.Tensor:
    from .interpreter import to_torch

    fill = node.get("value")
    value = to_torch(np.asarray(fill if fill is not None else np.zeros(1, np.float32)).reshape(-1)[:1],
                     x[0].device)
    return value.reshape(()).expand(*ints(x[0])).clone()


@op("Range")
def _range(node: Node, x: list) -> torch.Tensor:
    start, limit, delta = (scalar(v) for v in x[:3])
    return torch.arange(start, limit, delta, dtype=x[0].dtype, device=x[0].device)


@op("Concat")
def _concat(node: Node, x: list) -> torch.Tensor:
    values = [v for v in x if v is not None]
    dtype = values[0].dtype
    return torch.cat([v.to(dtype) for v in values], dim=node.attrs["axis"])


@op("Split")
def _split(node: Node, x: list):
    value = x[0]
    axis = axis_of(node.get("axis", 0), value.dim())
    sizes = attr_or_input(node, x, "split", 1)
    if sizes is None:
        parts = node.get("num_outputs", node.outputs)
        step = math.ceil(value.shape[axis] / parts)
        sizes = [min(step, value.shape[axis] - i * step) for i in range(parts)]
    return tuple(torch.split(value, sizes, dim=axis))


@op("Slice")
def _slice(node: Node, x: list) -> torch.Tensor:
    value = x[0]
    starts, ends, axes, steps = ints(x[1]), ints(x[2]), ints(arg(x, 3)), ints(arg(x, 4))
    axes = list(range(len(starts))) if axes is None else [axis_of(a, value.dim()) for a in axes]
    steps = steps or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        begin, stop, stride = slice(start, end, step).indices(value.shape[axis])
        if stride > 0:
            index = [slice(None)] * value.dim()
            index[axis] = slice(begin, stop, stride)
            value = value[tuple(index)]
        else:
            value = value.index_select(axis, _long(list(range(begin, stop, stride)), value.device))
    return value


@op("Reshape")
def _reshape(node: Node, x: list) -> torch.Tensor:
    shape = ints(x[1])
    if not node.get("allowzero", 0):
        shape = [x[0].shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x[0].reshape(shape)


@op("Flatten")
def _flatten(node: Node, x: list) -> torch.Tensor:
    axis = axis_of(node.get("axis", 1), x[0].dim())
    return x[0].reshape(math.prod(x[0].shape[:axis]), math.prod(x[0].shape[axis:]))


@op("Transpose")
def _transpose(node: Node, x: list) -> torch.Tensor:
    perm = node.get("perm") or list(reversed(range(x[0].dim())))
    return x[0].permute(*perm)


@op("Squeeze")
def _squeeze(node: Node, x: list) -> torch.Tensor:
    axes = attr_or_input(node, x, "axes", 1)
    if axes is None:
        return x[0].squeeze()
    value = x[0]
    for axis in sorted((axis_of(a, value.dim()) for a in axes), reverse=True):
        value = value.squeeze(axis)
    return value


@op("Unsqueeze")
def _unsqueeze(node: Node, x: list) -> torch.Tensor:
    axes = attr_or_input(node, x, "axes", 1)
    rank = x[0].dim() + len(axes)
    value = x[0]
    for axis in sorted(axis_of(a, rank) for a in axes):
        value = value.unsqueeze(axis)
    return value


@op("Expand")
def _expand(node: Node, x: list) -> torch.Tensor:
    shape = torch.broadcast_shapes(tuple(x[0].shape), tuple(ints(x[1])))
    return x[0].expand(shape)


@op("Tile")
def _tile(node: Node, x: list) -> torch.Tensor:
    return x[0].repeat(*ints(x[1]))


@op("Pad")
def _pad(node: Node, x: list) -> torch.Tensor:
    value = x[0]
    mode = node.get("mode", "constant")
    pads, fill = ints(x[1]), scalar(arg(x, 2)) or 0
    rank = value.dim()
    axes = ints(arg(x, 3))
    if axes is not None:  # opset 18: pads only for the listed axes
        full = [0] * (2 * rank)
        for i, axis in enumerate(axes):
            axis = axis_of(axis, rank)
            full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
        pads = full
    order = []
    for axis in reversed(range(rank)):
        order += [pads[axis], pads[axis + rank]]
    while len(order) > 2 and order[-1] == 0 and order[-2] == 0:
        order = order[:-2]  # torch pads the trailing axes only: drop untouched leading axes
    if mode == "constant":
        return F.pad(value, order, value=fill)
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    padded_axes = len(order) // 2
    if torch_mode is None or padded_axes > 3 or value.dim() < padded_axes + 1:
        raise UnsupportedOp(f"Pad mode '{mode}' on {padded_axes} axes")
    if value.dim() == padded_axes + 1 or value.dim() == padded_axes + 2:
        return F.pad(value, order, mode=torch_mode)
    lead = value.shape[: value.dim() - padded_axes - 1]
    flat = value.reshape(-1, *value.shape[value.dim() - padded_axes - 1:])
    out = F.pad(flat, order, mode=torch_mode)
    return out.reshape(*lead, *out.shape[1:])


def _indices(index: torch.Tensor, size: int) -> torch.Tensor:
    index = index.to(torch.int64)
    return torch.where(index < 0, index + size, index)


@op("Gather")
def _gather(node: Node, x: list) -> torch.Tensor:
    value, index = x
    axis = axis_of(node.get("axis", 0), value.dim())
    index = _indices(index, value.shape[axis])
    picked = value.index_select(axis, index.reshape(-1))
    return picked.reshape((*value.shape[:axis], *index.shape, *value.shape[axis + 1:]))


@op("GatherElements")
def _gather_elements(node: Node, x: list) -> torch.Tensor:
    axis = axis_of(node.get("axis", 0), x[0].dim())
    return torch.gather(x[0], axis, _indices(x[1], x[0].shape[axis]))


@op("GatherND")
def _gather_nd(node: Node, x: list) -> torch.Tensor:
    value, index = x
    batch = node.get("batch_dims", 0)
    if batch:
        raise UnsupportedOp("GatherND with batch_dims")
    depth = index.shape[-1]
    index = index.to(torch.int64)
    index = torch.where(index < 0, index + _long(list(value.shape[:depth]), value.device), index)
    flat = index.reshape(-1, depth)
    picked = value[tuple(flat[:, i] for i in range(depth))]
    return picked.reshape((*index.shape[:-1], *value.shape[depth:]))


@op("ScatterND")
def _scatter_nd(node: Node, x: list) -> torch.Tensor:
    if node.get("reduction", "none") != "none":
        raise UnsupportedOp("ScatterND with a reduction")
    value, index, updates = x
    depth = index.shape[-1]
    flat = index.to(torch.int64).reshape(-1, depth)
    out = value.clone()
    out[tuple(flat[:, i] for i in range(depth))] = updates.reshape(flat.shape[0], *value.shape[depth:])
    return out


@op("NonZero")
def _nonzero(node: Node, x: list) -> torch.Tensor:
    return torch.nonzero(x[0]).transpose(0, 1).to(torch.int64)


@op("Trilu")
def _trilu(node: Node, x: list) -> torch.Tensor:
    k = int(scalar(arg(x, 1)) or 0)
    return torch.triu(x[0], k) if node.get("upper", 1) else torch.tril(x[0], k)


@op("DepthToSpace")
def _depth_to_space(node: Node, x: list) -> torch.Tensor:
    b = node.attrs["blocksize"]
    n, c, h, w = x[0].shape
    if node.get("mode", "DCR") == "DCR":
        out = x[0].reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        out = x[0].reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return out.reshape(n, c // (b * b), h * b, w * b)


@op("SpaceToDepth")
def _space_to_depth(node: Node, x: list) -> torch.Tensor:
    b = node.attrs["blocksize"]
    n, c, h, w = x[0].shape
    out = x[0].reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return out.reshape(n, c * b * b, h // b, w // b)


@op("OneHot")
def _one_hot(node: Node, x: list) -> torch.Tensor:
    index, depth, values = x
    depth = int(scalar(depth))
    index = _indices(index, depth)
    hot = F.one_hot(index.clamp(0, depth - 1), depth).to(torch.bool) & ((index >= 0) & (index < depth))[..., None]
    out = torch.where(hot, values[1], values[0])
    axis = node.get("axis", -1)
    return out if axis == -1 else out.movedim(-1, axis_of(axis, out.dim()))
