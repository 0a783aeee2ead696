"""Numeric comparison of the original (reference) and pruned model outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Polygraphy replaces zeros of the reference by float64 epsilon before dividing, so
# max_rel stays finite (if huge) where the reference is exactly zero.
_EPSILON = float(np.finfo(np.float64).eps)


@dataclass
class OutputDiff:
    """How one output of the pruned model differs from the reference.

    `ok` is False when the outputs cannot be compared element by element (missing
    output, shape mismatch) or disagree in kind (dtype, NaN/Inf placement); `reason`
    says which. It is not a tolerance verdict: callers judge the numbers.
    Numeric fields cover elements that are finite in both; they are None when not computed.
    """

    name: str
    shape: tuple[int, ...] | None
    ok: bool = True
    reason: str | None = None
    got_shape: tuple[int, ...] | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    rel_to_max: float | None = None
    cosine: float | None = None
    ref_nan: int = 0
    ref_inf: int = 0
    got_nan: int = 0
    got_inf: int = 0
    top1_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("shape", "got_shape"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data


def compare_outputs(ref: Mapping[str, Any], got: Mapping[str, Any]) -> list[OutputDiff]:
    """One diff per output, reference outputs first, then outputs only the pruned model has."""
    diffs = []
    for name, ref_value in ref.items():
        if name not in got:
            ref_array = np.asarray(ref_value)
            diffs.append(
                OutputDiff(
                    name,
                    ref_array.shape,
                    ok=False,
                    reason="missing from the pruned model's outputs",
                )
            )
            continue
        diffs.append(_compare_one(name, np.asarray(ref_value), np.asarray(got[name])))
    for name, got_value in got.items():
        if name not in ref:
            got_array = np.asarray(got_value)
            diffs.append(
                OutputDiff(
                    name,
                    None,
                    ok=False,
                    reason="not an output of the reference model",
                    got_shape=got_array.shape,
                )
            )
    return diffs


def _compare_one(name: str, ref: np.ndarray, got: np.ndarray) -> OutputDiff:
    diff = OutputDiff(name, ref.shape, got_shape=got.shape)
    if ref.shape != got.shape:
        diff.ok = False
        diff.reason = (
            f"shape {_fmt(got.shape)} differs from the reference {_fmt(ref.shape)}"
        )
        return diff
    if ref.dtype.kind in "OSU" or got.dtype.kind in "OSU":
        diff.ok = bool(np.array_equal(ref, got))
        diff.reason = None if diff.ok else f"non-numeric values ({ref.dtype}) differ"
        return diff
    a = ref.astype(np.float64)
    b = got.astype(np.float64)

    diff.ref_nan, diff.ref_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    diff.got_nan, diff.got_inf = int(np.isnan(b).sum()), int(np.isinf(b).sum())
    finite = np.isfinite(a) & np.isfinite(b)
    # NaN where both are NaN, or the same infinity in both, is agreement, not error.
    same_nonfinite = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    mismatched = int(a.size - finite.sum() - same_nonfinite.sum())

    a_fin, b_fin = a[finite], b[finite]
    absdiff = np.abs(a_fin - b_fin)
    diff.max_abs = float(absdiff.max()) if absdiff.size else 0.0
    diff.mean_abs = float(absdiff.mean()) if absdiff.size else 0.0
    denom = np.abs(a_fin)
    diff.max_rel = (
        float((absdiff / np.where(denom == 0, _EPSILON, denom)).max())
        if absdiff.size
        else 0.0
    )
    ref_scale = float(np.abs(a_fin).max()) if a_fin.size else 0.0
    if ref_scale > 0:
        diff.rel_to_max = diff.max_abs / ref_scale
    else:
        diff.rel_to_max = 0.0 if diff.max_abs == 0 else float("inf")
    diff.cosine = _cosine(a_fin, b_fin)
    diff.top1_agreement = _top1_agreement(a, b)

    if ref.dtype != got.dtype:
        diff.ok = False
        diff.reason = f"dtype {got.dtype} differs from the reference {ref.dtype}"
    elif mismatched:
        diff.ok = False
        diff.reason = f"NaN/Inf in only one model (or different) at {mismatched} of {a.size} elements"
    return diff


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0 and norm_b == 0:
        return 1.0
    if norm_a == 0 or norm_b == 0:
        return 0.0
    # Clip: rounding can push identical vectors a hair above 1.
    return float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))


def _top1_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Fraction of rows whose argmax class matches, for [batch, classes] outputs."""
    if a.ndim != 2 or a.shape[1] < 2 or a.shape[0] == 0:
        return None
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def summarize(diffs: Sequence[OutputDiff]) -> dict[str, Any]:
    """Worst figures over all outputs; None where no output had the figure computed."""
    measured = [d for d in diffs if d.rel_to_max is not None]
    worst = max(measured, key=lambda d: d.rel_to_max, default=None)
    cosines = [d.cosine for d in measured if d.cosine is not None]
    top1 = [d.top1_agreement for d in measured if d.top1_agreement is not None]
    return {
        "outputs": len(diffs),
        "ok": all(d.ok for d in diffs),
        "failed": [{"name": d.name, "reason": d.reason} for d in diffs if not d.ok],
        "worst_output": worst.name if worst else None,
        "worst_rel_to_max": worst.rel_to_max if worst else None,
        "max_abs": max((d.max_abs for d in measured), default=None),
        "min_cosine": min(cosines, default=None),
        "min_top1_agreement": min(top1, default=None),
    }
