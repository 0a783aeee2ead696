"""Wanda (Sun et al. 2023), structured: an input channel matters by |W| times the norm of its activation."""

from __future__ import annotations

import numpy as np


def score(matrix: np.ndarray, stats, pair, space) -> np.ndarray:
    return np.abs(matrix).sum(axis=1) * stats.norm
