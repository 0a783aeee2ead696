"""The check at the end of a prune: run original and result in ONNX Runtime on the same inputs."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import helper

from ..calib.data import load_calibration
from ..errors import InvalidOptionError, OnnxPruneError, ValidationError
from ..io import runtime_config
from ..io.files import model_bytes
from ..io.model import Model
from ..measure import latency
from ..report import progress
from . import compare, first_run, guards, runtime
from .compare import OutputAccumulator
from .fidelity import pooled_outputs
from .gates import Gates, evaluate, failure_line
from .inputs import InputSpec, model_input_specs, random_feeds, resolve_shapes
from .value_rules import attach_value_rules


def validation_inputs(model: Model, shapes: dict[str, tuple[int, ...]], seed: int, *,
                      feeds: list[dict[str, np.ndarray]] | None = None, feeds_label: str = "the given inputs",
                      val_ranges: dict[str, tuple[float, float]] | None = None, probe: bool = True):
    """What to feed `model`: its input specs (with the values each accepts), a concrete shape per input
    and notes on the dims that were chosen.

    Shapes come from --shapes (`shapes`), else from `feeds` (--calib, --load-inputs; batch dims as
    1, so statistics count one sample), else from check.dim_choice. With `probe` the ORIGINAL model
    (`model` as loaded from its file) runs once on them (check.first_run): a choice it does not run
    at is replaced by one it runs at, or the run stops with one line that says what to pass.
    """
    specs = [spec for spec in model_input_specs(model.proto) if not model.is_weight(spec.name)]
    specs = attach_value_rules(model, specs, val_ranges)
    if not feeds:
        resolved, notes = first_run.choose_shapes(model, specs, shapes, seed, probe=probe)
        return specs, resolved, notes
    given = {spec.name: _per_sample(spec, np.shape(feeds[0][spec.name])) for spec in specs
             if spec.name not in shapes and spec.name in feeds[0]}
    resolved, notes = resolve_shapes(specs, {**given, **shapes})
    if probe:
        first_run.check_feed(model, feeds[0], feeds_label)
    return specs, resolved, notes


def _per_sample(spec: InputSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A feed's shape with its symbolic batch dims as 1 (axis 0, or named like a batch)."""
    declared = spec.shape or ()
    return tuple(1 if axis < len(declared) and not isinstance(declared[axis], int) and (
        axis == 0 or "batch" in str(declared[axis]).lower()) else size for axis, size in enumerate(shape))


# Above this many bytes (both models, external data included) the two ONNX Runtime sessions are
# not held together: ORT copies every weight into its own memory (about 1.4x the file for the
# synthetic stack), so a 14 GB model and its pruned copy side by side would need ~30 GB.
INTERLEAVE_MAX_BYTES = 2 * 2**30


def _session(name: str, path: str | os.PathLike, interleaved: bool = False) -> ort.InferenceSession:
    try:
        return runtime.create_session(path, interleaved=interleaved)
    except OnnxPruneError as exc:
        if name != "original":
            raise
        # Custom ops (TensorRT plugins, contrib ops this ORT lacks): nothing to compare against here.
        raise ValidationError(f"{exc}; the original cannot run here, so nothing was written: prune with "
                              "--no-validate to skip the comparison") from None


