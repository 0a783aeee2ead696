"""TensorRT's Python API (8.6+, written for 10): build an engine from ONNX, see which layers run sparse, time it.

Everything here is guarded: without `tensorrt` (or without torch-with-CUDA / cuda-python for device
buffers) `tensorrt_available()` says why, `compare_dense_sparse` returns `unavailable_report()`, and
the other entry points raise `TensorRTUnavailableError` (a ValidationError: one line, exit 2).
The pure-Python parts (log and inspector parsing, ONNX Runtime TensorRT EP options, the model's
sparsity metadata) work everywhere.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..check import compare
from ..check.inputs import model_input_specs, random_feeds, resolve_shapes
from ..errors import ValidationError
from ..sparsity import METADATA_KEY as SPARSITY_METADATA_KEY
from . import latency
from .cuda_buffers import buffer_backend, make_buffers

NOT_INSTALLED = "tensorrt is not installed: ONNX Runtime only"
_MIN_VERSION = (8, 6)  # execute_async_v3 / set_tensor_address / set_input_shape
# What TensorRT logs (INFO) after a build with BuilderFlag.SPARSE_WEIGHTS; "picked" before 8.4.
_ELIGIBLE = re.compile(r"Layers eligible for sparse math:\s*(.*)$")
_PICKED = re.compile(r"TRT inference plan pick(?:s|ed) sparse implementation for layers:\s*(.*)$")


class TensorRTUnavailableError(ValidationError):
    """TensorRT (or a way to allocate CUDA buffers for it) is missing; `report()` says so as JSON."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def report(self) -> dict[str, Any]:
        return {"available": False, "reason": self.reason}


# --- availability -------------------------------------------------------------------------------


def _import_tensorrt() -> tuple[Any, str | None]:
    try:
        import tensorrt
    except ImportError:
        return None, NOT_INSTALLED
    # A broken install (missing libnvinfer, CUDA driver) raises anything from OSError to RuntimeError.
    except Exception as exc:
        return None, f"tensorrt failed to import: {_first_line(exc)}"
    return tensorrt, None


def _version(trt: Any) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", str(trt.__version__))[:2])


def tensorrt_available() -> tuple[bool, str]:
    """(True, 'tensorrt X with Y buffers') or (False, why not)."""
    trt, reason = _import_tensorrt()
    if trt is None:
        return False, reason or NOT_INSTALLED
    if _version(trt) < _MIN_VERSION:
        return False, f"tensorrt {trt.__version__} is too old: onnxprune needs 8.6 or newer"
    backend, reason = buffer_backend()
    if backend is None:
        return False, reason or "no CUDA buffer library"
    return True, f"tensorrt {trt.__version__} with {backend} buffers"


def unavailable_report() -> dict[str, Any] | None:
    """`{"available": false, "reason": ...}` when TensorRT cannot be used here, else None."""
    ok, reason = tensorrt_available()
    return None if ok else {"available": False, "reason": reason}


def _require() -> Any:
    ok, reason = tensorrt_available()
    if not ok:
        raise TensorRTUnavailableError(reason)
    trt, _ = _import_tensorrt()
    return trt


# --- pure helpers (tested without TensorRT) -----------------------------------------------------


def parse_sparsity_log(messages: Iterable[str]) -> dict[str, list[str]]:
    """Layers TensorRT found eligible for sparse math and those it picked a sparse kernel for."""
    found: dict[str, list[str]] = {"eligible": [], "picked": []}
    for message in messages:
        for line in str(message).splitlines():
            for key, pattern in (("eligible", _ELIGIBLE), ("picked", _PICKED)):
                match = pattern.search(line.strip())
                if match:
                    for layer in (part.strip() for part in match.group(1).split(",")):
                        if layer and layer not in found[key]:
                            found[key].append(layer)
    return found


def sparse_layers_from_inspector(information: str | Mapping[str, Any]) -> list[str]:
    """Layers whose tactic is a sparse kernel, from the engine inspector's JSON (DETAILED verbosity).

    A heuristic: TensorRT names its 2:4 kernels '..._sparse_...'. The builder log is the authority.
    """
    data = json.loads(information) if isinstance(information, str) else information
    names = []
    for layer in data.get("Layers", []):
        # Without ProfilingVerbosity.DETAILED a layer is only its name: no tactic to look at.
        if isinstance(layer, Mapping) and "sparse" in str(layer.get("TacticName", "")).lower():
            names.append(str(layer.get("Name", "?")))
    return names


