"""The knobs of one recovery run (importable without torch: the CLI and the passes build them)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_STEPS = 200


@dataclass
class RecoverSettings:
    steps: int | None = None  # None with no `seconds`: DEFAULT_STEPS
    seconds: float | None = None  # wall-clock budget of the training loop
    lr: float = 0.01  # relative to each weight's RMS (distill.py)
    batch: int = 4  # samples per step
    intermediate_weight: float = 1.0  # of the mean intermediate loss, next to the mean output loss
    augment: bool = True
    keep_zeros: bool = False  # kernels' exact zeros stay zero (an N:M pattern from --sparse survives)
    seed: int = 0
    device: str | None = None  # None: CUDA when torch sees one, else the CPU
