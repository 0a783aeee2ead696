"""Numeric comparison of the original (reference) and pruned model outputs.

This is the comparator side (how to judge numbers), kept apart from the runners that produce the
outputs (`validate.py`) and from the pass/fail gates (`gates.py`), as Polygraphy keeps its runners
apart from its compare functions. `OutputAccumulator` streams batches and keeps only running sums,
so statistics cover every batch without holding the outputs in memory.
"""

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
    acc = OutputAccumulator(name)
    acc.add(ref, got)
    stats = acc.result()
    diff = OutputDiff(name, ref.shape, got_shape=got.shape)
    diff.ok = stats.failure is None and stats.nonfinite_mismatch == 0
    diff.reason = stats.failure
    if stats.failure is None and stats.nonfinite_mismatch:
        diff.reason = f"NaN/Inf in only one model (or different) at {stats.nonfinite_mismatch} of {ref.size} elements"
    for field in ("max_abs", "mean_abs", "max_rel", "rel_to_max", "cosine", "ref_nan", "ref_inf", "got_nan",
                  "got_inf", "top1_agreement"):
        setattr(diff, field, getattr(stats, field))
    return diff


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


@dataclass
class OutputStats:
    """Error statistics of one output over every batch fed to `OutputAccumulator`.

    Error figures follow Polygraphy: abs = |ref - got|, rel = abs / |ref| with zeros of the
    reference replaced by float64 epsilon. They cover the elements finite in both models; NaN/Inf
    where the reference has the same value is agreement, anywhere else it is counted in
    `nonfinite_mismatch`. Means are over all compared elements of all batches, maxima over all
    batches, and the cosine is that of the concatenated outputs (not a mean of per-batch cosines).
    `failure` is set when the outputs cannot be compared (shape, dtype, non-numeric values differ).
    """

    name: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    batches: int = 0
    elements: int = 0
    compared: int = 0
    failure: str | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    mean_rel: float | None = None
    rel_to_max: float | None = None
    cosine: float | None = None
    ref_nan: int = 0
    ref_inf: int = 0
    got_nan: int = 0
    got_inf: int = 0
    nonfinite_mismatch: int = 0
    atol: float | None = None
    rtol: float | None = None
    elem_violations: int | None = None
    classifier: bool = False
    rows: int = 0
    top1_agreement: float | None = None
    top_k: int | None = None
    topk_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["shape"] is not None:
            data["shape"] = list(data["shape"])
        return data


