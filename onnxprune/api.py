"""Python entry points: `prune(...)` does what `onnxprune in.onnx out.onnx` does."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .calib.data import load_calibration
from .check.fidelity import pooled_outputs
from .check.guards import prune_warnings
from .check.inputs import headline_notes
from .check.stats import model_stats
from .check.validate import compare_models, validation_inputs
from .errors import InvalidModelError, InvalidOptionError
from .io import runtime_config, staging
from .io.files import check_model_output, check_output_path, write_atomic
from .io.model import Model
from .io.saving import save_model
from .pipeline import Context, Pass, run_pipeline
from .plan import Budget


@dataclass
class PruneOptions:
    structured: float = 0.0
    heads: float = 0.0
    drop_layers: float = 0.0
    criterion: str | None = None  # None: wanda with --calib, l1 without
    calib: str | None = None
    compensate: bool | None = None  # None: on when calibration data is given
    calib_batch: int = 8
    target_flops: float | None = None  # keep this fraction of the FLOPs (per-space ratios from sensitivity)
    target_params: float | None = None
    target_latency: float | None = None  # keep this fraction of the measured ORT latency
    max_error: float | None = None  # cut as deep as the held-out output error allows (passes/quality_budget.py)
    global_ranking: bool = False
    round_to: int | None = None  # None: the multiples --device wants; 1: exact counts
    device: str = "cpu"  # the runtime the pruned model is for: sets channel alignment (measure/alignment.py)
    exclude: list[str] = field(default_factory=list)
    validate: bool = True
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    seed: int = 0
    external_data: bool | None = None
    latency_runs: int = 20
    sparse: str | None = None  # "2:4", "4:8" (N:M) or "0.5" (unstructured fraction of zeros)
    sparse_min_params: int = 0  # leave weights with fewer parameters dense
    sparse_any_shape: bool = False  # also weights TensorRT's sparse tiles cannot speed up (eligibility.py)
    sparse_lm_head: bool = False  # also a language model's LM head and embedding table (dense by default)
    allocation: str = "auto"  # per-layer ratios: "uniform", "llm" (passes/llm_allocation.py), "auto": llm for LMs
    samples: int = 4  # random batches when there is no calibration data
    val_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # --val-range ("" = every input)
    load_inputs: str | None = None  # validation feeds (Polygraphy JSON or .npz); else --calib's, else random
    recover: bool = False  # distill the original into the pruned model on the calibration data (passes/recover.py)
    recover_steps: int | None = None  # all rounds together; None: 200 unless recover_time is given
    recover_time: float | None = None  # seconds of training, all rounds together
    recover_lr: float | None = None  # step size relative to each weight's RMS; None: RecoverSettings' default
    recover_rounds: int = 1  # progressive pruning: K rounds of (prune 1/K of the way, recover)

    def check(self) -> None:
        from onnxprune.passes import ACTIVATION_CRITERIA, CRITERIA

        if not 0.0 <= self.structured < 1.0:
            raise InvalidOptionError(f"--structured must be in [0, 1), got {self.structured}")
        if not 0.0 <= self.heads < 1.0:
            raise InvalidOptionError(f"--heads must be in [0, 1), got {self.heads}")
        if self.drop_layers < 0 or self.drop_layers != self.drop_layers or (
                self.drop_layers >= 1 and self.drop_layers != int(self.drop_layers)):
            raise InvalidOptionError(f"--drop-layers must be a count (1, 2, ...) or a fraction in (0, 1), "
                                     f"got {self.drop_layers}")
        known = [*CRITERIA, *ACTIVATION_CRITERIA, *(("magnitude", "sparsegpt") if self.sparse else ())]
        if self.sparse:
            from onnxprune.passes.sparse import sparse_criterion
            from onnxprune.sparsity.pattern import Pattern

            Pattern.parse(self.sparse)
            sparse_criterion(self.criterion, self.calib is not None)
            if self.sparse_min_params < 0:
                raise InvalidOptionError(f"--sparse-min-params must be >= 0, got {self.sparse_min_params}")
        if self.criterion is not None and self.criterion not in known:
            raise InvalidOptionError(f"--criterion '{self.criterion}' is unknown (choose from {', '.join(known)})")
        for name in ("target_flops", "target_params", "target_latency"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise InvalidOptionError(f"--{name.replace('_', '-')} must be in (0, 1), got {value}")
        if sum(v is not None for v in (self.target_flops, self.target_params, self.target_latency,
                                       self.max_error)) > 1:
            raise InvalidOptionError("give only one of --target-flops, --target-params, --target-latency, --max-error")
        if self.max_error is not None:
            self._check_max_error()
        if self.allocation not in ("auto", "uniform", "llm"):
            raise InvalidOptionError(f"--allocation must be auto, uniform or llm, got '{self.allocation}'")
        if self.calib_batch < 1:
            raise InvalidOptionError(f"--calib-batch must be at least 1, got {self.calib_batch}")
        from onnxprune.passes.recover import check_recover_options

        check_recover_options(self)
        if self.round_to is not None and self.round_to < 1:
            raise InvalidOptionError(f"--round-to must be at least 1, got {self.round_to}")
        from .measure.alignment import DEVICES

        if self.device not in DEVICES:
            raise InvalidOptionError(f"--device '{self.device}' is unknown (choose from {', '.join(DEVICES)})")
        if self.val_ranges and self.calib:
            raise InvalidOptionError("--val-range applies to random inputs; with --calib, validation and scoring "
                                     "use the calibration data")


    def _check_max_error(self) -> None:
        if not self.max_error > 0:
            raise InvalidOptionError(f"--max-error must be > 0, got {self.max_error}")
        if not self.calib:
            raise InvalidOptionError("--max-error judges the pruned model on held-out real inputs: give --calib")
        if self.structured or self.heads:
            raise InvalidOptionError("--max-error chooses how much to remove: leave out --structured and --heads")
        if self.recover:
            raise InvalidOptionError("--max-error with --recover is not supported: the error bound is searched "
                                     "without training; use --structured or --target-flops with --recover")


def effective_criterion(options: PruneOptions) -> str:
    """The channel criterion; a sparse-only name (--sparse --criterion sparsegpt) maps to its channel cousin."""
    criterion = {"magnitude": "l1", "sparsegpt": "obs"}.get(options.criterion or "", options.criterion)
    return criterion or ("wanda" if options.calib else "l1")


def channel_alignment(options: PruneOptions):
    """The device's channel multiples, unless --round-to N was given (1: exact counts)."""
    from .measure.alignment import alignment_for

    return alignment_for(options.device) if options.round_to is None else None


