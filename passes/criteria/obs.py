"""Optimal Brain Surgeon, per input channel: the output error of removing channel c alone, with the
rest refit, is ||W_c||^2 / [H^-1]_cc where H = X^T X (damped by 1% of its mean diagonal, as in
SparseGPT)."""

from __future__ import annotations

import numpy as np

DAMPING = 0.01


def score(matrix: np.ndarray, stats, pair, space) -> np.ndarray:
    gram = stats.gram[:-1, :-1]
    damped = gram + DAMPING * np.mean(np.diag(gram)) * np.eye(len(gram))
    return np.square(matrix).sum(axis=1) / np.diag(np.linalg.inv(damped))
