"""FLAP (An et al. 2024): the fluctuation a channel brings to the output, Var(X_c) * ||W_c||^2.
A channel that barely varies is replaced by its mean, which compensation moves into the bias."""

from __future__ import annotations

import numpy as np


def score(matrix: np.ndarray, stats, pair, space) -> np.ndarray:
    return np.square(matrix).sum(axis=1) * stats.variance