def runs_the_model(options: PruneOptions) -> bool:
    """Whether this run executes the model in ONNX Runtime (validation, calibration, block scores,
    targets). Only then is the original probed at the chosen shapes first: a probe costs a session,
    a copy of every weight, which `--no-validate` on a weights-only criterion is there to avoid."""
    from onnxprune.passes import ACTIVATION_CRITERIA

    return bool(options.validate or options.calib or options.drop_layers or options.compensate or
                options.target_flops or options.target_params or options.target_latency or options.max_error or
                sparse_needs_activations(options) or effective_criterion(options) in ACTIVATION_CRITERIA)


def sparse_needs_activations(options: PruneOptions) -> bool:
    from onnxprune.passes.sparse import sparse_criterion

    return bool(options.sparse) and sparse_criterion(options.criterion, options.calib is not None) != "magnitude"


def build_passes(options: PruneOptions, calibration=None, shapes=None) -> list[Pass]:
    """Layers first (whole blocks), then channels and heads in what is left."""
    if options.recover:  # the same passes, in rounds, each followed by distillation from the original
        from onnxprune.passes.recover import recovery_passes

        return recovery_passes(options, calibration, shapes, build_passes)
    from onnxprune.passes import (
        ACTIVATION_CRITERIA,
        CRITERIA,
        ActivationScores,
        AddBiasSlots,
        ChannelBudget,
        Compensate,
        DropLayers,
        DropZeroBiases,
        RemoveChannels,
    )

    passes: list[Pass] = []
    if options.drop_layers:
        passes.append(DropLayers(options.drop_layers, calibration.feeds if calibration else []))
    held = None
    if options.max_error is not None:  # what judges the result is never fitted on
        from onnxprune.passes.quality_budget import split_calibration

        calibration, held = split_calibration(calibration)
    target = (("error", options.max_error) if options.max_error is not None else
              ("flops", options.target_flops) if options.target_flops is not None else
              ("params", options.target_params) if options.target_params is not None else
              ("latency", options.target_latency) if options.target_latency is not None else None)
    if options.structured or options.heads or target or not (options.drop_layers or options.sparse):
        criterion = effective_criterion(options)
        compensate = options.compensate if options.compensate is not None else options.calib is not None
        compensate = compensate and calibration is not None
        channels = Budget(options.structured, options.global_ranking, options.round_to or 1)
        alignment = channel_alignment(options)
        heads = Budget(options.heads, options.global_ranking)
        scores = ActivationScores(criterion, calibration) if criterion in ACTIVATION_CRITERIA else CRITERIA[criterion]()
        passes += [AddBiasSlots()] if compensate else []
        if target and target[0] == "latency":
            from onnxprune.passes.latency_target import LatencyBudget

            passes += [scores, LatencyBudget(calibration, target[1], shapes or {}, options.round_to or 1, alignment,
                                             runs=options.latency_runs)]
        elif target and target[0] == "error":
            from onnxprune.passes.quality_budget import QualityBudget

            quality = QualityBudget(calibration, held, target[1], shapes or {}, options.round_to or 1, alignment)
            passes += [scores, quality]
        elif target:
            from onnxprune.passes.sensitivity import TargetBudget

            budget = TargetBudget(calibration, target[1], target[0], shapes or {}, options.round_to or 1, alignment)
            passes += [scores, _llm_budget(options, budget, alignment, shapes, target)]
        else:
            passes += [scores, _llm_budget(options, ChannelBudget(channels, heads, alignment, shapes), alignment,
                                           shapes)]
        if compensate and target and target[0] == "error":
            from onnxprune.passes.quality_budget import HeldOutCompensation

            passes += [HeldOutCompensation(Compensate(calibration), quality)]
        else:
            passes += [Compensate(calibration)] if compensate else []
        passes += [RemoveChannels()]
        passes += [DropZeroBiases()] if compensate else []
        if target and target[0] == "error":
            from onnxprune.passes.quality_budget import QualityCheck

            passes += [QualityCheck(quality)]
    if options.sparse:
        from onnxprune.passes.sparse import SparsifyWeights, sparse_criterion
        from onnxprune.sparsity.pattern import Pattern

        criterion = sparse_criterion(options.criterion, calibration is not None and options.calib is not None)
        passes.append(SparsifyWeights(Pattern.parse(options.sparse), criterion, calibration, options.exclude,
                                      options.sparse_min_params, options.global_ranking, options.sparse_any_shape,
                                      options.sparse_lm_head))
    return passes


