"""Pass/fail gates of `onnxprune validate`: tolerances per output and their verdicts.

Options take Polygraphy's per-output form: `--atol 1e-4 --atol logits:1e-3` means 1e-3 for the
output `logits` and 1e-4 for every other output (a bare value is the default; the last colon
separates the name, so names such as `out:0` work). The element check mirrors Polygraphy's
`--check-error-stat elemwise`: an element fails only when it exceeds BOTH --atol and --rtol.

A gate given alone is the gate: the element check runs when --atol or --rtol is given (the other
at 1e-5), or when no gate is given at all (the default gate: atol = rtol = 1e-5, Polygraphy's
defaults). `--min-cosine 0.99` alone checks the cosine only.

--min-cosine and --min-snr judge each output's worst channel (fidelity.py: a detector head's 84
rows, an encoder's hidden features, a classifier's rows), so the loud part of an output cannot
hide a ruined quiet part; the whole-output cosine is reported beside it.

The gates, checked in this order for each output (the first failure is the one reported):
  comparable    shapes, dtypes and non-numeric values match (always on)
  nonfinite     NaN/Inf only where the reference has the same value (always on)
  elemwise      no element exceeds both --atol and --rtol (asked for, or the default gate)
  max_mean_abs  mean |ref - pruned| <= --max-mean-abs
  min_cosine    the worst channel's cosine similarity >= --min-cosine
  min_snr       the worst channel's SNR (dB) >= --min-snr
  min_top1      top-1 agreement >= --min-top1 (classifier-like outputs)
  min_topk      top-k agreement >= --min-topk, k from --top-k (classifier-like outputs)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidOptionError
from .compare import OutputStats
from .fidelity import where

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class PerOutput:
    """One option's value: a default for all outputs plus overrides by output name."""

    option: str
    default: float | None
    overrides: dict[str, float] = field(default_factory=dict)

    def for_output(self, name: str) -> float | None:
        return self.overrides.get(name, self.default)

    @property
    def given(self) -> bool:
        return self.default is not None or bool(self.overrides)

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default, "overrides": dict(self.overrides)}

    def describe(self) -> str:
        parts = [] if self.default is None else [_num(self.default)]
        parts += [f"{name}:{_num(value)}" for name, value in self.overrides.items()]
        return f"{self.option} {' '.join(parts)}"


def parse_per_output(values: Iterable[str], option: str, default: float | None = None, *,
                     low: float = -math.inf, high: float = math.inf) -> PerOutput:
    """Parse repeated `[OUTPUT:]VALUE` options; values must lie in [low, high] (NaN never)."""
    overrides: dict[str, float] = {}
    bare: float | None = None
    for raw in values:
        text = raw.strip()
        name, sep, number = text.rpartition(":")
        name = name.strip()
        if sep and not name:
            raise InvalidOptionError(f"{option}: '{raw}' has an empty output name; expected [OUTPUT:]VALUE")
        try:
            value = float(number)
        except ValueError:
            raise InvalidOptionError(f"{option}: '{raw}' is not a number or OUTPUT:NUMBER") from None
        if math.isnan(value) or not low <= value <= high:
            raise InvalidOptionError(f"{option}: {number.strip()} is out of range [{_num(low)}, {_num(high)}]")
        if not sep:
            if bare is not None:
                raise InvalidOptionError(f"{option}: the default value is given twice ({_num(bare)} and {raw})")
            bare = value
        elif name in overrides:
            raise InvalidOptionError(f"{option}: output '{name}' is given more than once")
        else:
            overrides[name] = value
    return PerOutput(option, bare if bare is not None else default, overrides)


