"""Calibration-aware criteria, one module each. A formula takes a consumer's weight as
[input channels, outputs], the activation statistics of its input, the consumer pair and the space,
and returns one value per input channel (summed per space channel by the caller)."""

from __future__ import annotations

from . import contribution, fluctuation, obs, wanda

FORMULAS = {
    "wanda": wanda.score,
    "fluctuation": fluctuation.score,
    "obs": obs.score,
    "contribution": contribution.score,
}
NEEDS_GRAM = {"obs", "contribution"}
