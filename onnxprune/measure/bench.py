"""`onnxprune bench` as a library: latency per execution provider, size, FLOPs and peak memory of models.

Models are timed interleaved in one process (see `latency.measure_callables`), one execution
provider at a time; peak memory comes from a child process per model and provider (`memory`).
The first model is the reference of the speedups.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..check import runtime
from ..check.inputs import random_feeds
from ..check.stats import model_stats
from ..check.validate import validation_inputs
from ..errors import InvalidModelError, InvalidOptionError, ValidationError
from ..io.files import model_bytes
from ..io.model import Model
from . import latency, memory, trt

PROVIDERS = {"cpu": runtime.CPU, "cuda": runtime.CUDA, "tensorrt": runtime.TENSORRT}
TRT_PYTHON = "tensorrt-python"  # rows timed with TensorRT's own Python API, not ONNX Runtime
TIMING = {
    "host": "wall time of InferenceSession.run with inputs and outputs in host memory",
    "device": "wall time of run_with_iobinding with inputs and outputs already on the GPU",
    "engine": "wall time of execute_async_v3 + stream synchronize, inputs already on the GPU",
}


@dataclass
class BenchOptions:
    providers: list[str] = field(default_factory=lambda: ["cpu"])
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    runs: int = 20
    warmup: int = 3
    threads: int | None = None  # intra-op threads; None: ONNX Runtime's default
    seed: int = 0
    fp16: bool = False  # TensorRT only
    sparse: bool | None = None  # TensorRT sparse kernels; None: when the model's metadata says 2:4
    memory: bool = True
    tensorrt_python: bool = True  # with 'tensorrt': also time with TensorRT's Python API when it imports

    def check(self) -> None:
        if not self.providers:
            raise InvalidOptionError("--provider: give at least one of cpu, cuda, tensorrt")
        for name in self.providers:
            if name not in PROVIDERS:
                raise InvalidOptionError(f"--provider '{name}' is unknown (choose from {', '.join(PROVIDERS)})")
        self.providers = list(dict.fromkeys(self.providers))
        if self.runs < 1:
            raise InvalidOptionError(f"--runs must be at least 1, got {self.runs}")
        if self.warmup < 0:
            raise InvalidOptionError(f"--warmup must be zero or more, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise InvalidOptionError(f"--threads must be a positive integer, got {self.threads}")


@dataclass
class _Entry:
    """One model, ready to run: its report entry and the feed every provider times it on."""

    label: str
    path: Path
    info: dict[str, Any]
    feed: dict[str, np.ndarray]
    dynamic: dict[str, tuple[int, ...]]  # inputs with symbolic dims, at their bench shape
    sparse: bool


def bench(
    paths: Sequence[str | os.PathLike[str]],
    options: BenchOptions | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Benchmark `paths` (the first is the reference); returns what `--json` writes."""
    options = options or BenchOptions()
    options.check()
    if not paths:
        raise InvalidOptionError("give at least one model to benchmark")
    plan = provider_plan(options)
    _check_runnable(plan)
    entries = [_prepare(path, label, options, log) for path, label in zip(paths, _labels(paths), strict=True)]
    # Logged once all are read, so a model that cannot be read gives one error line and nothing else.
    log(f"loaded {', '.join(entry.label for entry in entries)}")
    result: dict[str, Any] = {
        "kind": "onnxprune.bench",
        "schema_version": 1,
        "onnxruntime_version": ort.__version__,
        "available_providers": runtime.available_providers(),
        "settings": {**asdict(options), "shapes": {k: list(v) for k, v in options.shapes.items()}},
        "reference": entries[0].label,
        "models": [entry.info for entry in entries],
        "providers": plan,
        "results": [],
        "timing": TIMING,
        "memory_includes": memory.INCLUDES,
        "notes": [],
    }
    if options.fp16 and not {"tensorrt"} & set(options.providers):
        result["notes"].append("--fp16 only affects TensorRT; the other providers ran in the model's precision")
    with tempfile.TemporaryDirectory(prefix="onnxprune-bench-") as cache:
        for entry in plan:
            if not entry["available"]:
                continue
            if entry["provider"] == TRT_PYTHON:
                rows = _bench_tensorrt_python(entry, entries, options, log)
            else:
                rows = _bench_ort(entry, entries, options, Path(cache), log)
            if rows is None:
                continue
            result["results"] += rows
    _check_runnable(plan)  # a provider ORT lists may still fail to start (drivers, libraries)
    if "tensorrt" in options.providers:
        result["tensorrt_python"] = next(
            ({"available": e["available"], "reason": e["reason"]} for e in plan if e["provider"] == TRT_PYTHON),
            {"available": False, "reason": "not asked (tensorrt_python=False)"})
    return result


