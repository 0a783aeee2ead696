"""Fidelity per channel: figures that the scale of an output cannot fool.

One cosine over a whole output is a weighted vote in which the loudest values win. A detector head
`[1, 84, anchors]` carries 4 box coordinates in pixels (hundreds) and 80 class scores in 0..1: the
box rows hold ~99.99% of the energy, so the whole-tensor cosine stays at 0.997 while every class
score is ruined. Judged per channel (one cosine per feature row), the class rows show it.

The layout says which axis separates features (`choose_layout`):

- `rows`: rank-2 outputs `[N, K]` (a classifier's logits, an embedding per sample) and outputs whose
  last axis holds probability distributions (a recognizer's `[N, T, classes]` softmax): each row
  (sample, time step) is judged on its own. Per class it would judge columns that are ~0 everywhere.
- `axis`: the feature axis of the rest. Rank 3 `[B, X, Y]`: the last axis (features last, as
  `[batch, tokens, hidden]` or `[1, anchors, 85]`), except when axis 1 is the shorter one and the
  one whose slices differ most in scale: a detector head `[1, 84, anchors]`. Rank 4 and more: axis 1
  (`[N, C, H, W]`). An axis can also be given (`--channel-axis`).
- `whole`: rank 0-1, non-float outputs, and outputs whose feature axis has one element (a
  segmentation map `[N, 1, H, W]`).

Per channel c, over every batch: cosine, relative L2 error ||ref - got|| / ||ref|| and SNR
10 log10(||ref||^2 / ||ref - got||^2) in dB. A channel silent in the reference (RMS under
SILENT_RMS of the loudest channel's) cannot give a meaningful cosine of its own: each channel's
vectors are extended by one constant component at that floor, so differences below it agree and a
silent channel the pruned model makes loud still counts as lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

# A channel's RMS below this fraction of the loudest channel's is treated as silence (see above).
# A detector's absent-class rows sit ~1e-5 below its box rows and are still judged.
SILENT_RMS = 1e-6
# Probability rows: every value in [0, 1] and every row summing to 1 within this.
_PROBABILITY_SUM_TOL = 1e-3


@dataclass(frozen=True)
class ChannelLayout:
    """How an output is cut into channels: `mode` rows, axis or whole; `axis` in axis mode."""

    mode: str
    axis: int | None = None
    probabilities: bool = False  # rows that are probability distributions (softmax over the last axis)

    def describe(self, count: int) -> str:
        if self.mode == "axis":
            return f"{count} channels on axis {self.axis}"
        if self.mode == "rows":
            return f"{count} rows"
        return "the whole output"

    def unit(self) -> str:
        return {"axis": "channel", "rows": "row"}.get(self.mode, "output")


def where(mode: str | None, axis: int | None, index: int | None, count: int | None) -> str:
    """'channel 37 of 84 on axis 1' or 'row 3 of 8': a channel in words; '' for an output judged whole."""
    if mode not in ("axis", "rows") or index is None or not count or count < 2:
        return ""
    return f"{ChannelLayout(mode).unit()} {index} of {count}" + (f" on axis {axis}" if mode == "axis" else "")


def is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating) or array.dtype.kind == "V"  # ml_dtypes bfloat16...


def probability_rows(ref: np.ndarray) -> bool:
    """The last axis holds distributions: values in [0, 1], each row summing to 1."""
    if ref.ndim < 2 or ref.shape[-1] < 2 or ref.size == 0:
        return False
    values = ref.astype(np.float64)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1 + _PROBABILITY_SUM_TOL:
        return False
    return bool(np.abs(values.sum(axis=-1) - 1).max() <= _PROBABILITY_SUM_TOL)


def _slice_spread(values: np.ndarray, axis: int) -> float:
    """How much the slices along `axis` differ in scale: max over min RMS of the non-zero slices."""
    rms = np.sqrt(np.mean(np.square(np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)), axis=1))
    rms = rms[np.isfinite(rms) & (rms > 0)]
    return float(rms.max() / rms.min()) if rms.size else 1.0


def choose_layout(ref: np.ndarray, *, classifier: bool = False, axis: int | None = None,
                  floating: bool | None = None) -> ChannelLayout:
    """The layout of an output from its first reference batch (see the module docstring).

    `classifier`: the output was named a classifier (its last axis holds classes), so it is judged by
    rows whatever its rank. `axis`: an axis chosen by the user (negative counts from the end).
    `floating`: whether the output is floating point, when `ref` was already converted (default: its dtype).
    """
    ref = np.asarray(ref)
    rank = ref.ndim
    if axis is not None:
        if not -rank <= axis < rank:
            raise ValueError(f"axis {axis} is out of range for rank {rank}")
        return ChannelLayout("axis", axis % rank)
    if rank <= 1 or not (is_float(ref) if floating is None else floating):
        return ChannelLayout("whole")
    probabilities = probability_rows(ref)
    if rank == 2 or classifier or probabilities:
        return ChannelLayout("rows", probabilities=probabilities) if ref.shape[-1] > 1 else ChannelLayout("whole")
    if rank == 3:
        rows, columns = ref.shape[1], ref.shape[2]
        detector_head = False
        if 1 < rows < columns:
            values = ref.astype(np.float64)
            values = np.where(np.isfinite(values), values, 0.0)
            detector_head = _slice_spread(values, 1) > _slice_spread(values, 2)
        if detector_head or columns == 1:
            return ChannelLayout("axis", 1) if rows > 1 else ChannelLayout("whole")
        return ChannelLayout("axis", 2)
    return ChannelLayout("axis", 1) if ref.shape[1] > 1 else ChannelLayout("whole")


@dataclass
class ChannelFidelity:
    """Per-channel figures of one output (see `ChannelSums.result`)."""

    layout: ChannelLayout
    channels: int
    cosine: np.ndarray
    snr_db: np.ndarray
    rel_err: np.ndarray
    note: str | None = None

    @property
    def worst(self) -> int | None:
        """The channel with the lowest cosine (the first of equals); None when there is none."""
        return int(np.argmin(self.cosine)) if self.channels else None

    @property
    def worst_snr(self) -> int | None:
        return int(np.argmin(self.snr_db)) if self.channels else None

    def fields(self) -> dict[str, object]:
        """The flat figures reports carry (names in `FIELDS`)."""
        worst, worst_snr = self.worst, self.worst_snr
        return {
            "channel_mode": self.layout.mode,
            "channel_axis": self.layout.axis,
            "channels": self.channels,
            "worst_channel": worst,
            "worst_channel_cosine": None if worst is None else float(self.cosine[worst]),
            "worst_channel_rel_err": None if worst is None else float(self.rel_err[worst]),
            "min_channel_snr_db": None if worst_snr is None else float(self.snr_db[worst_snr]),
            "min_snr_channel": worst_snr,
            "channel_note": self.note,
        }


# The flat per-channel keys of OutputStats, OutputDiff and the reports (documented in docs/report-schema.md).
@dataclass(kw_only=True)
class ChannelFigures:
    """The per-channel figures an output's comparison reports (check/compare.py's OutputDiff and
    OutputStats both carry them; ChannelFidelity.fields fills them)."""

    channel_mode: str | None = None
    channel_axis: int | None = None
    channels: int | None = None
    worst_channel: int | None = None
    worst_channel_cosine: float | None = None
    worst_channel_rel_err: float | None = None
    min_channel_snr_db: float | None = None
    min_snr_channel: int | None = None
    channel_note: str | None = None


FIELDS = tuple(figure.name for figure in fields(ChannelFigures))


@dataclass
class ChannelSums:
    """Running per-channel sums of one output, batch by batch: dot, both squared norms, squared error.

    Arrays must be float64 and finite (callers zero the non-finite elements, which they count
    apart). In rows mode every batch appends its rows; in axis mode the channel count must stay
    the same, else the output falls back to one whole channel and `note` says why.
    """

    layout: ChannelLayout
    _sums: list[np.ndarray] = field(default_factory=list)  # rows mode: per batch [rows, 5]
    _total: np.ndarray | None = None  # axis/whole mode: [channels, 5]
    _whole: np.ndarray = field(default_factory=lambda: np.zeros((1, 5)))
    note: str | None = None

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        self._whole += _sums(a.reshape(1, -1), b.reshape(1, -1))
        mode = self.layout.mode if self.note is None else "whole"
        if mode == "rows":
            width = a.shape[-1] if a.ndim else 1
            self._sums.append(_sums(a.reshape(-1, width), b.reshape(-1, width)))
        elif mode == "axis":
            axis = self.layout.axis
            if axis >= a.ndim or (self._total is not None and a.shape[axis] != len(self._total)):
                self.note = (f"axis {axis} changed size between batches; judged as one channel" if axis < a.ndim
                             else f"axis {axis} is out of range; judged as one channel")
                return
            count = a.shape[axis]
            sums = _sums(np.moveaxis(a, axis, 0).reshape(count, -1), np.moveaxis(b, axis, 0).reshape(count, -1))
            self._total = sums if self._total is None else self._total + sums

    def _stacked(self) -> tuple[np.ndarray, ChannelLayout]:
        if self.note is None and self.layout.mode == "rows" and self._sums:
            return np.concatenate(self._sums), self.layout
        if self.note is None and self.layout.mode == "axis" and self._total is not None:
            return self._total, self.layout
        return self._whole, ChannelLayout("whole")

    def result(self) -> ChannelFidelity:
        sums, layout = self._stacked()
        dot, ref_sq, got_sq, err_sq, count = sums.T
        count = np.maximum(count, 1.0)
        loudest = float(np.max(ref_sq / count)) if len(sums) else 0.0
        floor = SILENT_RMS ** 2 * loudest * count  # per channel: the constant component's squared length
        ref_energy, got_energy = ref_sq + floor, got_sq + floor
        with np.errstate(divide="ignore", invalid="ignore"):
            cosine = np.where((ref_energy == 0) & (got_energy == 0), 1.0,
                              (dot + floor) / np.sqrt(ref_energy * got_energy))
            cosine = np.where(np.isfinite(cosine), np.clip(cosine, -1.0, 1.0), 0.0)
            snr = np.where(err_sq == 0, np.inf, 10 * np.log10(ref_energy / err_sq))
            rel = np.where(err_sq == 0, 0.0, np.sqrt(err_sq / ref_energy))
        return ChannelFidelity(layout, len(sums), cosine, snr, rel, self.note)

    def mean_relative_error(self) -> float:
        """Mean over channels of ||ref_c - got_c||^2 / ||ref_c||^2 (the silence floor added to the
        denominator): every channel weighs the same, whatever its scale."""
        sums, _ = self._stacked()
        if not len(sums):
            return 0.0
        _, ref_sq, _, err_sq, count = sums.T
        loudest = float(np.max(ref_sq / np.maximum(count, 1.0)))
        energy = ref_sq + SILENT_RMS ** 2 * loudest * np.maximum(count, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(err_sq == 0, 0.0, err_sq / energy)
        return float(np.mean(np.where(np.isfinite(ratio), ratio, 1.0)))


def _sums(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[channels, 5]: dot, |a|^2, |b|^2, |a - b|^2, elements, for channels along axis 0 of 2-D arrays."""
    diff = a - b
    return np.stack([np.einsum("ij,ij->i", a, b), np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", b, b),
                     np.einsum("ij,ij->i", diff, diff), np.full(a.shape[0], float(a.shape[1]))], axis=1)


