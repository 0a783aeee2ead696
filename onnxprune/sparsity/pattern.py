"""Sparsity patterns: N:M (at most N non-zeros in every M consecutive weights along one axis, the
NVIDIA convention: 2:4 keeps 2 of 4) and unstructured (a fraction of zeros anywhere).

Everything here works on a weight laid out as [rows, K] with the sparse axis last (`to_rows` /
`from_rows` convert): groups are M consecutive columns of a row."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from onnxprune.errors import InvalidOptionError


@dataclass(frozen=True)
class Pattern:
    keep: int = 2  # N: non-zeros allowed per group
    group: int = 4  # M: group size along the sparse axis
    ratio: float | None = None  # unstructured: fraction of zeros; keep/group unused

    @property
    def structured(self) -> bool:
        return self.ratio is None

    def __str__(self) -> str:
        return f"{self.keep}:{self.group}" if self.structured else f"{self.ratio:g}"

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """'2:4', '4:8' (N:M) or '0.5' (unstructured fraction of zeros)."""
        text = str(text).strip()
        match = re.fullmatch(r"(\d+):(\d+)", text)
        if match:
            keep, group = int(match[1]), int(match[2])
            if not 0 < keep < group:
                raise InvalidOptionError(f"--sparse {text}: N:M needs 0 < N < M (2:4 keeps 2 of every 4)")
            return cls(keep, group)
        try:
            ratio = float(text)
        except ValueError:
            raise InvalidOptionError(f"--sparse '{text}' is neither N:M (2:4) nor a fraction of zeros (0.5)") from None
        if not 0.0 < ratio < 1.0:
            raise InvalidOptionError(f"--sparse {text}: a fraction of zeros must be in (0, 1)")
        return cls(ratio=ratio)


def to_rows(weight: np.ndarray, axis: int) -> np.ndarray:
    """[..., K at `axis`, ...] -> [rows, K]: every 1-D line along `axis` becomes a row."""
    moved = np.moveaxis(weight, axis, -1)
    return moved.reshape(-1, weight.shape[axis])


def from_rows(rows: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    moved_shape = tuple(s for i, s in enumerate(shape) if i != axis) + (shape[axis],)
    return np.moveaxis(rows.reshape(moved_shape), -1, axis)


def nm_mask(scores: np.ndarray, keep: int, group: int) -> np.ndarray:
    """True where a weight is kept: the `keep` highest scores of every `group` consecutive columns.

    Ties go to the lower index (stable sort), so equal scores give the same mask on every machine."""
    rows, width = scores.shape
    assert width % group == 0, "eligibility guarantees K % M == 0"
    grouped = scores.reshape(rows, width // group, group)
    # argsort of the negated scores, stable: highest first, earlier index first among equals.
    order = np.argsort(-grouped, axis=-1, kind="stable")
    mask = np.zeros(grouped.shape, dtype=bool)
    np.put_along_axis(mask, order[..., :keep], True, axis=-1)
    return mask.reshape(rows, width)


def unstructured_mask(scores: np.ndarray, ratio: float) -> np.ndarray:
    """True where kept: all but the round(ratio * size) lowest scores (stable among ties)."""
    flat = scores.reshape(-1)
    drop = round(ratio * flat.size)
    mask = np.ones(flat.size, dtype=bool)
    if drop:
        mask[np.argsort(flat, kind="stable")[:drop]] = False
    return mask.reshape(scores.shape)


def satisfies(rows: np.ndarray, keep: int, group: int) -> bool:
    """At most `keep` non-zeros in every group (-0.0 counts as zero, as it does for TensorRT)."""
    width = rows.shape[1]
    if width % group:
        return False
    nonzero = (rows != 0).reshape(rows.shape[0], width // group, group).sum(axis=-1)
    return bool((nonzero <= keep).all())


def violations(rows: np.ndarray, keep: int, group: int) -> int:
    """Groups with more than `keep` non-zeros (0 when the pattern holds)."""
    width = rows.shape[1]
    nonzero = (rows != 0).reshape(rows.shape[0], width // group, group).sum(axis=-1)
    return int((nonzero > keep).sum())