def _llm_budget(options: PruneOptions, fallback: Pass, alignment, shapes, target=None) -> Pass:
    """--allocation: the LLM allocation (per-layer ratios; `fallback` when auto finds no decoder LM)."""
    if options.allocation == "uniform" or options.global_ranking:
        return fallback
    from onnxprune.passes.llm_allocation import LLMBudget

    return LLMBudget(options.structured, options.heads, alignment, shapes, options.round_to or 1, target,
                     fallback=fallback, forced=options.allocation == "llm")


def check_paths(source: Path, target: Path) -> None:
    if not source.exists():
        raise InvalidModelError(f"input model '{source}' does not exist")
    if source.is_dir():
        raise InvalidModelError(f"input model '{source}' is a folder, not a file")
    if (target.exists() and os.path.samefile(source, target)) or source.resolve() == target.resolve():
        raise InvalidOptionError(f"output '{target}' is the input model; choose another output path")
    if target.is_dir():
        raise InvalidOptionError(f"output '{target}' is a folder; give a file name")
    if not (target.parent if str(target.parent) else Path(".")).is_dir():
        raise InvalidOptionError(f"output folder '{target.parent}' does not exist")
    check_model_output(target)  # a read-only folder is found now, not after the work


def prune(
    source: str | os.PathLike,
    target: str | os.PathLike,
    options: PruneOptions,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Prune `source` into `target` and return the report (also what --report writes)."""
    source, target = Path(source), Path(target)
    options.check()
    check_paths(source, target)
    started = time.perf_counter()
    model = Model.load(source)
    # Changed weights beyond the memory budget spill beside the output: the folder the user chose to
    # write to, and the one the output's bytes are then copied into.
    model.held.folder = target.parent if str(target.parent) else Path(".")
    input_check = staging.full_check_error(model)
    calibration, given, label = _given_inputs(model, options, log)
    specs, shapes, notes = validation_inputs(model, options.shapes, options.seed, feeds=given, feeds_label=label,
                                             val_ranges=options.val_ranges, probe=runs_the_model(options))
    for note in headline_notes(notes):  # before the work, so a wrong guess can be stopped early
        log(f"note: {note}")
    before = model_stats(model, shapes)
    context = Context(model, options={"exclude": options.exclude}, log=log)
    context.report.update(schema_version=1, input=str(source), output=str(target), seed=options.seed, notes=notes,
                          options=_options_dict(options))
    from onnxprune.passes import ACTIVATION_CRITERIA

    structured = (options.structured or options.heads or options.target_flops or options.target_params or
                  options.target_latency or options.max_error)
    if calibration is None and (options.drop_layers or options.compensate or options.target_flops or (
            options.target_params) or options.target_latency or sparse_needs_activations(options) or (
            (structured or not options.sparse) and effective_criterion(options) in ACTIVATION_CRITERIA)):
        calibration = load_calibration(options.calib, specs, shapes, seed=options.seed, batch=options.calib_batch,
                                       random_batches=options.samples, log=log)
    run_pipeline(build_passes(options, calibration, shapes), context)
    if not options.sparse:
        from onnxprune.passes.sparse import refresh_annotation

        stale = refresh_annotation(model)
        if stale:
            context.report["notes"].append(stale)
    after = model_stats(model, shapes)
    report = context.report
    report["before"], report["after"] = before, after
    report["shapes"] = {name: list(shape) for name, shape in shapes.items()}
    _write_checked(model, source, target, options, report, specs, shapes, log, input_check, given)
    if options.validate and given is not None and not options.load_inputs and options.max_error is None and (
            isinstance(report.get("compensation"), dict)):
        report["notes"].append("validation ran on calibration batches the compensation was fitted on: its figures "
                               "are optimistic; --load-inputs (or --max-error, which holds data out) judges on "
                               "unseen inputs")
    report["prune_seconds"] = round(time.perf_counter() - started, 3)
    # What the run must not keep to itself (collapsed outputs, nothing removed, ...): check/guards.py.
    report["warnings"] = prune_warnings(report, options, model.proto)
    return report


def _given_inputs(model: Model, options: PruneOptions, log: Callable[[str], None]):
    """--calib and --load-inputs, read before anything runs: (calibration data or None, the feeds
    validation uses or None, their label). Validation takes --load-inputs, else the calibration data."""
    if not (options.calib or options.load_inputs):
        return None, None, ""
    from .calib.data import load_input_feeds
    from .check.inputs import model_input_specs

    specs = [spec for spec in model_input_specs(model.proto) if not model.is_weight(spec.name)]
    calibration = None
    if options.calib:
        calibration = load_calibration(options.calib, specs, {}, seed=options.seed, batch=options.calib_batch,
                                       random_batches=options.samples, log=log)
    if options.load_inputs:
        return calibration, load_input_feeds(options.load_inputs, specs), f"--load-inputs '{options.load_inputs}'"
    if options.max_error is not None:  # validation judges on what nothing was fitted on, as the search did
        from onnxprune.passes.quality_budget import split_calibration

        return calibration, split_calibration(calibration)[1].feeds, f"--calib '{options.calib}' (held out)"
    return calibration, calibration.feeds[:VALIDATION_FEEDS], f"--calib '{options.calib}'"


# Feeds of --calib that validation runs (it compares two random feeds without --calib).
VALIDATION_FEEDS = 2


def _write_checked(model: Model, source: Path, target: Path, options: PruneOptions, report: dict[str, Any],
                   specs, shapes: dict, log: Callable[[str], None], input_check: str | None,
                   feeds: list | None = None) -> None:
    """Check the graph (onnx's full check, if the input passed it), save into a private folder beside
    `target`, let ONNX Runtime load, run and compare it there unless --no-validate, and only then move
    it to `target`. `input_check`: the input's full-check complaint, None when it passed."""
    staging.check_targets(model, target)
    note = staging.check_graph(model, input_check)
    if note:
        report.setdefault("notes", []).append(note)
    with staging.staging(target) as staged:
        save_model(model, staged, external_data=options.external_data)
        if options.validate:
            log("validating in ONNX Runtime")
            report["validation"] = compare_models(source, staged, specs, shapes, options.seed,
                                                  runs=options.latency_runs, feeds=feeds,
                                                  trims=runtime_config.cache_trims(
                                                      {p.key: p.value for p in model.proto.metadata_props}),
                                                  pooled=pooled_outputs(model.proto.graph))
            held_out = " (held out)" if options.max_error is not None else ""
            report["validation"]["inputs"] = (f"--load-inputs '{options.load_inputs}'" if options.load_inputs else
                                              f"--calib '{options.calib}'{held_out}" if feeds else "random")
            if options.sparse:
                report["tensorrt"] = _tensorrt_check(source, staged, shapes, options.seed, log)
        staging.commit(staged, target)
    # A decoder's runtime sizes its empty KV cache from genai_config.json / config.json beside the model.
    report.setdefault("notes", []).extend(runtime_config.write_beside(model.graph, model.weights, source, target))


def _tensorrt_check(source: Path, target: Path, shapes: dict, seed: int, log: Callable[[str], None]) -> dict:
    """Dense and sparse FP16 engines side by side when TensorRT is importable; else says why not."""
    from .measure import trt

    missing = trt.unavailable_report()
    if missing is not None:
        log(f"TensorRT check skipped ({missing['reason']}): validated in ONNX Runtime only")
        return missing
    log("building dense and sparse TensorRT engines")
    return trt.compare_dense_sparse(source, target, shapes, fp16=True, seed=seed)


def _options_dict(options: PruneOptions) -> dict[str, Any]:
    import dataclasses

    data = dataclasses.asdict(options)
    data["shapes"] = {name: list(shape) for name, shape in options.shapes.items()}
    return data


def check_report_path(path: str | os.PathLike, option: str = "--report",
                      protected: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse a report path that cannot be written, or that names a model file, before any work is done."""
    check_output_path(path, option, protected)


def write_json(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomic like model saving: a half-written report would mislead a pipeline."""
    check_report_path(path)
    write_atomic(path, json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    """Strict JSON has no NaN or Infinity: write them as null (the report's notes say why)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
