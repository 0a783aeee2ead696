"""Numeric comparison of the original (reference) and pruned model outputs.

This is the comparator side (how to judge numbers), kept apart from the runners that produce the
outputs (`validate.py`) and from the pass/fail gates (`gates.py`), as Polygraphy keeps its runners
apart from its compare functions. `OutputAccumulator` streams batches and keeps only running sums,
so statistics cover every batch without holding the outputs in memory. Next to the whole-output
figures it keeps per-channel ones (`fidelity.py`): the worst channel's cosine is what the gates and
the warnings judge, since one cosine over an output that mixes scales is decided by its loudest part.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InvalidOptionError
from .fidelity import FIELDS as CHANNEL_FIELDS
from .fidelity import ChannelFigures, ChannelSums, choose_layout, is_float

# Polygraphy replaces zeros of the reference by float64 epsilon before dividing, so
# max_rel stays finite (if huge) where the reference is exactly zero.
_EPSILON = float(np.finfo(np.float64).eps)
# A rank-2 float output named like these is a vector per sample (a sentence embedding, pooled
# features), not class scores: the argmax of an embedding means nothing, and judging it by top-1
# agreement raised "collapsed" warnings on sentence encoders whose embeddings kept their direction.
EMBEDDING_NAME = re.compile(r"embed|pool|hidden|feature|vector|sentence|encod", re.IGNORECASE)


@dataclass
class OutputDiff(ChannelFigures):
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
        data = _own_fields_first(asdict(self))
        for key in ("shape", "got_shape"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data


def _own_fields_first(data: dict[str, Any]) -> dict[str, Any]:
    """Reports list an output's name and whole-output figures before the inherited channel figures."""
    return {**{k: v for k, v in data.items() if k not in CHANNEL_FIELDS}, **{k: data[k] for k in CHANNEL_FIELDS}}


def compare_outputs(ref: Mapping[str, Any], got: Mapping[str, Any]) -> list[OutputDiff]:
    """One diff per output, reference outputs first, then outputs only the pruned model has."""
    return compare_batches([(ref, got)])


def compare_batches(pairs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]],
                    pooled: Collection[str] = ()) -> list[OutputDiff]:
    """`compare_outputs` over several batches: (reference outputs, pruned outputs) per batch, every
    figure accumulated over all of them (maxima over all, cosines of the concatenated outputs).
    `pooled`: outputs known to be embeddings (fidelity.pooled_outputs): never taken for class scores."""
    accumulators: dict[str, OutputAccumulator] = {}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...] | None]] = {}
    missing: dict[str, tuple[int, ...]] = {}
    extra: dict[str, tuple[int, ...]] = {}
    for ref, got in pairs:
        for name, ref_value in ref.items():
            ref_array = np.asarray(ref_value)
            if name not in got:
                missing.setdefault(name, ref_array.shape)
                continue
            got_array = np.asarray(got[name])
            accumulators.setdefault(name, OutputAccumulator(name, classifier=False if name in pooled else None)
                                    ).add(ref_array, got_array)
            shapes.setdefault(name, (ref_array.shape, got_array.shape))
        for name, got_value in got.items():
            if name not in ref:
                extra.setdefault(name, np.asarray(got_value).shape)
    diffs = [OutputDiff(name, shape, ok=False, reason="missing from the pruned model's outputs")
             for name, shape in missing.items()]
    for name, accumulator in accumulators.items():
        if name not in missing:
            diffs.append(_diff_from_stats(accumulator.result(), *shapes[name]))
    diffs += [OutputDiff(name, None, ok=False, reason="not an output of the reference model", got_shape=shape)
              for name, shape in extra.items()]
    return diffs


