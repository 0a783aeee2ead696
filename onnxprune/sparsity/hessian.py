"""X^T X of the inputs that the weights being sparsified multiply (SparseGPT's Hessian, up to a scale),
and the per-feature L2 norms Wanda needs, from calibration data streamed through ONNX Runtime.

Rows of X, in the column order of the weight's rows layout [R, K]:
- MatMul / Gemm: the activation with the contracted `axis` moved last, flattened to [positions, K];
- Conv (group 1): im2col patches ordered (kernel position..., channel), so that K lines up with
  `conv_rows(W)` = W moved to [O, kh, kw, C] and flattened, where M consecutive columns are M consecutive
  input channels at one kernel position (TensorRT's sparse axis for convolutions).

Activations are never kept: each batch is folded into float64 sums and dropped; tensors are captured
block by block (calib/stages.py), so a layer's statistics after its predecessors changed cost only
the blocks that changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from ..calib.data import CalibrationData
from ..errors import UnsupportedModelError
from ..io.model import Model

# im2col rows folded at once: bounds the memory of big convolutions (rows x C*kh*kw float64).
ROWS_PER_CHUNK = 1 << 16


@dataclass(frozen=True)
class ConvGeometry:
    """What im2col needs of a Conv (ONNX attribute conventions: pads = begins then ends)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    auto_pad: str = "NOTSET"

    @classmethod
    def from_node(cls, node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> ConvGeometry:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel = tuple(int(k) for k in attrs.get("kernel_shape", weight_shape[2:]))
        spatial = len(kernel)
        if int(attrs.get("group", 1)) != 1:
            raise UnsupportedModelError(f"Conv '{node.name}': im2col statistics need group=1")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        return cls(kernel,
                   tuple(int(s) for s in attrs.get("strides", [1] * spatial)),
                   tuple(int(p) for p in attrs.get("pads", [0] * 2 * spatial)),
                   tuple(int(d) for d in attrs.get("dilations", [1] * spatial)),
                   auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad))

    def resolved_pads(self, spatial_size: tuple[int, ...]) -> tuple[int, ...]:
        """Explicit pads (begins then ends) for an input of this spatial size, auto_pad applied."""
        if self.auto_pad in ("", "NOTSET"):
            return self.pads
        if self.auto_pad == "VALID":
            return (0,) * (2 * len(self.kernel))
        begins, ends = [], []
        for size, k, s, d in zip(spatial_size, self.kernel, self.strides, self.dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if self.auto_pad == "SAME_UPPER" else large)
            ends.append(large if self.auto_pad == "SAME_UPPER" else small)
        return tuple(begins + ends)


@dataclass(frozen=True)
class GramRequest:
    tensor: str  # the activation the weight multiplies
    axis: int  # its axis contracted with the weight's sparse axis (Conv: the channel axis, 1)
    conv: ConvGeometry | None = None


def conv_rows(weight: np.ndarray) -> np.ndarray:
    """Conv weight [O, C, *kernel] -> rows [O, prod(kernel) * C] in (kernel..., C) column order."""
    return np.moveaxis(weight, 1, -1).reshape(weight.shape[0], -1)


