"""The distillation loss: how far the pruned model's tensors are from the dense model's, judged so
that no output's scale can drown another's.

Each compared tensor is cut into channels the way onnxprune's fidelity figures cut outputs
(check/fidelity.py): a detector head `[1, 84, anchors]` by its 84 rows, `[N, C, H, W]` maps by C,
`[batch, tokens, hidden]` by the hidden features, and probability rows (a recognizer's softmax over
classes) row by row. A channel's squared error is divided by that channel's mean square in the
dense model over the calibration data, so box coordinates in pixels and class scores in 0..1 weigh
the same. A channel that is (nearly) silent in the dense model is divided by a floor instead (a
tenth of the median channel's RMS): its tiny values would otherwise turn noise into huge weights.
Probability rows are compared by the KL divergence of the dense model's distribution to the pruned
one's, which is scale-free already.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Probability rows: every value in [0, 1] and every row summing to 1 within this.
_SUM_TOLERANCE = 1e-3
_SILENT = 0.1  # of the median channel's RMS: the smallest scale a channel is divided by
_PROBABILITY_FLOOR = 1e-8  # log() of a pruned model's exact zero


def _probability_rows(values: np.ndarray) -> bool:
    if values.ndim < 2 or values.shape[-1] < 2 or not np.isfinite(values).all():
        return False
    if values.min() < 0 or values.max() > 1 + _SUM_TOLERANCE:
        return False
    return bool(np.abs(values.sum(axis=-1, dtype=np.float64) - 1).max() <= _SUM_TOLERANCE)


def _spread(values: np.ndarray, axis: int) -> float:
    rms = np.sqrt(np.mean(np.square(np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)), axis=1))
    rms = rms[np.isfinite(rms) & (rms > 0)]
    return float(rms.max() / rms.min()) if rms.size else 1.0


def channel_axis(values: np.ndarray) -> int | None:
    """The axis that separates features (None: judge the tensor whole), as check/fidelity.py's layout."""
    rank = values.ndim
    if rank <= 1:
        return None
    if rank == 2:
        return 1
    if rank == 3:
        rows, columns = values.shape[1], values.shape[2]
        if (1 < rows < columns and _spread(values, 1) > _spread(values, 2)) or columns == 1:
            return 1 if rows > 1 else None  # a detector head [1, 84, anchors]
        return 2
    return 1 if values.shape[1] > 1 else None


@dataclass
class TensorLoss:
    """The loss of one tensor: `kind` "kl" (probability rows) or "mse" (per-channel normalized)."""

    name: str
    kind: str
    axis: int | None = None
    inverse_scale: torch.Tensor | None = None  # 1 / mean square per channel, along `axis`

    def __call__(self, got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
        if self.kind == "kl":
            want = want.clamp_min(0)
            log_ratio = torch.log(want.clamp_min(_PROBABILITY_FLOOR)) - torch.log(got.clamp_min(_PROBABILITY_FLOOR))
            return (want * log_ratio).sum(dim=-1).mean()
        square = (got - want) ** 2
        if self.axis is None:
            return square.mean() * self.inverse_scale
        dims = [d for d in range(square.dim()) if d != self.axis]
        per_channel = square.mean(dim=dims) if dims else square
        return (per_channel * self.inverse_scale).mean()

    def to(self, device: torch.device) -> TensorLoss:
        if self.inverse_scale is not None:
            self.inverse_scale = self.inverse_scale.to(device)
        return self


class ScaleStats:
    """Running statistics of one tensor over the calibration data, from which its loss is built
    (intermediate maps are too big to keep for every sample)."""

    def __init__(self, name: str):
        self.name = name
        self.usable = True
        self.probabilities = True
        self.axis: int | None = None
        self.size: int | None = None
        self.sums: np.ndarray | None = None
        self.count = 0

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values)
        if not self.usable or values.dtype.kind != "f":
            self.usable = False
            return
        self.probabilities = self.probabilities and _probability_rows(values)
        values = np.nan_to_num(values.astype(np.float64), posinf=0.0, neginf=0.0)
        if self.sums is None:
            self.axis = channel_axis(values)
            self.size = values.shape[self.axis] if self.axis is not None else 1
            self.sums = np.zeros(self.size)
        if self.axis is not None and (values.ndim <= self.axis or values.shape[self.axis] != self.size):
            self.axis, self.sums = None, np.array([self.sums.sum()])  # the channel count changed: judge whole
            self.size = 1
        if self.axis is None:
            self.sums += np.square(values).sum()
            self.count += values.size
        else:
            channels = np.moveaxis(values, self.axis, 0).reshape(self.size, -1)
            self.sums += np.square(channels).sum(axis=1)
            self.count += channels.shape[1]

    def loss(self) -> TensorLoss | None:
        """None when the tensor is not float (ids and masks cannot be trained towards) or never seen."""
        if not self.usable or self.sums is None:
            return None
        if self.probabilities:
            return TensorLoss(self.name, "kl")
        mean_square = self.sums / max(self.count, 1)
        if self.axis is None:
            return TensorLoss(self.name, "mse", None, torch.tensor(1.0 / max(float(mean_square[0]), 1e-20)))
        floor = max((_SILENT ** 2) * float(np.median(mean_square)), 1e-12 * float(mean_square.max()), 1e-20)
        inverse = 1.0 / np.maximum(mean_square, floor)
        return TensorLoss(self.name, "mse", self.axis, torch.tensor(inverse, dtype=torch.float32))