class OutputAccumulator:
    """Running statistics of one output, fed batch by batch with `add(ref, got)`.

    `atol`/`rtol` enable Polygraphy's elementwise check (`--check-error-stat elemwise`): an element
    violates it only when it exceeds BOTH tolerances (abs > atol and rel > rtol).
    `classifier`: None detects classifier-like outputs (floating point, rank 2 [batch, classes],
    at least 2 classes); True treats the last axis as classes whatever the rank; False never.
    Top-1 agreement: the argmax of both models is the same class. Top-k agreement: the reference's
    top-1 class is among the pruned model's k highest scores (ties count in its favour).
    """

    def __init__(self, name: str, *, atol: float | None = None, rtol: float | None = None,
                 classifier: bool | None = None, top_k: int = 5) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.stats = OutputStats(name, atol=atol, rtol=rtol)
        self._classifier = classifier
        self._top_k = top_k
        self._check = atol is not None and rtol is not None
        self._sum_abs = self._sum_rel = self._dot = self._ref_sq = self._got_sq = 0.0
        self._ref_absmax = 0.0
        self._top1_hits = self._topk_hits = 0
        self._numeric = False
        self._incomparable = False

    def add(self, ref: Any, got: Any) -> None:
        ref, got = np.asarray(ref), np.asarray(got)
        stats = self.stats
        if stats.batches == 0:
            stats.dtype, stats.shape = str(ref.dtype), tuple(ref.shape)
        stats.batches += 1
        stats.elements += int(ref.size)
        if stats.failure is not None:
            return
        if ref.shape != got.shape:
            stats.failure = f"shape {_fmt(got.shape)} differs from the reference {_fmt(ref.shape)}"
            self._incomparable = True
            return
        if ref.dtype.kind in "OSU" or got.dtype.kind in "OSU":
            if not np.array_equal(ref, got):
                stats.failure = f"non-numeric values ({ref.dtype}) differ"
                self._incomparable = True
            return
        if ref.dtype != got.dtype:
            # Still measured: the figures say how far apart the values are.
            stats.failure = f"dtype {got.dtype} differs from the reference {ref.dtype}"
        self._numeric = True
        self._add_numeric(ref, got)

    def _add_numeric(self, ref: np.ndarray, got: np.ndarray) -> None:
        stats = self.stats
        a, b = ref.astype(np.float64), got.astype(np.float64)
        a_nan, b_nan, a_inf, b_inf = np.isnan(a), np.isnan(b), np.isinf(a), np.isinf(b)
        stats.ref_nan += int(a_nan.sum())
        stats.ref_inf += int(a_inf.sum())
        stats.got_nan += int(b_nan.sum())
        stats.got_inf += int(b_inf.sum())
        finite = ~(a_nan | a_inf | b_nan | b_inf)
        # NaN where both are NaN, or the same infinity in both, is agreement, not error.
        same_nonfinite = (a_nan & b_nan) | (a_inf & (a == b))
        stats.nonfinite_mismatch += int(a.size - finite.sum() - same_nonfinite.sum())

        a_fin, b_fin = a[finite], b[finite]
        absdiff = np.abs(a_fin - b_fin)
        ref_abs = np.abs(a_fin)
        reldiff = absdiff / np.where(ref_abs == 0, _EPSILON, ref_abs)
        if absdiff.size:
            stats.max_abs = max(stats.max_abs or 0.0, float(absdiff.max()))
            stats.max_rel = max(stats.max_rel or 0.0, float(reldiff.max()))
            self._ref_absmax = max(self._ref_absmax, float(ref_abs.max()))
        stats.compared += int(absdiff.size)
        self._sum_abs += float(absdiff.sum())
        self._sum_rel += float(reldiff.sum())
        self._dot += float(np.dot(a_fin, b_fin))
        self._ref_sq += float(np.dot(a_fin, a_fin))
        self._got_sq += float(np.dot(b_fin, b_fin))
        if self._check:
            violations = (absdiff > self.stats.atol) & (reldiff > self.stats.rtol)
            stats.elem_violations = (stats.elem_violations or 0) + int(violations.sum())
        self._add_classes(ref, a, b)

    def _add_classes(self, ref: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        if self._classifier is None:
            is_float = np.issubdtype(ref.dtype, np.floating) or ref.dtype.kind == "V"  # ml_dtypes bfloat16...
            classifier = is_float and a.ndim == 2 and a.shape[1] >= 2
        else:
            classifier = self._classifier and a.ndim >= 1 and a.shape[-1] >= 1
        if not classifier:
            return
        self.stats.classifier = True
        classes = a.shape[-1]
        a_rows, b_rows = a.reshape(-1, classes), b.reshape(-1, classes)
        if a_rows.shape[0] == 0:
            return
        ref_top = np.argmax(a_rows, axis=1)
        self._top1_hits += int((ref_top == np.argmax(b_rows, axis=1)).sum())
        k = min(self._top_k, classes)
        self.stats.top_k = k
        # Rank of the reference's class among the pruned scores: in the top k when fewer than k beat it.
        score = b_rows[np.arange(len(b_rows)), ref_top][:, None]
        self._topk_hits += int(((b_rows > score).sum(axis=1) < k).sum())
        self.stats.rows += int(a_rows.shape[0])

    def result(self) -> OutputStats:
        """The statistics so far (figures stay None when nothing numeric was compared)."""
        stats = self.stats
        if not self._numeric or self._incomparable:
            # Figures of the batches before a shape change would read as a verdict on the whole.
            for field in ("max_abs", "max_rel", "elem_violations"):
                setattr(stats, field, None)
            return stats
        count = stats.compared
        stats.max_abs = stats.max_abs or 0.0
        stats.max_rel = stats.max_rel or 0.0
        stats.mean_abs = self._sum_abs / count if count else 0.0
        stats.mean_rel = self._sum_rel / count if count else 0.0
        if self._ref_absmax > 0:
            stats.rel_to_max = stats.max_abs / self._ref_absmax
        else:
            stats.rel_to_max = 0.0 if stats.max_abs == 0 else float("inf")
        stats.cosine = _cosine_from_sums(self._dot, self._ref_sq, self._got_sq)
        if self._check and stats.elem_violations is None:
            stats.elem_violations = 0
        if stats.rows:
            stats.top1_agreement = self._top1_hits / stats.rows
            stats.topk_agreement = self._topk_hits / stats.rows
        return stats


def _cosine_from_sums(dot: float, ref_sq: float, got_sq: float) -> float:
    if ref_sq == 0 and got_sq == 0:
        return 1.0
    if ref_sq == 0 or got_sq == 0:
        return 0.0
    # Clip: rounding can push identical vectors a hair above 1.
    return float(np.clip(dot / (np.sqrt(ref_sq) * np.sqrt(got_sq)), -1.0, 1.0))