@dataclass(frozen=True)
class Gates:
    """Every threshold of a validation run (None: that gate is off)."""

    atol: PerOutput = PerOutput("--atol", DEFAULT_ATOL)
    rtol: PerOutput = PerOutput("--rtol", DEFAULT_RTOL)
    max_mean_abs: PerOutput = PerOutput("--max-mean-abs", None)
    min_cosine: PerOutput = PerOutput("--min-cosine", None)
    min_snr: PerOutput = PerOutput("--min-snr", None)
    min_top1: PerOutput = PerOutput("--min-top1", None)
    min_topk: PerOutput = PerOutput("--min-topk", None)
    top_k: int = DEFAULT_TOP_K
    elemwise: str = "default"  # why the element check is on or off: "asked", "default" or "off"

    @classmethod
    def from_options(cls, *, atol: Sequence[str] = (), rtol: Sequence[str] = (), max_mean_abs: Sequence[str] = (),
                     min_cosine: Sequence[str] = (), min_snr: Sequence[str] = (), min_top1: Sequence[str] = (),
                     min_topk: Sequence[str] = (), top_k: int = DEFAULT_TOP_K) -> Gates:
        """The gates of the options given; the element check only when asked for or when nothing is."""
        if top_k < 1:
            raise InvalidOptionError(f"--top-k must be at least 1, got {top_k}")
        others = dict(
            max_mean_abs=parse_per_output(max_mean_abs, "--max-mean-abs", low=0.0),
            min_cosine=parse_per_output(min_cosine, "--min-cosine", low=-1.0, high=1.0),
            min_snr=parse_per_output(min_snr, "--min-snr"),
            min_top1=parse_per_output(min_top1, "--min-top1", low=0.0, high=1.0),
            min_topk=parse_per_output(min_topk, "--min-topk", low=0.0, high=1.0),
        )
        asked = bool(atol or rtol)
        elemwise = "asked" if asked else "off" if any(o.given for o in others.values()) else "default"
        defaults = (DEFAULT_ATOL, DEFAULT_RTOL) if elemwise != "off" else (None, None)
        return cls(atol=parse_per_output(atol, "--atol", defaults[0], low=0.0),
                   rtol=parse_per_output(rtol, "--rtol", defaults[1], low=0.0),
                   top_k=top_k, elemwise=elemwise, **others)

    def options(self) -> list[PerOutput]:
        return [self.atol, self.rtol, self.max_mean_abs, self.min_cosine, self.min_snr, self.min_top1, self.min_topk]

    def check_output_names(self, outputs: Sequence[str]) -> None:
        """Refuse overrides naming outputs the models do not have (a typo would silently gate nothing)."""
        for option in self.options():
            for name in option.overrides:
                if name not in outputs:
                    raise InvalidOptionError(
                        f"{option.option}: the models have no output '{name}' (outputs: {', '.join(outputs)})"
                    )

    def check_classifiers(self, stats: Sequence[OutputStats]) -> None:
        """--min-top1/--min-topk need classifier-like outputs; say so instead of passing vacuously."""
        if any(s.failure for s in stats):
            return  # a structural failure is the verdict; classes may not have been seen
        by_name = {s.name: s for s in stats}
        for option in (self.min_top1, self.min_topk):
            for name in option.overrides:
                if not by_name[name].classifier:
                    raise InvalidOptionError(
                        f"{option.option}: output '{name}' is not classifier-like (rank-2 [batch, classes] float); "
                        "name it with --classifier to compare its last axis as classes"
                    )
            if option.default is not None and not any(s.classifier for s in stats):
                raise InvalidOptionError(
                    f"{option.option}: no output is classifier-like (rank-2 [batch, classes] float); "
                    "name one with --classifier"
                )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {o.option.lstrip("-").replace("-", "_"): o.to_dict() for o in self.options()}
        data["top_k"] = self.top_k
        data["elemwise"] = self.elemwise
        return data


@dataclass
class GateResult:
    """One gate checked on one output."""

    output: str
    gate: str
    passed: bool
    value: float | int | str | None
    threshold: float | dict[str, float | None] | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "gate": self.gate, "passed": self.passed, "value": self.value,
                "threshold": self.threshold, "message": self.message}