def _diff_from_stats(stats: OutputStats, shape: tuple[int, ...], got_shape: tuple[int, ...] | None) -> OutputDiff:
    diff = OutputDiff(stats.name, shape, got_shape=got_shape)
    diff.ok = stats.failure is None and stats.nonfinite_mismatch == 0
    diff.reason = stats.failure
    if stats.failure is None and stats.nonfinite_mismatch:
        diff.reason = (f"NaN/Inf in only one model (or different) at {stats.nonfinite_mismatch} of "
                       f"{stats.elements} elements")
    for field in ("max_abs", "mean_abs", "max_rel", "rel_to_max", "cosine", "ref_nan", "ref_inf", "got_nan",
                  "got_inf", "top1_agreement", *CHANNEL_FIELDS):
        setattr(diff, field, getattr(stats, field))
    return diff


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def summarize(diffs: Sequence[OutputDiff]) -> dict[str, Any]:
    """Worst figures over all outputs; None where no output had the figure computed."""
    measured = [d for d in diffs if d.rel_to_max is not None]
    worst = max(measured, key=lambda d: d.rel_to_max, default=None)
    cosines = [d.cosine for d in measured if d.cosine is not None]
    channel = [d for d in measured if d.worst_channel_cosine is not None]
    worst_channel = min(channel, key=lambda d: d.worst_channel_cosine, default=None)
    top1 = [d.top1_agreement for d in measured if d.top1_agreement is not None]
    return {
        "outputs": len(diffs),
        "ok": all(d.ok for d in diffs),
        "failed": [{"name": d.name, "reason": d.reason} for d in diffs if not d.ok],
        "worst_output": worst.name if worst else None,
        "worst_rel_to_max": worst.rel_to_max if worst else None,
        "max_abs": max((d.max_abs for d in measured), default=None),
        "min_cosine": min(cosines, default=None),
        "min_channel_cosine": worst_channel.worst_channel_cosine if worst_channel else None,
        "worst_channel_output": worst_channel.name if worst_channel else None,
        "min_top1_agreement": min(top1, default=None),
    }


@dataclass
class OutputStats(ChannelFigures):
    """Error statistics of one output over every batch fed to `OutputAccumulator`.

    Error figures follow Polygraphy: abs = |ref - got|, rel = abs / |ref| with zeros of the
    reference replaced by float64 epsilon. They cover the elements finite in both models; NaN/Inf
    where the reference has the same value is agreement, anywhere else it is counted in
    `nonfinite_mismatch`. Means are over all compared elements of all batches, maxima over all
    batches, and the cosine is that of the concatenated outputs (not a mean of per-batch cosines).
    `failure` is set when the outputs cannot be compared (shape, dtype, non-numeric values differ).
    The channel fields (`fidelity.FIELDS`) judge each channel (or row) on its own: `worst_channel`
    has the lowest cosine, `min_channel_snr_db` is the lowest SNR; `cosine` stays the whole output's.
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
        data = _own_fields_first(asdict(self))
        if data["shape"] is not None:
            data["shape"] = list(data["shape"])
        return data


class OutputAccumulator:
    """Running statistics of one output, fed batch by batch with `add(ref, got)`.

    `atol`/`rtol` enable Polygraphy's elementwise check (`--check-error-stat elemwise`): an element
    violates it only when it exceeds BOTH tolerances (abs > atol and rel > rtol).
    `classifier`: None detects classifier-like outputs (floating point, rank 2 [batch, classes],
    at least 2 classes, unless the name reads as an embedding (EMBEDDING_NAME), or any rank whose last
    axis holds probability distributions); True treats
    the last axis as classes whatever the rank; False never.
    `channel_axis`: judge channels along this axis instead of the one `fidelity.choose_layout` picks.
    Top-1 agreement: the argmax of both models is the same class. Top-k agreement: the reference's
    top-1 class is among the pruned model's k highest scores (ties count in its favour).
    """

    def __init__(self, name: str, *, atol: float | None = None, rtol: float | None = None,
                 classifier: bool | None = None, top_k: int = 5, channel_axis: int | None = None) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.stats = OutputStats(name, atol=atol, rtol=rtol)
        self._classifier = classifier
        self._channel_axis = channel_axis
        self._channels: ChannelSums | None = None
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
        if self._channels is None:  # the layout is fixed by the first batch
            if self._channel_axis is not None and not -ref.ndim <= self._channel_axis < ref.ndim:
                raise InvalidOptionError(f"--channel-axis: output '{stats.name}' has rank {ref.ndim}; "
                                         f"axis {self._channel_axis} is out of range")
            layout = choose_layout(np.where(finite, a, 0.0), classifier=bool(self._classifier),
                                   axis=self._channel_axis, floating=is_float(ref))
            self._channels = ChannelSums(layout)
            if self._classifier is None:
                self._classifier = layout.probabilities or (
                    is_float(ref) and a.ndim == 2 and a.shape[1] >= 2 and not EMBEDDING_NAME.search(stats.name))
        self._channels.add(np.where(finite, a, 0.0), np.where(finite, b, 0.0))
        self._add_classes(a, b)

    def _add_classes(self, a: np.ndarray, b: np.ndarray) -> None:
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
        if self._channels is not None:
            for key, value in self._channels.result().fields().items():
                setattr(stats, key, value)
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
