"""Thin ONNX Runtime wrapper that turns its failures into one-line, user-facing errors."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from onnxprune.errors import InvalidOptionError, ValidationError

CPU = "CPUExecutionProvider"
# ORT's own log never reaches the user: its warnings (unused initializers in pruned models) would
# bury the report, and its errors are coloured, timestamped copies of what the exception says, which
# onnxprune already turns into one line. ERROR (3) is not enough: a failing run logs at ERROR, so
# only FATAL (4) passes. The default logger covers sessions created elsewhere without options.
QUIET_LOG_LEVEL = 4
ort.set_default_logger_severity(QUIET_LOG_LEVEL)


def session_options(threads: int | None = None, interleaved: bool = False) -> ort.SessionOptions:
    """SessionOptions with ORT's logger silenced and, when given, `threads` as the whole CPU budget.

    `interleaved`: the session is timed in turn with others in one process, so its intra-op threads do
    not spin when idle: ORT's spinning threads of the session not running took cores from the one being
    timed, and on 2 cores the same PicoDet pair measured 0.50-0.69 of the original (0.46-0.48 without
    spinning, 0.41-0.42 at one thread)."""
    options = ort.SessionOptions()
    options.log_severity_level = QUIET_LOG_LEVEL
    if interleaved:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        if threads < 1:
            raise InvalidOptionError(f"--threads must be a positive integer, got {threads}")
        options.intra_op_num_threads = threads
        # Keep inter-op parallelism off so `threads` is the whole CPU budget of the run.
        options.inter_op_num_threads = 1
    return options


def available_providers() -> list[str]:
    """Execution providers this ONNX Runtime build can use, in ORT's priority order."""
    return list(ort.get_available_providers())


def create_session(
    path: str | os.PathLike[str],
    providers: list[str] | None = None,
    threads: int | None = None,
    interleaved: bool = False,
) -> ort.InferenceSession:
    """Load `path` into ONNX Runtime (CPU unless `providers` says otherwise); `interleaved`: see
    session_options."""
    providers = list(providers) if providers else [CPU]
    available = available_providers()
    for provider in providers:
        if provider not in available:
            raise InvalidOptionError(
                f"--providers: '{provider}' is not available in this onnxruntime (available: {', '.join(available)})"
            )
    options = session_options(threads, interleaved)
    path = os.fspath(path)
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers)
    # ORT's pybind exceptions (Fail, InvalidGraph, NoSuchFile, ...) share no base but Exception.
    except Exception as exc:
        raise ValidationError(
            f"onnxruntime cannot load '{path}': {first_line(exc)}"
        ) from exc


def run(
    session: ort.InferenceSession,
    feed: Mapping[str, np.ndarray],
    *,
    label: str | None = None,
) -> dict[str, np.ndarray]:
    """Run once and return every output by name; `label` names the model in error messages."""
    names = [output.name for output in session.get_outputs()]
    try:
        values = session.run(names, dict(feed))
    except Exception as exc:
        what = f"'{label}'" if label else "the model"
        raise ValidationError(
            f"onnxruntime failed to run {what}: {first_line(exc)}"
        ) from exc
    return dict(zip(names, values, strict=True))


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception message (ORT's can run to pages)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# --- execution providers other than the CPU (additive: used by `onnxprune bench`) -------------

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# TensorRT hands nodes it cannot build to CUDA, and CUDA to the CPU, as ORT's docs recommend.
_FALLBACKS = {TENSORRT: [CUDA, CPU], CUDA: [CPU], CPU: []}

ProviderSpec = str | tuple[str, dict[str, object]]


def provider_chain(provider: str, options: Mapping[str, object] | None = None) -> list[ProviderSpec]:
    """The providers list for ORT: `provider` (with its options) first, then its fallbacks."""
    first: ProviderSpec = (provider, dict(options)) if options else provider
    return [first, *_FALLBACKS.get(provider, [CPU])]


def create_provider_session(
    path: str | os.PathLike[str],
    provider: str,
    options: Mapping[str, object] | None = None,
    threads: int | None = None,
    interleaved: bool = False,
) -> ort.InferenceSession:
    """Like `create_session`, on `provider` with provider options; refuses a silent fallback.

    ORT falls back to the CPU with only a warning when a GPU provider cannot load (missing CUDA
    libraries): a benchmark would then time the CPU under the GPU's name.
    """
    if provider not in available_providers():
        raise InvalidOptionError(
            f"--provider: '{provider}' is not available in this onnxruntime "
            f"(available: {', '.join(available_providers())})"
        )
    session_settings = session_options(threads, interleaved)  # `options` are the provider's own
    path = os.fspath(path)
    try:
        session = ort.InferenceSession(path, sess_options=session_settings,
                                       providers=provider_chain(provider, options))
    except Exception as exc:
        raise ValidationError(f"onnxruntime cannot load '{path}' on {provider}: {first_line(exc)}") from exc
    used = session.get_providers()
    if not used or used[0] != provider:
        raise ProviderUnusableError(
            f"onnxruntime could not start {provider} for '{path}' and fell back to {', '.join(used) or 'nothing'}"
        )
    return session


class ProviderUnusableError(ValidationError):
    """The provider is listed by ORT but could not be started (drivers, libraries)."""