def compare_models(
    original: str | os.PathLike,
    pruned: str | os.PathLike,
    specs,
    resolved: dict[str, tuple[int, ...]],
    seed: int,
    runs: int = 20,
    samples: int = 2,
    feeds: list[dict[str, np.ndarray]] | None = None,
    trims: dict[tuple[str, int], list[int]] | None = None,
    pooled: Collection[str] = (),
) -> dict[str, Any]:
    """Errors over `samples` random feeds (or the given ones), per output and per channel, and the
    latency of both models. `trims`: KV-cache heads the pruned model dropped (runtime_config.cache_trims).
    `pooled`: outputs that are embeddings (fidelity.pooled_outputs), never judged as class scores.

    Small models are timed interleaved in one process. When both together exceed
    INTERLEAVE_MAX_BYTES, one session exists at a time: the original runs every feed and is timed,
    its outputs are kept and its session freed, then the pruned model does the same.
    """
    # Given feeds (--calib, --load-inputs) replace random ones: a model may need real values.
    feeds = list(feeds) if feeds else random_feeds(specs, resolved, seed, count=samples)
    paths = {"original": original, "pruned": pruned}
    # KV caches that lost heads: the pruned model takes the original's past without them, and its
    # present outputs are compared with the original's kept heads.
    trims = trims or {}
    feeds_of = {"original": feeds, "pruned": [runtime_config.trim(feed, trims) for feed in feeds]}
    interleaved = model_bytes(original) + model_bytes(pruned) <= INTERLEAVE_MAX_BYTES
    outputs: dict[str, list[dict[str, np.ndarray]]] = {}
    if interleaved:
        sessions = {name: _session(name, path, interleaved=True) for name, path in paths.items()}
        for name, session in sessions.items():
            outputs[name] = [runtime.run(session, feed, label=name) for feed in feeds_of[name]]
        timing = latency.measure_interleaved(sessions, {name: feeds_of[name][0] for name in sessions}, runs=runs)
        del sessions
    else:
        timing = {}
        for name, path in paths.items():
            session = _session(name, path)
            outputs[name] = [runtime.run(session, feed, label=name) for feed in feeds_of[name]]
            timing.update(latency.measure_interleaved({name: session}, {name: feeds_of[name][0]}, runs=runs))
            del session
    outputs["original"] = [runtime_config.trim(output, trims) for output in outputs["original"]]
    # Accumulated over every feed: maxima over all, cosines (whole and per channel) of the concatenation.
    diffs = compare.compare_batches(zip(outputs["original"], outputs["pruned"]), pooled)
    return {
        "outputs": [diff.to_dict() for diff in diffs],
        "samples": len(feeds),
        "latency_ms": {name: stats.to_dict() for name, stats in timing.items()},
        "latency_mode": "interleaved" if interleaved else "sequential",
        "speedup": round(latency.speedup(timing["original"], timing["pruned"]), 4),
    }


# ---------------------------------------------------------------- `onnxprune validate`
# The runner side of the validate command: what the two models take and give, the inputs to feed
# them, and one pass over those inputs feeding compare.OutputAccumulator. Verdicts are gates.py's.

DEFAULT_RANDOM_BATCHES = 4
DEFAULT_CALIB_BATCH = 8


@dataclass(frozen=True)
class TensorSignature:
    """A graph output as declared: dtype None when untyped, rank None when no shape is declared."""

    name: str
    dtype: np.dtype | None
    rank: int | None
    pooled: bool = False  # made by pooling or normalization (fidelity.pooled_outputs): an embedding, not scores


@dataclass
class ValidateOptions:
    """Inputs and gates of one `onnxprune validate` run (see `run_validation`)."""

    gates: Gates = field(default_factory=Gates)
    calib: str | None = None
    calib_batch: int | None = None
    samples: int | None = None
    seed: int | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    val_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    classifiers: list[str] = field(default_factory=list)
    channel_axes: dict[str, int] = field(default_factory=dict)  # --channel-axis ("" = every output)


def parse_channel_axes(values: list[str] | tuple[str, ...]) -> dict[str, int]:
    """`--channel-axis [OUTPUT:]AXIS` values (an integer, negative from the end); "" keys the default."""
    axes: dict[str, int] = {}
    for raw in values:
        name, _, number = raw.strip().rpartition(":")
        name = name.strip()
        try:
            axis = int(number)
        except ValueError:
            raise InvalidOptionError(f"--channel-axis: '{raw}' is not [OUTPUT:]AXIS (an integer, e.g. 1 "
                                     "or y:-1)") from None
        if name in axes:
            which = f"output '{name}'" if name else "the default axis"
            raise InvalidOptionError(f"--channel-axis: {which} is given more than once")
        axes[name] = axis
    return axes