def relative_error(layouts: list[ChannelLayout], references: list[list[np.ndarray]],
                   results: list[list[np.ndarray]]) -> float:
    """Scale-robust output error of a pruned model: per output the mean over its channels of the
    relative squared error, averaged over the outputs. `references`/`results`: per feed, per output.
    Non-finite pruned values count as lost (zero)."""
    sums = [ChannelSums(layout) for layout in layouts]
    for ref_outputs, got_outputs in zip(references, results):
        for acc, ref, got in zip(sums, ref_outputs, got_outputs):
            a = np.asarray(ref, dtype=np.float64)
            b = np.asarray(got, dtype=np.float64)
            finite = np.isfinite(a)
            acc.add(np.where(finite, a, 0.0), np.where(finite & np.isfinite(b), b, 0.0))
    return float(np.mean([acc.mean_relative_error() for acc in sums])) if sums else 0.0


# Ops an output passes through unchanged in meaning, and ops that make a per-sample vector out of a
# sequence (mean pooling, normalization): an output they produce is an embedding, not class scores.
# GlobalAveragePool is not among them: SqueezeNet's class scores come straight out of one.
_PASS_THROUGH = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast", "Transpose", "Concat"})
_POOLING = frozenset({"ReduceMean", "ReduceSum", "ReduceL2", "LpNormalization", "Div", "LayerNormalization",
                      "SimplifiedLayerNormalization"})


def pooled_outputs(graph) -> set[str]:
    """Outputs of an onnx GraphProto made by pooling or normalizing (through reshapes and concats):
    sentence embeddings, pooled features. Their argmax means nothing, so they are not taken for a
    classifier's scores even when rank 2 (paraphrase-MiniLM's pooled output is named '461')."""
    producer = {out: node for node in graph.node for out in node.output}
    pooled = set()
    for output in graph.output:
        node, steps = producer.get(output.name), 0
        while node is not None and node.op_type in _PASS_THROUGH and node.input and steps < 16:
            node, steps = producer.get(node.input[0]), steps + 1
        if node is not None and node.op_type in _POOLING:
            pooled.add(output.name)
    return pooled
