"""Per-channel statistics of intermediate tensors over calibration data, accumulated in float64
without keeping activations: sums, sums of squares, peaks (max |x|) and (on request) X^T X Gram
matrices with a constant column appended, so that a least-squares refit can solve for a bias too.

Tensors are captured block by block (stages.py): one sweep through the model for any number of
tensors, and a pass that changes weights between requests reruns only the blocks it changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..io.model import Model
from .data import CalibrationData
from .stages import runner_for


@dataclass
class ChannelStats:
    rows: int
    total: np.ndarray  # [C] sum over rows
    squares: np.ndarray  # [C] sum of squares over rows
    gram: np.ndarray | None = None  # [C + 1, C + 1]: X^T X of [X, 1]
    peak: np.ndarray | None = None  # [C] max |x| over rows: massive activations show here, not in norms

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
                                           np.zeros((channels + 1, channels + 1)) if gram else None,
                                           np.zeros(channels))
    entry.rows += rows.shape[0]
    if rows.shape[0]:
        entry.peak = np.maximum(entry.peak, np.abs(rows).max(axis=0))
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
    stats: dict[str, ChannelStats] = {}
    for _, values in runner_for(model, calibration, log).capture(requests, label="calibration"):
        for name, value in values.items():
            _accumulate(stats, name, _rows(value, requests[name]), name in gram)
    return stats