def model_signature(path: str | os.PathLike) -> tuple[list[InputSpec], list[TensorSignature]]:
    """The inputs to feed (graph inputs that are not weights) and the outputs of the model at `path`."""
    specs, outputs, _ = _signature_and_metadata(path)
    return specs, outputs


def _signature_and_metadata(path: str | os.PathLike) -> tuple[list[InputSpec], list[TensorSignature], dict]:
    """`model_signature` and the model's metadata_props (for guards.demo_marker)."""
    # Model.load, not just the protobuf: a cycle or a duplicate name gets onnxprune's own one-line error.
    loaded = Model.load(path, any_opset=True)
    weights = set(loaded.weights)
    specs = [spec for spec in model_input_specs(loaded.proto) if spec.name not in weights]
    outputs, pooled = [], pooled_outputs(loaded.proto.graph)
    for value in loaded.proto.graph.output:
        dtype = rank = None
        if value.type.WhichOneof("value") == "tensor_type":
            tensor_type = value.type.tensor_type
            if tensor_type.elem_type:
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
            if tensor_type.HasField("shape"):
                rank = len(tensor_type.shape.dim)
        outputs.append(TensorSignature(value.name, dtype, rank, value.name in pooled))
    return specs, outputs, {prop.key: prop.value for prop in loaded.proto.metadata_props}


