"""Errors a user can cause. The CLI prints their message on one line and exits with code 2."""


class OnnxPruneError(Exception):
    """Base class: the message names the file, node, tensor or option at fault."""


class InvalidModelError(OnnxPruneError):
    """The input is not a usable ONNX model (not protobuf, truncated, bad external data...)."""


class InvalidOptionError(OnnxPruneError):
    """An option or argument value is out of range or refers to something absent."""


class UnsupportedModelError(OnnxPruneError):
    """A valid model that onnxprune cannot handle (opset out of range, ...)."""


class ValidationError(OnnxPruneError):
    """Running or comparing models failed for a reason the user can act on."""
