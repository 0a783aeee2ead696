"""Passes, one module each. Importable as `onnxprune.passes`.

Scoring criteria are registered in CRITERIA by the name the CLI's --criterion takes.
"""

from __future__ import annotations

from .budget import ChannelBudget
from .layers import DropLayers
from .magnitude import BatchNormScale, Magnitude
from .remove_channels import RemoveChannels

CRITERIA = {
    "l1": lambda: Magnitude(p=1),
    "l2": lambda: Magnitude(p=2),
    "bn-scale": BatchNormScale,
}

__all__ = ["CRITERIA", "BatchNormScale", "ChannelBudget", "DropLayers", "Magnitude", "RemoveChannels"]
