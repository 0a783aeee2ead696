"""Passes, one module each. Importable as `onnxprune.passes`.

Scoring criteria are registered in CRITERIA by the name the CLI's --criterion takes.
"""

from __future__ import annotations

from .activation import ActivationScores
from .budget import ChannelBudget
from .compensate import AddBiasSlots, Compensate, DropZeroBiases
from .criteria import FORMULAS
from .layers import DropLayers
from .magnitude import BatchNormScale, Magnitude
from .recover import KeepDense, Recover
from .remove_channels import RemoveChannels

CRITERIA = {
    "l1": lambda: Magnitude(p=1),
    "l2": lambda: Magnitude(p=2),
    "bn-scale": BatchNormScale,
}
# Criteria that read activations: they take the calibration data.
ACTIVATION_CRITERIA = tuple(FORMULAS)

__all__ = [
    "ACTIVATION_CRITERIA", "CRITERIA", "ActivationScores", "AddBiasSlots", "BatchNormScale", "ChannelBudget",
    "Compensate", "DropLayers", "DropZeroBiases", "KeepDense", "Magnitude", "Recover", "RemoveChannels",
]