def sparsity_metadata(model: str | os.PathLike[str] | onnx.ModelProto) -> dict[str, Any] | None:
    """The `onnxprune.sparsity` metadata entry ({"pattern": "2:4", "weights": [...]}) or None."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == SPARSITY_METADATA_KEY:
            try:
                value = json.loads(entry.value)
            except json.JSONDecodeError:
                return {"invalid": True, "reason": f"metadata '{SPARSITY_METADATA_KEY}' is not valid JSON"}
            return value if isinstance(value, dict) else {"invalid": True, "reason": "not a JSON object"}
    return None


def has_2_4_weights(metadata: Mapping[str, Any] | None) -> bool:
    return bool(metadata) and metadata.get("pattern") == "2:4" and bool(metadata.get("weights"))


def ort_tensorrt_options(
    fp16: bool,
    sparse: bool,
    dynamic_shapes: Mapping[str, tuple[int, ...]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Provider options of ONNX Runtime's TensorRT EP: precision, sparsity, a profile at the bench shapes.

    `dynamic_shapes` (inputs with symbolic dims only) become min = opt = max, so TensorRT builds for
    exactly the shape that is timed. A cache folder lets the memory child reuse the timed engine.
    """
    options: dict[str, Any] = {"trt_fp16_enable": bool(fp16), "trt_sparsity_enable": bool(sparse)}
    if dynamic_shapes:
        text = ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in dynamic_shapes.items())
        options.update(trt_profile_min_shapes=text, trt_profile_opt_shapes=text, trt_profile_max_shapes=text)
    if cache_dir is not None:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=os.fspath(cache_dir))
    return options


def engine_inputs(
    onnx_path: str | os.PathLike[str], shapes: Mapping[str, tuple[int, ...]] | None, seed: int = 0
) -> tuple[dict[str, tuple[int, ...]], dict[str, np.ndarray]]:
    """Concrete input shapes (symbolic dims from `shapes` or defaults) and one seeded random feed."""
    specs = model_input_specs(onnx.load(os.fspath(onnx_path), load_external_data=False))
    resolved, _ = resolve_shapes(specs, dict(shapes or {}))
    return resolved, random_feeds(specs, resolved, seed)[0]


# --- engines ------------------------------------------------------------------------------------


@dataclass
class EngineInfo:
    onnx_path: str
    fp16: bool
    sparse: bool
    shapes: dict[str, list[int]]
    tensorrt_version: str
    build_seconds: float
    engine_bytes: int
    eligible_sparse_layers: list[str]
    sparse_layers: list[str]  # from the builder log: the authority
    sparse_tactic_layers: list[str]  # from the engine inspector: tactic names with 'sparse'
    warnings: list[str] = field(default_factory=list)
    engine: Any = field(default=None, repr=False)
    keep_alive: tuple = field(default=(), repr=False)  # runtime and logger must outlive the engine

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("engine", "keep_alive")}


