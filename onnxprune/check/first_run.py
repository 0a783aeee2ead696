"""Run the ORIGINAL model once, before any work, on the inputs validation and scoring will feed it.

A user's first contact: a detector whose symbolic sizes were guessed wrong, a text model fed ids
outside its vocabulary, calibration data of the wrong shape. Found here, the run stops with one
line that names the input and the `--shapes` or `--calib` to pass, instead of ONNX Runtime's
message minutes later. Models over PROBE_MAX_BYTES are not loaded twice for this; validation
still catches them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from ..errors import InvalidOptionError
from ..io.files import model_bytes
from ..io.model import Model
from . import dim_choice, runtime
from .inputs import InputSpec, random_feeds, resolve_shapes

PROBE_MAX_BYTES = 2 * 2**30
_REASON_CHARS = 220


def open_original(model: Model) -> ort.InferenceSession | None:
    """An ONNX Runtime session of the model as loaded, or None when it is too big or will not load
    (custom ops: validation then says to use --no-validate)."""
    if model.source is None or model_bytes(model.source) > PROBE_MAX_BYTES:
        return None
    options = ort.SessionOptions()
    # Fatal only: a failed try is expected here, and ORT would log its error to stderr besides raising.
    options.log_severity_level = 4
    try:
        return ort.InferenceSession(os.fspath(model.source), sess_options=options,
                                    providers=[runtime.CPU])
    except Exception:  # ORT's pybind errors share no base class but Exception
        return None


def run_error(session: ort.InferenceSession, feed: Mapping[str, np.ndarray]) -> str | None:
    """None when the model runs on `feed`, else ONNX Runtime's reason in a few words."""
    try:
        session.run(None, dict(feed))
    except Exception as exc:  # ORT's pybind errors share no base class but Exception
        return ort_reason(exc)
    return None


def ort_reason(exc: BaseException) -> str:
    """ORT's first line without its error-code prefix and source paths, cut to a readable length."""
    line = runtime.first_line(exc)
    line = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)  # also nested in a kernel's message
    line = re.sub(r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: ",
                  r"\1 '\2': ", line)
    line = re.sub(r"/\S+\.(cc|h|cpp):\d+ (\S+ )*?\S+\([^)]*\)( const)? ", "", line)
    line = re.sub(r"/\S+\.(cc|h|cpp):\d+ ", "", line)
    line = re.sub(r"\b\w+\.(cc|h|cpp):\d+ \w+ ", "", line)  # "concatbase.h:135 PrepareForComputeImpl "
    return line if len(line) <= _REASON_CHARS else line[:_REASON_CHARS - 3] + "..."


def choose_shapes(model: Model, specs: list[InputSpec], overrides: Mapping[str, tuple[int, ...]], seed: int,
                  probe: bool = True) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Concrete shapes the original runs at: the preferred choice for symbolic dims, else the first
    other image size it runs at; raise one line naming the inputs when none runs."""
    options = dim_choice.candidates(model, specs, overrides)
    session = open_original(model) if probe else None
    failures: list[tuple[dict[str, tuple[int, ...]], str]] = []
    for suggestion in options:
        resolved, notes = resolve_shapes(specs, overrides, suggested=suggestion)
        if session is None:
            return resolved, notes
        error = run_error(session, random_feeds(specs, resolved, seed)[0])
        if error is None:
            if failures:
                notes.append(f"the original does not run at {_shapes_text(failures[0][0], _guessed(specs, overrides))}"
                             f" ({failures[0][1]})")
            return resolved, notes
        failures.append((resolved, error))
    raise InvalidOptionError(_failure_line(model, specs, overrides, failures))


def check_feed(model: Model, feed: Mapping[str, np.ndarray], label: str) -> None:
    """Raise one line when the original does not run on the first feed of --calib/--load-inputs."""
    session = open_original(model)
    if session is None:
        return
    error = run_error(session, feed)
    if error is not None:
        shapes = ", ".join(f"{name} {_dims(np.shape(value))}" for name, value in feed.items())
        raise InvalidOptionError(f"the original model does not run in ONNX Runtime on the first feed of {label} "
                                 f"({shapes}): {error}; check the shapes and values of that data")


def _failure_line(model: Model, specs: list[InputSpec], overrides: Mapping[str, tuple[int, ...]],
                  failures: list[tuple[dict[str, tuple[int, ...]], str]]) -> str:
    guessed = _guessed(specs, overrides)
    first, reason = failures[0]
    images = {image.name: image for image in dim_choice.image_inputs(model, specs, {})}
    if guessed:
        more = f" (nor at {len(failures) - 1} other sizes)" if len(failures) > 1 else ""
        where = f"with its symbolic dims set to {_shapes_text(first, guessed)}{more}"
    else:
        source = "--shapes" if overrides else "the model's fixed shapes"
        where = f"on random inputs at {_shapes_text(first, {spec.name for spec in specs})} (from {source})"
    sized = [spec for spec in specs if spec.name in guessed or spec.name in overrides]
    advice = []
    if any(spec.values is not None and spec.values.why == "--val-range" for spec in specs):
        advice.append("a --val-range inside the values the model takes")
    if sized:
        templates = _first(dim_choice.shapes_template(spec, {n: i.spatial for n, i in images.items()})
                           for spec in sized)
        strides = sorted({max(i.strides) for n, i in images.items() if max(i.strides) > 1})
        multiple = f" (H, W multiples of {strides[-1]})" if strides else ""
        advice.append(f"--shapes {templates} with the sizes it was exported for{multiple}")
    advice.append("--calib with real inputs (an .npz, or a .py script whose load_data() yields feeds)")
    unruled = [spec.name for spec in specs if spec.values is None and spec.dtype.kind in "iub"]
    if unruled:
        advice.append(f"--val-range {unruled[0]}:LO,HI with the values input '{unruled[0]}' takes")
    return f"the original model does not run in ONNX Runtime {where}: {reason}; pass {', or '.join(advice)}"


def _guessed(specs: list[InputSpec], overrides: Mapping[str, tuple[int, ...]]) -> set[str]:
    return {spec.name for spec in specs if spec.name not in overrides and spec.shape is not None
            and any(not isinstance(dim, int) for dim in spec.shape)}


def _shapes_text(shapes: Mapping[str, tuple[int, ...]], names: set[str]) -> str:
    return _first((f"'{name}' {_dims(shape)}" for name, shape in shapes.items() if name in names), ", ")


def _first(items, separator: str = ",", count: int = 4) -> str:
    """The first `count` items joined (an LLM's 60 cache inputs would not fit one line)."""
    items = list(items)
    more = f"{separator}... ({len(items) - count} more)" if len(items) > count else ""
    return separator.join(items[:count]) + more


def _dims(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"