def evaluate(stats: OutputStats, gates: Gates) -> list[GateResult]:
    """The gates that apply to this output, in the documented order."""
    name = stats.name
    where = f"output '{name}'"
    results = [GateResult(name, "comparable", stats.failure is None, stats.failure, None,
                          f"{where}: {stats.failure}" if stats.failure else f"{where}: comparable")]
    if stats.max_abs is None:
        return results  # nothing numeric to judge: incomparable, or equal non-numeric values
    nonfinite = stats.nonfinite_mismatch
    results.append(GateResult(
        name, "nonfinite", nonfinite == 0, nonfinite, 0,
        f"{where}: NaN/Inf where the reference differs at {nonfinite} of {stats.elements} elements "
        f"(pruned: {stats.got_nan} NaN, {stats.got_inf} Inf; reference: {stats.ref_nan} NaN, {stats.ref_inf} Inf)"
        if nonfinite else f"{where}: NaN/Inf only where the reference has them"))
    if stats.elem_violations is not None:
        bad = stats.elem_violations
        tolerances = f"--atol {_num(stats.atol)} and --rtol {_num(stats.rtol)}"
        results.append(GateResult(
            name, "elemwise", bad == 0, bad, {"atol": stats.atol, "rtol": stats.rtol},
            f"{where}: {bad} of {stats.compared} elements exceed both {tolerances} "
            f"(max abs {_num(stats.max_abs)}, max rel {_num(stats.max_rel)})"))
    limit = gates.max_mean_abs.for_output(name)
    if limit is not None:
        value = stats.mean_abs
        left, right = _pair(value, limit)
        relation = "<=" if value <= limit else ">"
        results.append(GateResult(name, "max_mean_abs", value <= limit, value, limit,
                                  f"{where}: mean abs error {left} {relation} --max-mean-abs {right}"))
    minimum = gates.min_cosine.for_output(name)
    if minimum is not None:
        value = stats.cosine if stats.worst_channel_cosine is None else stats.worst_channel_cosine
        results.append(_at_least(name, "min_cosine", "cosine", value, minimum, "--min-cosine",
                                 where=_worst(stats, stats.worst_channel, f"whole output {stats.cosine:.6g}")))
    minimum = gates.min_snr.for_output(name)
    if minimum is not None and stats.min_channel_snr_db is not None:
        results.append(_at_least(name, "min_snr", "SNR (dB)", stats.min_channel_snr_db, minimum, "--min-snr",
                                 where=_worst(stats, stats.min_snr_channel, "")))
    if stats.top1_agreement is not None:
        for gate, option, label, value in (
            ("min_top1", gates.min_top1, "top-1 agreement", stats.top1_agreement),
            ("min_topk", gates.min_topk, f"top-{stats.top_k} agreement", stats.topk_agreement),
        ):
            minimum = option.for_output(name)
            if minimum is not None:
                rows = f" ({round(value * stats.rows)} of {stats.rows} rows)"
                results.append(_at_least(name, gate, label, value, minimum, option.option, rows))
    return results


def _at_least(output: str, gate: str, label: str, value: float, minimum: float, option: str,
              extra: str = "", where: str = "") -> GateResult:
    passed = value >= minimum
    left, right = _pair(value, minimum)
    relation = ">=" if passed else "<"
    return GateResult(output, gate, passed, value, minimum,
                      f"output '{output}': {label} {left}{where} {relation} {option} {right}{extra}")


def _worst(stats: OutputStats, index: int | None, whole: str) -> str:
    """' (channel 37 of 84 on axis 1, the worst; whole output 0.997)', or '' for an output judged whole."""
    place = where(stats.channel_mode, stats.channel_axis, index, stats.channels)
    return f" ({place}, the worst{'; ' + whole if whole else ''})" if place else ""


def failure_line(results: Sequence[GateResult]) -> str | None:
    """The one line a failed run prints: the first failed gate, and how many more failed."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return None
    more = f" (and {len(failed) - 1} more failed gate(s))" if len(failed) > 1 else ""
    return failed[0].message + more


def _pair(value: float, threshold: float) -> tuple[str, str]:
    """Both numbers with enough digits that they never print the same when they differ."""
    for digits in range(4, 18):
        left, right = f"{value:.{digits}g}", f"{threshold:.{digits}g}"
        if left != right or value == threshold:
            break
    return left, right


def _num(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"