def _capture_logger(trt: Any) -> Any:
    class CaptureLogger(trt.ILogger):
        """Keeps INFO and worse: the sparsity lines are INFO; VERBOSE would be megabytes."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[int, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.INFO):
                self.messages.append((int(severity), msg))

    return CaptureLogger()


def build_engine(
    onnx_path: str | os.PathLike[str],
    fp16: bool = False,
    sparse: bool = False,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> EngineInfo:
    """Parse `onnx_path` with trt.OnnxParser and build an engine (FP16 / SPARSE_WEIGHTS as asked)."""
    trt = _require()
    path = Path(onnx_path)
    resolved, _ = engine_inputs(path, shapes)
    logger = _capture_logger(trt)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT 10 (flag 0); 8.x must ask for it.
    flags = 0 if _version(trt) >= (10,) else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):  # from a file so external data next to it is found
        errors = [str(parser.get_error(index)) for index in range(parser.num_errors)]
        raise ValidationError(f"TensorRT cannot parse '{path}': {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile, dynamic = builder.create_optimization_profile(), False
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if any(dim < 0 for dim in tuple(tensor.shape)):
            if tensor.name not in resolved:
                raise ValidationError(f"TensorRT input '{tensor.name}' of '{path}' is dynamic but has no shape")
            shape = resolved[tensor.name]
            profile.set_shape(tensor.name, shape, shape, shape)
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        errors = [msg for severity, msg in logger.messages if severity <= int(trt.ILogger.Severity.ERROR)]
        raise ValidationError(f"TensorRT failed to build '{path}': {errors[-1] if errors else 'no error logged'}")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise ValidationError(f"TensorRT could not deserialize the engine it built for '{path}'")
    information = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    found = parse_sparsity_log(msg for _, msg in logger.messages)
    return EngineInfo(
        onnx_path=str(path), fp16=fp16, sparse=sparse, shapes={k: list(v) for k, v in resolved.items()},
        tensorrt_version=str(trt.__version__), build_seconds=round(seconds, 3), engine_bytes=int(serialized.nbytes),
        eligible_sparse_layers=found["eligible"], sparse_layers=found["picked"],
        sparse_tactic_layers=sparse_layers_from_inspector(information),
        warnings=[msg for severity, msg in logger.messages if severity == int(trt.ILogger.Severity.WARNING)][:20],
        engine=engine, keep_alive=(runtime, logger),
    )


# --- running ------------------------------------------------------------------------------------


class EngineRunner:
    """One execution context with its inputs on the device; calling it runs the engine once, synchronously."""

    def __init__(self, info: EngineInfo, feed: Mapping[str, np.ndarray]):
        trt = _require()
        engine = info.engine
        self.buffers = make_buffers()
        self.context = engine.create_execution_context()
        self.label = info.onnx_path
        names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
        inputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
        self.outputs_meta: dict[str, tuple[Any, tuple[int, ...], np.dtype]] = {}
        self._held = []
        for name in inputs:  # all input shapes first: output shapes depend on them
            if name not in feed:
                raise ValidationError(f"no data for TensorRT input '{name}' of '{self.label}'")
            array = np.asarray(feed[name]).astype(trt.nptype(engine.get_tensor_dtype(name)), copy=False)
            self.context.set_input_shape(name, array.shape)
            buffer, pointer = self.buffers.from_host(array)
            self._held.append(buffer)
            self.context.set_tensor_address(name, pointer)
        for name in names:
            if name in inputs:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            if any(dim < 0 for dim in shape):
                raise ValidationError(f"TensorRT output '{name}' of '{self.label}' has a data-dependent shape {shape}")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            buffer, pointer = self.buffers.empty(shape, dtype)
            self.outputs_meta[name] = (buffer, shape, dtype)
            self.context.set_tensor_address(name, pointer)
        self.buffers.ready()

    def __call__(self) -> None:
        if not self.context.execute_async_v3(self.buffers.handle):
            raise ValidationError(f"TensorRT failed to run the engine of '{self.label}'")
        self.buffers.synchronize()

    def outputs(self) -> dict[str, np.ndarray]:
        return {name: self.buffers.to_host(buffer, shape, dtype)
                for name, (buffer, shape, dtype) in self.outputs_meta.items()}

    def close(self) -> None:
        self.buffers.close()


def time_engine(
    info: EngineInfo, feed: Mapping[str, np.ndarray], warmup: int = 10, runs: int = 50
) -> latency.LatencyStats:
    """Median/p90 of one engine (host wall time of enqueue + stream synchronize, inputs already on the GPU)."""
    runner = EngineRunner(info, feed)
    try:
        return latency.measure_callables({info.onnx_path: runner}, warmup=warmup, runs=runs)[info.onnx_path]
    finally:
        runner.close()


def compare_dense_sparse(
    dense_path: str | os.PathLike[str],
    sparse_path: str | os.PathLike[str],
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    fp16: bool = True,
    warmup: int = 10,
    runs: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the dense model without and the 2:4 model with SPARSE_WEIGHTS; time both interleaved, compare outputs."""
    missing = unavailable_report()
    if missing is not None:
        return missing
    _, feed = engine_inputs(dense_path, shapes, seed)
    dense = build_engine(dense_path, fp16=fp16, sparse=False, shapes=shapes)
    sparse = build_engine(sparse_path, fp16=fp16, sparse=True, shapes=shapes)
    runners: dict[str, EngineRunner] = {}
    try:
        runners["dense"] = EngineRunner(dense, feed)
        runners["sparse"] = EngineRunner(sparse, feed)
        timing = latency.measure_callables(runners, warmup=warmup, runs=runs)
        for runner in runners.values():
            runner()
        diffs = compare.compare_outputs(runners["dense"].outputs(), runners["sparse"].outputs())
    finally:
        for runner in runners.values():
            runner.close()
    return {
        "available": True,
        "tensorrt_version": dense.tensorrt_version,
        "fp16": fp16,
        "seed": seed,
        "dense": {**dense.to_dict(), "latency_ms": timing["dense"].to_dict()},
        "sparse": {**sparse.to_dict(), "latency_ms": timing["sparse"].to_dict()},
        "speedup": round(latency.speedup(timing["dense"], timing["sparse"]), 4),
        "outputs": [diff.to_dict() for diff in diffs],
    }


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
