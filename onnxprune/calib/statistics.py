"""Per-channel statistics of intermediate tensors over calibration data, accumulated in float64
without keeping activations: sums, sums of squares and (on request) X^T X Gram matrices with a
constant column appended, so that a least-squares refit can solve for a bias too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..io.model import Model
from ..report import progress
from .capture import capture
from .data import CalibrationData

# Tensors captured per ONNX Runtime pass: bounds the activations held at once on big models.
TENSORS_PER_PASS = 8


@dataclass
class ChannelStats:
    rows: int
    total: np.ndarray  # [C] sum over rows
    squares: np.ndarray  # [C] sum of squares over rows
    gram: np.ndarray | None = None  # [C + 1, C + 1]: X^T X of [X, 1]

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.rows, 1)

    @property
    def variance(self) -> np.ndarray:
        return np.maximum(self.squares / max(self.rows, 1) - self.mean**2, 0.0)

    @property
    def norm(self) -> np.ndarray:
        """L2 norm of each channel over all rows (Wanda's ||X_j||)."""
        return np.sqrt(self.squares)


def _rows(array: np.ndarray, axis: int) -> np.ndarray:
    """The tensor as [positions, channels] in float64."""
    return np.moveaxis(np.asarray(array, dtype=np.float64), axis, -1).reshape(-1, array.shape[axis])


def _accumulate(stats: dict[str, ChannelStats], name: str, rows: np.ndarray, gram: bool) -> None:
    entry = stats.get(name)
    if entry is None:
        channels = rows.shape[1]
        entry = stats[name] = ChannelStats(0, np.zeros(channels), np.zeros(channels),
                                           np.zeros((channels + 1, channels + 1)) if gram else None)
    entry.rows += rows.shape[0]
    entry.total += rows.sum(axis=0)
    entry.squares += np.einsum("ij,ij->j", rows, rows)
    if entry.gram is not None:
        augmented = np.concatenate([rows, np.ones((rows.shape[0], 1))], axis=1)
        entry.gram += augmented.T @ augmented


def collect_stats(
    model: Model,
    requests: dict[str, int],
    calibration: CalibrationData,
    gram: set[str] = frozenset(),
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, ChannelStats]:
    """Statistics of each requested tensor along its channel axis (requests: tensor -> axis)."""
    names = sorted(requests)
    stats: dict[str, ChannelStats] = {}
    groups = [names[i:i + TENSORS_PER_PASS] for i in range(0, len(names), TENSORS_PER_PASS)]
    with progress.bar(log, "calibration", total=len(groups) * len(calibration), unit="batch") as bar:
        for group in groups:
            for values in capture(model, group, calibration):
                for name in group:
                    _accumulate(stats, name, _rows(values[name], requests[name]), name in gram)
                bar.update()
    return stats
