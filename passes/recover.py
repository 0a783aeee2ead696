"""Recovery by distillation (`--recover`): after channels are removed, train the kept weights of the
pruned model to reproduce the dense model on the calibration data (onnxprune/recover/).

`KeepDense` records the model as it came (the teacher) before any pass changes it; `Recover` runs
after the rewrite passes. `recovery_passes` builds the progressive schedule of `--recover-rounds K`:
K times (prune 1/K of the way, recover), every round taught by the same dense model. torch is
imported only when `Recover` runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from onnxprune.calib.data import CalibrationData
from onnxprune.io.model import Model
from onnxprune.pipeline import Context, Pass


class KeepDense:
    """Analysis pass: remember the dense model (a copy sharing its weight arrays, which passes replace
    rather than write into) as the teacher of the recovery rounds that follow."""

    name = "keep-dense"

    def __init__(self) -> None:
        from onnxprune.recover.cuts import Cuts

        self.model: Model | None = None
        self.cuts = Cuts()  # the channels of the dense model's tensors each round keeps

    def run(self, context: Context) -> None:
        self.model = context.model.copy()


class Recover:
    """Rewrite pass (weights only): distill `teacher.model` into the context's model."""

    def __init__(self, teacher: KeepDense, calibration: CalibrationData | None, settings: Any, round_number: int = 1,
                 rounds: int = 1):
        self.teacher, self.calibration, self.settings = teacher, calibration, settings
        self.round, self.rounds = round_number, rounds
        self.name = "recover" if rounds == 1 else f"recover-{round_number}"

    def run(self, context: Context) -> None:
        from onnxprune.recover.distill import recover
        from onnxprune.recover.interpreter import InterpreterError

        assert self.teacher.model is not None, "KeepDense must run before Recover"
        section = context.report.setdefault("recover", {"rounds": []})
        if self.calibration is None:
            section["rounds"].append({"round": self.round, "skipped": "no calibration data"})
            return
        context.log(f"recover: round {self.round}/{self.rounds}, distilling on {self.calibration.samples} "
                    f"calibration samples ({self.calibration.source})")
        self.teacher.cuts.record(context.report.get("spaces"), self.teacher.model)
        try:
            entry = recover(context.model, self.teacher.model, list(self.calibration.feeds), self.settings,
                            context.log, self.teacher.cuts)
        except InterpreterError as exc:
            # The graph stays valid and pruned; only the recovery is missing, and the report says why.
            entry = {"skipped": f"the graph cannot be run in torch: {exc}", "steps": 0}
            context.report.setdefault("notes", []).append(f"--recover skipped: {entry['skipped']}")
        entry = {"round": self.round, "data": self.calibration.source, **entry}
        section["rounds"].append(entry)
        _summarize(section)
        if "loss_after" in entry:
            outcome = "kept the weights as they were (no improvement)" if entry["reverted"] else "trained"
            context.log(f"recover: loss {entry['loss_before']:.4g} -> {entry['loss_after']:.4g} "
                        f"(outputs {entry['output_loss_before']:.4g} -> {entry['output_loss_after']:.4g}), "
                        f"{entry['steps']} steps on {entry['samples']} samples in {entry['seconds']:.1f}s; {outcome}")


def _summarize(section: dict) -> None:
    rounds = [r for r in section["rounds"] if "steps" in r]
    section["steps"] = sum(r["steps"] for r in rounds)
    section["seconds"] = round(sum(r.get("seconds", 0.0) for r in rounds), 3)
    section["samples"] = max((r.get("samples", 0) for r in rounds), default=0)


def check_recover_options(options: Any) -> None:
    """The --recover options make sense together (PruneOptions.check calls this)."""
    import importlib.util

    from onnxprune.errors import InvalidOptionError

    given = [name for name, value in (("--recover-steps", options.recover_steps), ("--recover-time",
             options.recover_time), ("--recover-lr", options.recover_lr)) if value is not None]
    given += ["--recover-rounds"] if options.recover_rounds != 1 else []
    if not options.recover:
        if given:
            raise InvalidOptionError(f"{', '.join(given)} need --recover")
        return
    if not options.calib:
        raise InvalidOptionError("--recover trains on real inputs: give --calib (on random inputs the pruned model "
                                 "would learn the original's answers to noise)")
    if importlib.util.find_spec("torch") is None:
        raise InvalidOptionError("--recover trains with PyTorch, which is not installed (pip install torch)")
    if options.recover_steps is not None and options.recover_steps < 1:
        raise InvalidOptionError(f"--recover-steps must be at least 1, got {options.recover_steps}")
    if options.recover_time is not None and not options.recover_time > 0:
        raise InvalidOptionError(f"--recover-time must be a positive number of seconds, got {options.recover_time}")
    if options.recover_lr is not None and not 0 < options.recover_lr <= 1:
        raise InvalidOptionError(f"--recover-lr must be in (0, 1], got {options.recover_lr}")
    if options.recover_rounds < 1:
        raise InvalidOptionError(f"--recover-rounds must be at least 1, got {options.recover_rounds}")


def recovery_settings(options: Any, rounds: int) -> Any:
    """RecoverSettings for one of `rounds` rounds: the steps and time budgets are split evenly."""
    from onnxprune.recover.settings import RecoverSettings

    steps = math.ceil(options.recover_steps / rounds) if options.recover_steps else None
    seconds = options.recover_time / rounds if options.recover_time else None
    settings = RecoverSettings(steps=steps, seconds=seconds, seed=options.seed, batch=min(options.calib_batch, 4),
                               keep_zeros=bool(options.sparse))
    if options.recover_lr is not None:
        settings.lr = options.recover_lr
    return settings


def _per_round(ratio: float, rounds: int) -> float:
    """The ratio that, applied `rounds` times, removes `ratio` in all: 1 - (1 - r)^(1/K)."""
    if rounds == 1 or not ratio:
        return ratio
    return 1 - (1 - ratio) ** (1 / rounds)


def _root(target: float | None, rounds: int) -> float | None:
    return target ** (1 / rounds) if target is not None and rounds > 1 else target


def recovery_passes(options: Any, calibration: CalibrationData | None, shapes: dict | None,
                    build: Callable[..., list[Pass]]) -> list[Pass]:
    """The passes of `--recover` (with `--recover-rounds K`): the dense model kept first, then K rounds
    of `build`'s passes at a per-round share of the budget, each followed by recovery.

    Per round: ratios 1 - (1 - r)^(1/K) of what is left (--structured, --heads, a --drop-layers
    fraction), targets t^(1/K) of the current model (--target-flops/params/latency, measured, so the
    total lands on t). Whole-layer counts and --sparse apply once (first and last round)."""
    rounds = max(1, options.recover_rounds)
    teacher = KeepDense()
    passes: list[Pass] = [teacher]
    for number in range(1, rounds + 1):
        drop = options.drop_layers
        if rounds > 1 and drop:  # a fraction per round; a count of layers in the first round
            drop = _per_round(drop, rounds) if drop < 1 else (drop if number == 1 else 0.0)
        step = dataclasses.replace(
            options, recover=False, drop_layers=drop,
            structured=_per_round(options.structured, rounds), heads=_per_round(options.heads, rounds),
            target_flops=_root(options.target_flops, rounds), target_params=_root(options.target_params, rounds),
            target_latency=_root(options.target_latency, rounds),
            sparse=options.sparse if number == rounds else None,
        )
        passes += build(step, calibration, shapes)
        passes.append(Recover(teacher, calibration, recovery_settings(options, rounds), number, rounds))
    return passes