def conv_unrows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `conv_rows` for a weight of `shape` [O, C, *kernel]."""
    out, channels, kernel = shape[0], shape[1], tuple(shape[2:])
    return np.moveaxis(rows.reshape((out,) + kernel + (channels,)), -1, 1)


def im2col(activation: np.ndarray, conv: ConvGeometry):
    """Patches of an [N, C, *spatial] activation as a float64 torch tensor [N * positions, prod(kernel) * C],
    columns in `conv_rows` order; 1-D and 2-D convolutions."""
    import torch
    import torch.nn.functional as F

    spatial = len(conv.kernel)
    if spatial not in (1, 2) or activation.ndim != spatial + 2:
        raise UnsupportedModelError(f"im2col handles 1-D and 2-D convolutions, not a {activation.ndim}-D input "
                                    f"with a {spatial}-D kernel")
    x = torch.as_tensor(np.asarray(activation, dtype=np.float64))
    kernel, strides, dilations = conv.kernel, conv.strides, conv.dilations
    pads = conv.resolved_pads(tuple(x.shape[2:]))
    if spatial == 1:  # as 2-D with a height of 1
        x = x.unsqueeze(2)
        kernel, strides, dilations = (1,) + kernel, (1,) + strides, (1,) + dilations
        pads = (0, pads[0], 0, pads[1])
    # F.pad takes the last axis first: (w_begin, w_end, h_begin, h_end); asymmetric pads allowed.
    x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    patches = F.unfold(x, kernel, dilation=dilations, stride=strides)  # [N, C * kh * kw, L], (C, kh, kw)
    batch, channels = x.shape[0], x.shape[1]
    positions = patches.shape[-1]
    patches = patches.reshape(batch, channels, -1, positions).permute(0, 3, 2, 1)  # [N, L, kh * kw, C]
    return patches.reshape(batch * positions, -1)


def _rows(activation: np.ndarray, request: GramRequest):
    import torch

    if request.conv is not None:
        return im2col(activation, request.conv)
    moved = np.moveaxis(np.asarray(activation, dtype=np.float64), request.axis, -1)
    return torch.as_tensor(np.ascontiguousarray(moved.reshape(-1, moved.shape[-1])))


def _collect(model: Model, requests: dict[str, GramRequest], calibration: CalibrationData, gram: bool,
             log: Callable[[str], None], rows_seen: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    import torch

    from ..calib.stages import runner_for

    produced = {out for node in model.graph.node for out in node.output} | set(model.input_names)
    for label, request in requests.items():
        assert request.tensor in produced, f"{label}: no tensor '{request.tensor}' in the graph"
    unique = sorted(set(requests.values()), key=lambda r: (r.tensor, r.axis, repr(r.conv)))
    sums: dict[GramRequest, torch.Tensor] = {}
    counts: dict[GramRequest, int] = {}
    runner = runner_for(model, calibration, log)
    # Block by block (calib/stages.py): values arrive per block and feed, never the whole model's at once.
    for _, values in runner.capture({r.tensor for r in unique}, label="sparsity statistics"):
        for request in unique:
            if request.tensor not in values:
                continue
            rows = _rows(values[request.tensor], request)
            counts[request] = counts.get(request, 0) + rows.shape[0]
            for start in range(0, rows.shape[0], ROWS_PER_CHUNK):
                chunk = rows[start:start + ROWS_PER_CHUNK]
                part = chunk.T @ chunk if gram else (chunk * chunk).sum(dim=0)
                sums[request] = part if request not in sums else sums[request] + part
    result = {}
    for label, request in requests.items():
        total = sums[request].numpy()
        result[label] = total if gram else np.sqrt(total)
        if rows_seen is not None:
            rows_seen[label] = counts[request]
    return result


def collect_grams(
    model: Model,
    requests: dict[str, GramRequest],
    calibration: CalibrationData,
    log: Callable[[str], None] = lambda message: None,
    rows_seen: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """label -> X^T X [K, K] (float64, summed over every calibration row) for each request; `rows_seen`,
    when given, receives label -> how many rows were summed.

    Requests for the same activation (Q, K and V projections of one input) share one computation.
    Wanda's norms are `np.sqrt(np.diag(gram))`; `collect_norms` gets them alone, cheaper."""
    return _collect(model, requests, calibration, True, log, rows_seen)


def collect_norms(
    model: Model,
    requests: dict[str, GramRequest],
    calibration: CalibrationData,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, np.ndarray]:
    """label -> ||X_j||_2 [K] (float64) over every calibration row, the same rows as `collect_grams`."""
    return _collect(model, requests, calibration, False, log)
