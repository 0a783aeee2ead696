"""onnxprune: graph-level pruning of exported ONNX models."""

from .api import PruneOptions, prune
from .deps import ChannelGraph, ChannelSpace, build_channel_graph
from .errors import InvalidModelError, InvalidOptionError, OnnxPruneError, UnsupportedModelError, ValidationError
from .io.model import Model
from .io.saving import save_model

__all__ = [
    "ChannelGraph", "ChannelSpace", "InvalidModelError", "InvalidOptionError", "Model", "OnnxPruneError",
    "PruneOptions", "UnsupportedModelError", "ValidationError", "build_channel_graph", "prune", "save_model",
]
__version__ = "0.1.0"