def _check_runnable(plan: list[dict[str, Any]]) -> None:
    if not any(entry["available"] for entry in plan):
        reasons = "; ".join(f"{entry['provider']}: {entry['reason']}" for entry in plan)
        raise InvalidOptionError(f"--provider: nothing can run here ({reasons})")


def provider_plan(options: BenchOptions) -> list[dict[str, Any]]:
    """What will run: one entry per provider asked (plus TensorRT's Python API), available or why not."""
    available = runtime.available_providers()
    plan = []
    for name in options.providers:
        ep = PROVIDERS[name]
        reason = None if ep in available else (
            f"{ep} is not in this onnxruntime {ort.__version__} (available: {', '.join(available)}); "
            "install onnxruntime-gpu for cuda and tensorrt")
        plan.append({"provider": name, "execution_provider": ep, "available": reason is None, "reason": reason})
        if name == "tensorrt" and options.tensorrt_python:
            ok, why = trt.tensorrt_available()
            plan.append({"provider": TRT_PYTHON, "execution_provider": None, "available": ok,
                         "reason": None if ok else why, "detail": why if ok else None})
    return plan


def _labels(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    # File names when they tell the models apart, paths where two folders hold the same name,
    # and a counter for a file given twice.
    folders: dict[str, set[str]] = {}
    for path in paths:
        folders.setdefault(Path(path).name, set()).add(str(path))
    names = [str(path) if len(folders[Path(path).name]) > 1 else Path(path).name for path in paths]
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels


def _prepare(path: str | os.PathLike[str], label: str, options: BenchOptions, log: Callable[[str], None]) -> _Entry:
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"model '{path}' does not exist" if not path.exists() else f"'{path}' is not a file")
    model = Model.load(path, any_opset=True)
    specs, shapes, notes = validation_inputs(model, options.shapes, options.seed)
    feed = random_feeds(specs, shapes, options.seed)[0]
    stats = model_stats(model, shapes)
    metadata = trt.sparsity_metadata(model.proto)
    sparse = trt.has_2_4_weights(metadata) if options.sparse is None else options.sparse
    first = specs[0].name if specs else None
    batch = shapes[first][0] if first and shapes[first] else 1
    info = {
        "label": label,
        "path": str(path),
        "input_shapes": {name: list(shape) for name, shape in shapes.items()},
        "batch": int(batch),
        "params": stats["params"],
        "flops": stats["flops"],
        "gflops": round(stats["flops"] / 1e9, 6),
        "flops_by_op": stats["flops_by_op"],
        "flops_unknown_nodes": stats["flops_unknown_nodes"],
        "weight_bytes": stats["weight_bytes"],
        "bytes_on_disk": model_bytes(path),
        "sparsity": metadata,
        "tensorrt_sparse": sparse,
        "notes": notes,
    }
    dynamic = {spec.name: shapes[spec.name] for spec in specs
               if spec.shape is None or any(not isinstance(dim, int) for dim in spec.shape)}
    return _Entry(label, path, info, feed, dynamic, sparse)


def _provider_options(name: str, index: int, entry: _Entry, options: BenchOptions, cache: Path) -> dict[str, Any]:
    if name == "tensorrt":
        # One cache folder per model: the memory child then loads the engine the timing built.
        folder = cache / f"model{index}"
        folder.mkdir(exist_ok=True)
        return trt.ort_tensorrt_options(options.fp16, entry.sparse, entry.dynamic, folder)
    return {}


def _bench_ort(plan_entry: dict[str, Any], entries: list[_Entry], options: BenchOptions, cache: Path,
               log: Callable[[str], None]) -> list[dict[str, Any]] | None:
    name, ep = plan_entry["provider"], plan_entry["execution_provider"]
    provider_options = {entry.label: _provider_options(name, index, entry, options, cache)
                        for index, entry in enumerate(entries)}
    sessions, runners, io = {}, {}, {}
    try:
        for entry in entries:
            log(f"{name}: loading {entry.label}")
            sessions[entry.label] = runtime.create_provider_session(
                entry.path, ep, provider_options[entry.label], options.threads, interleaved=len(entries) > 1)
    except runtime.ProviderUnusableError as exc:
        plan_entry.update(available=False, reason=str(exc))
        return None
    for entry in entries:
        runners[entry.label], io[entry.label] = _ort_runner(sessions[entry.label], entry.feed, ep, entry.label)
    log(f"{name}: timing {len(entries)} model(s), {options.warmup} warm-up + {options.runs} runs each")
    timing = latency.measure_callables(runners, warmup=options.warmup, runs=options.runs)
    del runners, sessions  # free the sessions before the memory children start
    rows = []
    for entry in entries:
        chain = runtime.provider_chain(ep, provider_options[entry.label])
        if options.memory:
            log(f"{name}: peak memory of {entry.label}")
            peak = memory.peak_memory(entry.path, entry.feed, chain, options.threads)
        else:
            peak = {"available": False, "reason": "not measured (--no-memory)"}
        shown = {k: v for k, v in provider_options[entry.label].items() if k != "trt_engine_cache_path"}
        rows.append(_row(entry, name, timing, entries[0].label, io[entry.label], peak, {"provider_options": shown}))
    return rows


