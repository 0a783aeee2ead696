"""Contribution norm: the energy of each channel block's share of the layer output, ||X_B W_B||^2 =
trace(W_B^T H_BB W_B). For a head space the block is the head, read at the output projection."""

from __future__ import annotations

import numpy as np


def score(matrix: np.ndarray, stats, pair, space) -> np.ndarray:
    gram = stats.gram[:-1, :-1]
    block, start = pair.x_member.block, pair.x_member.offset
    values = np.zeros(len(gram))
    for channel in range(space.size):
        rows = slice(start + channel * block, start + (channel + 1) * block)
        values[rows.start] = float(np.einsum("ij,ik,kj->", matrix[rows], gram[rows, rows], matrix[rows]))
    return values