def check_signatures(reference: str | os.PathLike, ref_sig: tuple[list, list],
                     pruned: str | os.PathLike, got_sig: tuple[list, list]) -> None:
    """Raise one ValidationError line when the two models' inputs or outputs differ in name, dtype or rank."""
    ref_name, got_name = f"'{Path(reference).name}'", f"'{Path(pruned).name}'"
    problems: list[str] = []
    for kind, ref_items, got_items in (("input", ref_sig[0], got_sig[0]), ("output", ref_sig[1], got_sig[1])):
        ref_by, got_by = {i.name: i for i in ref_items}, {i.name: i for i in got_items}
        problems += [f"{kind} '{n}' of {ref_name} is missing from {got_name}" for n in ref_by if n not in got_by]
        problems += [f"{kind} '{n}' of {got_name} is not in {ref_name}" for n in got_by if n not in ref_by]
        for name in (n for n in ref_by if n in got_by):
            a, b = ref_by[name], got_by[name]
            if a.dtype is not None and b.dtype is not None and a.dtype != b.dtype:
                problems.append(f"{kind} '{name}' is {a.dtype} in {ref_name} but {b.dtype} in {got_name}")
            ranks = [_rank(item) for item in (a, b)]
            if None not in ranks and ranks[0] != ranks[1]:
                problems.append(f"{kind} '{name}' has rank {ranks[0]} in {ref_name} but {ranks[1]} in {got_name}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValidationError(f"the models cannot be compared: {'; '.join(problems[:3])}{more}")


def _rank(item: InputSpec | TensorSignature) -> int | None:
    if isinstance(item, TensorSignature):
        return item.rank
    return None if item.shape is None else len(item.shape)


def parse_val_ranges(values: list[str] | tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """`--val-range` values `[NAME:]LO,HI` (brackets optional, as Polygraphy's `x:[0,1]`); "" keys the default."""
    ranges: dict[str, tuple[float, float]] = {}
    for raw in values:
        name, _, bounds = raw.strip().rpartition(":")
        name = name.strip()
        parts = bounds.strip().strip("[]()").split(",")
        try:
            low, high = (float(part) for part in parts)
        except ValueError:
            raise InvalidOptionError(f"--val-range: '{raw}' is not [NAME:]LO,HI (e.g. 0,1 or x:-1,1)") from None
        if not (np.isfinite(low) and np.isfinite(high)) or low > high:
            raise InvalidOptionError(f"--val-range: '{raw}' needs finite bounds with LO <= HI")
        if name in ranges:
            which = f"input '{name}'" if name else "the default range"
            raise InvalidOptionError(f"--val-range: {which} is given more than once")
        ranges[name] = (low, high)
    return ranges


def random_inputs(specs: list[InputSpec], shapes: dict[str, tuple[int, ...]], seed: int, count: int,
                  ranges: dict[str, tuple[float, float]]) -> list[dict[str, np.ndarray]]:
    """`random_feeds`, with inputs that have a --val-range drawn uniformly from [LO, HI] instead.

    Integer and bool inputs take the bounds truncated to integers, both ends included (Polygraphy's
    rule). Each ranged array has its own generator seeded by (seed, batch, input index), so feeds
    are reproducible and do not depend on --samples.
    """
    known = [spec.name for spec in specs]
    for name in ranges:
        if name and name not in known:
            raise InvalidOptionError(f"--val-range: the models have no input '{name}' (inputs: {', '.join(known)})")
    feeds = random_feeds(specs, shapes, seed, count=count)
    for batch, feed in enumerate(feeds):
        for index, spec in enumerate(specs):
            bounds = ranges.get(spec.name, ranges.get(""))
            if bounds is None:
                continue
            rng = np.random.default_rng([seed, batch, index])
            shape, low, high = shapes[spec.name], bounds[0], bounds[1]
            if spec.dtype == np.bool_ or np.issubdtype(spec.dtype, np.integer):
                feed[spec.name] = rng.integers(int(low), int(high), size=shape, endpoint=True).astype(spec.dtype)
            else:
                feed[spec.name] = (low + (high - low) * rng.random(shape)).astype(spec.dtype)
    return feeds


def _validation_feeds(specs: list[InputSpec], options: ValidateOptions) -> tuple[list[dict], dict[str, Any]]:
    if options.samples is not None and options.samples < 1:
        raise InvalidOptionError(f"--samples must be at least 1, got {options.samples}")
    if options.calib is not None:
        for given, option in ((options.val_ranges, "--val-range"), (options.seed is not None, "--seed"),
                              (options.shapes, "--shapes")):
            if given:
                raise InvalidOptionError(f"{option} applies to random inputs; it cannot be combined with --calib")
        batch = options.calib_batch or _declared_batch(specs) or DEFAULT_CALIB_BATCH
        if batch < 1:
            raise InvalidOptionError(f"--calib-batch must be at least 1, got {batch}")
        data = load_calibration(options.calib, specs, {}, batch=batch, limit=options.samples)
        info = {"source": data.source, "seed": None, "batches": len(data), "samples": data.samples,
                "shapes": _shapes_of(data.feeds[0]), "val_range": None, "notes": []}
        return data.feeds, info
    seed = 0 if options.seed is None else options.seed
    if seed < 0:
        raise InvalidOptionError(f"--seed must be a non-negative integer, got {seed}")
    shapes, notes = resolve_shapes(specs, options.shapes)
    count = options.samples or DEFAULT_RANDOM_BATCHES
    feeds = random_inputs(specs, shapes, seed, count, options.val_ranges)
    ranges = options.val_ranges
    info = {"source": "random", "seed": seed, "batches": count, "samples": _count_samples(feeds),
            "shapes": _shapes_of(feeds[0]),
            "val_range": {"default": list(ranges[""]) if "" in ranges else None,
                          "overrides": {k: list(v) for k, v in ranges.items() if k}},
            "notes": notes}
    return feeds, info


def _declared_batch(specs: list[InputSpec]) -> int | None:
    """A batch dim fixed by the model (every input's dim 0 the same integer), so .npz data fits it."""
    dims = {spec.shape[0] if spec.shape else None for spec in specs}
    if len(dims) == 1:
        (dim,) = dims
        return dim if isinstance(dim, int) and dim > 0 else None
    return None


def _count_samples(feeds: list[dict[str, np.ndarray]]) -> int:
    """Rows along axis 0 of the first input, over all feeds (1 per feed for scalar inputs or no inputs)."""
    total = 0
    for feed in feeds:
        first = next(iter(feed.values()), None)
        total += int(np.shape(first)[0]) if first is not None and np.ndim(first) else 1
    return total


def _shapes_of(feed: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {name: list(np.shape(value)) for name, value in feed.items()}


def run_validation(reference: str | os.PathLike, pruned: str | os.PathLike,
                   options: ValidateOptions, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run both models on the same inputs, accumulate per-output statistics and check every gate.

    Raises onnxprune.errors.* for what the user must fix (unreadable models, different
    signatures, bad options); a failed gate is a result (`passed` False), not an exception.
    """
    *ref_sig, ref_meta = _signature_and_metadata(reference)
    *got_sig, got_meta = _signature_and_metadata(pruned)
    check_signatures(reference, ref_sig, pruned, got_sig)
    specs, output_names = ref_sig[0], [output.name for output in ref_sig[1]]
    pooled = {output.name for output in ref_sig[1] if output.pooled}
    gates = options.gates
    gates.check_output_names(output_names)
    for option, names in (("--classifier", options.classifiers), ("--channel-axis", [n for n in options.channel_axes
                                                                                     if n])):
        for name in names:
            if name not in output_names:
                raise InvalidOptionError(f"{option}: the models have no output '{name}' "
                                         f"(outputs: {', '.join(output_names)})")
    feeds, inputs_info = _validation_feeds(specs, options)

    accumulators = {
        name: OutputAccumulator(
            name, atol=gates.atol.for_output(name), rtol=gates.rtol.for_output(name), top_k=gates.top_k,
            classifier=(name in options.classifiers) if options.classifiers else (False if name in pooled else None),
            channel_axis=options.channel_axes.get(name, options.channel_axes.get("")))
        for name in output_names
    }
    together = model_bytes(reference) + model_bytes(pruned) <= INTERLEAVE_MAX_BYTES
    bar = progress.bar(log, "validation", total=len(feeds), unit="batch")  # `log`: a report.progress.Progress
    trims = runtime_config.cache_trims(got_meta)  # see compare_models
    for ref_out, got_out in (_paired_outputs if together else _sequential_outputs)(reference, pruned, feeds, trims):
        ref_out = runtime_config.trim(ref_out, trims)
        for name, accumulator in accumulators.items():
            accumulator.add(ref_out[name], got_out[name])
        bar.update()
    bar.close()

    stats = [accumulator.result() for accumulator in accumulators.values()]
    gates.check_classifiers(stats)
    outputs, every_result = [], []
    for item in stats:
        results = evaluate(item, gates)
        every_result += results
        outputs.append({**item.to_dict(), "passed": all(r.passed for r in results),
                        "gates": [r.to_dict() for r in results]})
    failure = failure_line(every_result)
    result = {
        "command": "validate",
        "schema_version": 1,
        "reference": str(reference),
        "pruned": str(pruned),
        "passed": failure is None,
        "failure": failure,
        "failed_gates": [r.to_dict() for r in every_result if not r.passed],
        "inputs": inputs_info,
        "gates": {**gates.to_dict(), "classifiers": list(options.classifiers) or None,
                  "channel_axis": {"default": options.channel_axes.get(""),
                                   "overrides": {k: v for k, v in options.channel_axes.items() if k}}},
        "outputs": outputs,
        "runtime": {"onnxruntime": ort.__version__, "providers": [runtime.CPU],
                    "sessions": "together" if together else "one at a time"},
    }
    result["warnings"] = guards.validate_warnings(result, {str(reference): ref_meta, str(pruned): got_meta})
    return result


def _paired_outputs(reference, pruned, feeds, trims):
    sessions = [runtime.create_session(reference), runtime.create_session(pruned)]
    for feed in feeds:
        yield (runtime.run(sessions[0], feed, label=str(reference)),
               runtime.run(sessions[1], runtime_config.trim(feed, trims), label=str(pruned)))


def _sequential_outputs(reference, pruned, feeds, trims):
    """Big models: ORT copies every weight, so only one session lives at a time (see compare_models);
    the reference's outputs are kept meanwhile, which for any real model is far less than its weights."""
    feeds = list(feeds)
    session = runtime.create_session(reference)
    expected = [runtime.run(session, feed, label=str(reference)) for feed in feeds]
    del session
    session = runtime.create_session(pruned)
    for feed, ref_out in zip(feeds, expected):
        yield ref_out, runtime.run(session, runtime_config.trim(feed, trims), label=str(pruned))