def _ort_runner(session: ort.InferenceSession, feed: dict[str, np.ndarray], ep: str,
                label: str) -> tuple[Callable[[], object], str]:
    """Host feeds on the CPU; on a GPU, inputs and outputs bound on the device so copies are not timed."""
    def on_host() -> object:
        return session.run(None, feed)

    if ep == runtime.CPU:
        return on_host, "host"
    try:
        binding = session.io_binding()
        for name, array in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0))
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda")
    # Any failure to bind on the device (a build without CUDA memory) falls back to host feeds.
    except Exception:
        return on_host, "host"

    def on_device() -> object:
        return session.run_with_iobinding(binding)

    return on_device, "device"


def _bench_tensorrt_python(plan_entry: dict[str, Any], entries: list[_Entry], options: BenchOptions,
                           log: Callable[[str], None]) -> list[dict[str, Any]] | None:
    engines, runners = {}, {}
    try:
        for entry in entries:
            log(f"{TRT_PYTHON}: building {entry.label} (fp16={options.fp16}, sparse={entry.sparse})")
            engines[entry.label] = trt.build_engine(entry.path, options.fp16, entry.sparse, options.shapes)
            runners[entry.label] = trt.EngineRunner(engines[entry.label], entry.feed)
        log(f"{TRT_PYTHON}: timing {len(entries)} engine(s)")
        timing = latency.measure_callables(runners, warmup=options.warmup, runs=options.runs)
    # An optional extra: a model TensorRT cannot parse or build must not cost the other results.
    except ValidationError as exc:
        plan_entry.update(available=False, reason=f"failed: {exc}")
        return None
    finally:
        for runner in runners.values():
            runner.close()
    peak = {"available": False, "reason": "not measured for TensorRT's Python API runner"}
    return [_row(entry, TRT_PYTHON, timing, entries[0].label, "engine", peak,
                 {"engine": engines[entry.label].to_dict()}) for entry in entries]


def _row(entry: _Entry, provider: str, timing: dict[str, latency.LatencyStats], reference: str, io: str,
         peak: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    stats = timing[entry.label]
    return {
        "model": entry.label,
        "provider": provider,
        "latency_ms": stats.to_dict(),
        "throughput_per_s": round(latency.throughput(stats, entry.info["batch"]), 3),
        "speedup": round(latency.speedup(timing[reference], stats), 4),
        "io": io,
        "memory": peak,
        **extra,
    }


# --- the table ----------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}"


def format_table(result: dict[str, Any]) -> str:
    """One row per model x provider; skipped providers as one row each, with the reason."""
    models = {model["label"]: model for model in result["models"]}
    width = max(12, *(len(label) for label in models))
    header = (f"{'model':{width}}  {'provider':15} {'median ms':>10} {'p90 ms':>10} {'samples/s':>11} "
              f"{'speedup':>8} {'params':>10} {'GFLOPs':>9} {'MB disk':>8} {'peak RSS MB':>12}")
    lines = [header, "-" * len(header)]
    for row in result["results"]:
        model, times = models[row["model"]], row["latency_ms"]
        rss = row["memory"].get("peak_rss_bytes") if row["memory"].get("available") else None
        lines.append(
            f"{row['model']:{width}}  {row['provider']:15} {times['median_ms']:>10.3f} {times['p90_ms']:>10.3f} "
            f"{row['throughput_per_s']:>11.1f} {_speedup(row['speedup']):>8} {model['params']:>10,} "
            f"{model['gflops']:>9.3f} {_mb(model['bytes_on_disk']):>8} {_mb(rss):>12}"
        )
    for entry in result["providers"]:
        if not entry["available"]:
            lines.append(f"{'-':{width}}  {entry['provider']:15} skipped: {entry['reason']}")
    lines.append(f"reference: {result['reference']}; speedup = reference median / model median, per provider")
    notes: dict[str, list[str]] = {}  # the same guessed dim is usually noted for every model
    for model in result["models"]:
        for note in model["notes"]:
            notes.setdefault(note, []).append(model["label"])
    for note, labels in notes.items():
        lines.append(f"note: {note}" if len(labels) == len(models) else f"note ({', '.join(labels)}): {note}")
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def _speedup(value: float | None) -> str:
    return "-" if value is None or value == float("inf") else f"{value:.2f}x"
