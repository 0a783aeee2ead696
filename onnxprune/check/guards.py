"""Warnings a run must not keep to itself.

A prune or a validation that "succeeds" can still hand back something useless: outputs whose
fidelity collapsed, a model from which nothing was removed, a target missed, figures measured on
random noise, or onnxprune's demo model whose weights are random. Each becomes a warning
`{"code", "message"}` in the report's `warnings` list, one `onnxprune: warning: ...` line on stderr
and a box at the top of the HTML page. They never stop the run (the model is still written);
`--fail-on-warning` turns any of them into exit code 1 for pipelines.

Codes (documented in README and docs/report-schema.md):
  fidelity-collapsed   an output's worst channel (or row) has cosine < COLLAPSE_COSINE to the original or
                       SNR < COLLAPSE_SNR_DB (the error outweighs the signal), top-1 agreement <
                       COLLAPSE_TOP1, or it cannot be compared (NaN/Inf, shape)
  nothing-removed      the written model is the input's size: no option, every space pinned, ...
  target-missed        --target-flops/--target-params kept more than TARGET_TOLERANCE off the target
  max-error-missed     --max-error: the pruned model's own held-out error is above the bound
  random-inputs        validation ran on seeded random inputs, not on data (--calib, --load-inputs)
  demo-random-weights  a model carries metadata onnxprune.demo=random-weights (the shipped yolo_tiny)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import onnx

from .fidelity import where

# Below this worst-channel cosine an output no longer carries what it did: on a detector head,
# class scores at cosine 0.5 keep no detection (the YOLOv8 lost all at ~0.1).
COLLAPSE_COSINE = 0.5
# An error larger than the signal: a channel that kept its direction but not its scale (a text
# detector's probability map 3x too loud, thresholded at 0.3, finds nothing).
COLLAPSE_SNR_DB = 0.0
COLLAPSE_TOP1 = 0.5
# The --target-* search aims within 0.01 of the fraction asked; more than this is a miss.
TARGET_TOLERANCE = 0.02
DEMO_KEY, DEMO_RANDOM = "onnxprune.demo", "random-weights"


def warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def worst_phrase(output: Mapping[str, Any]) -> str:
    """'channel 37 of 84 on axis 1' or 'row 3 of 8': where the worst channel of an output is."""
    return where(output.get("channel_mode"), output.get("channel_axis"), output.get("worst_channel"),
                 output.get("channels"))


def where_snr(output: Mapping[str, Any]) -> str:
    """Where the channel with the lowest SNR is, in words."""
    return where(output.get("channel_mode"), output.get("channel_axis"), output.get("min_snr_channel"),
                 output.get("channels"))


def fidelity_cosine(output: Mapping[str, Any]) -> float | None:
    """The cosine that judges an output: its worst channel's, else the whole output's."""
    value = output.get("worst_channel_cosine")
    return output.get("cosine") if value is None else value


def collapsed(output: Mapping[str, Any]) -> str | None:
    """Why this output's fidelity collapsed (one phrase), or None. Works on prune and validate outputs."""
    name = output.get("name")
    reason = output.get("failure") or (output.get("reason") if output.get("ok") is False else None)
    if reason:
        return f"output '{name}' cannot be compared to the original: {reason}"
    if output.get("nonfinite_mismatch"):
        return f"output '{name}' has NaN/Inf where the original has none ({output['nonfinite_mismatch']} elements)"
    cosine = fidelity_cosine(output)
    if cosine is not None and cosine < COLLAPSE_COSINE:
        where = worst_phrase(output)
        whole = output.get("cosine")
        detail = f" ({where}, the worst; whole output {whole:.6f})" if where and whole is not None else ""
        return f"output '{name}' collapsed: cosine {cosine:.4f}{detail} < {COLLAPSE_COSINE} to the original"
    snr = output.get("min_channel_snr_db")
    if snr is not None and snr < COLLAPSE_SNR_DB:
        where = where_snr(output)
        detail = f" ({where}, the lowest)" if where else ""
        return (f"output '{name}' collapsed: SNR {snr:.1f} dB{detail} < {COLLAPSE_SNR_DB:g} dB: the error outweighs "
                "the signal")
    top1 = output.get("top1_agreement")
    if top1 is not None and top1 < COLLAPSE_TOP1:
        return f"output '{name}' collapsed: top-1 agreement {top1:.3f} < {COLLAPSE_TOP1} with the original"
    return None


def fidelity_warnings(outputs: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [warning("fidelity-collapsed", reason) for reason in map(collapsed, outputs) if reason]


def demo_marker(metadata: Mapping[str, str]) -> str | None:
    """The marker of a model shipped for demonstration only (random weights), else None."""
    value = metadata.get(DEMO_KEY)
    return value if value == DEMO_RANDOM else None


def _demo_warning(path: str) -> dict[str, str]:
    return warning("demo-random-weights",
                   f"'{path}' is onnxprune's demo model and its weights are random "
                   f"(metadata {DEMO_KEY}={DEMO_RANDOM}): its outputs mean nothing, so neither do fidelity figures")


def _random_warning(how: str) -> dict[str, str]:
    return warning("random-inputs", f"validation ran on random inputs ({how}): the figures say how the outputs "
                                    "moved on noise, not on your data")


def prune_warnings(report: Mapping[str, Any], options: Any, model_proto: onnx.ModelProto) -> list[dict[str, str]]:
    """The warnings of a prune, from its report, its options (api.PruneOptions) and the input's proto."""
    warnings: list[dict[str, str]] = []
    validation = report.get("validation")
    if isinstance(validation, Mapping):
        warnings += fidelity_warnings(validation.get("outputs") or [])
    reason = _nothing_removed(report, options, model_proto)
    if reason:
        warnings.append(warning("nothing-removed", f"nothing was removed: {reason}"))
    budget = report.get("budget") or {}
    achieved = budget.get("achieved")
    for metric, goal in (budget.get("target") or {}).items():
        if isinstance(achieved, (int, float)) and abs(achieved - goal) > TARGET_TOLERANCE:
            warnings.append(warning("target-missed",
                                    f"--target-{metric} {goal:g}: the model keeps {achieved:g} of its {metric} "
                                    f"(more than {TARGET_TOLERANCE:g} off; pinned spaces and whole channels "
                                    "limit how close the plan gets)"))
    error, bound = budget.get("achieved_error"), budget.get("max_error")
    if isinstance(error, (int, float)) and isinstance(bound, (int, float)) and error > bound:
        warnings.append(warning("max-error-missed",
                                f"--max-error {bound:g}: the pruned model's held-out error is {error:.4g} (the search "
                                f"estimated {budget.get('estimated_error', float('nan')):.4g} with the removed "
                                "channels zeroed); give a larger bound or more calibration data"))
    if isinstance(validation, Mapping) and validation.get("inputs", "random") == "random":
        warnings.append(_random_warning("no --calib or --load-inputs"))
    if demo_marker({p.key: p.value for p in model_proto.metadata_props}):
        warnings.append(_demo_warning(str(report.get("input"))))
    return warnings


def validate_warnings(result: Mapping[str, Any], metadata: Mapping[str, Mapping[str, str]]) -> list[dict[str, str]]:
    """The warnings of `onnxprune validate`; `metadata`: each model's path -> its metadata_props."""
    warnings = fidelity_warnings(result.get("outputs") or [])
    if (result.get("inputs") or {}).get("source") == "random":
        warnings.append(_random_warning("no --calib"))
    warnings += [_demo_warning(path) for path, props in metadata.items() if demo_marker(props)]
    return warnings


def _removed_anything(report: Mapping[str, Any]) -> bool:
    spaces = report.get("spaces") or []
    layers = report.get("layers") or {}
    sparsity = report.get("sparsity") or {}
    return (any(space.get("removed") for space in spaces) or bool(layers.get("removed"))
            or bool(sparsity.get("sparse_weights")))


def _nothing_removed(report: Mapping[str, Any], options: Any, model_proto: onnx.ModelProto) -> str | None:
    if _removed_anything(report):
        return None
    asked = [flag for flag, value in (("--structured", options.structured), ("--heads", options.heads),
                                      ("--drop-layers", options.drop_layers), ("--sparse", options.sparse),
                                      ("--target-flops", options.target_flops),
                                      ("--target-params", options.target_params),
                                      ("--target-latency", options.target_latency),
                                      ("--max-error", getattr(options, "max_error", None))) if value]
    if not asked:
        return ("no pruning option was given (--structured, --heads, --drop-layers, --sparse or "
                "--target-flops/--target-params/--target-latency)")
    hidden = _subgraph_weights(model_proto.graph)
    inside = (f"; {hidden} weights sit inside If/Loop/Scan bodies, which are left alone" if hidden else "")
    spaces = report.get("spaces")
    if spaces is not None and not any(space.get("prunable") for space in spaces):
        if not spaces:
            return f"the model has no channel space onnxprune can slice{inside}"
        return f"every channel space is pinned ({len(spaces)} spaces; `onnxprune inspect` says by what){inside}"
    if getattr(options, "max_error", None):
        return f"--max-error {options.max_error:g}: even the smallest cut tried was over it on held-out data{inside}"
    return (f"{', '.join(asked)} removed no channel, block or weight (spaces too small for the ratio, "
            f"--round-to, or --exclude){inside}")


def _subgraph_weights(graph: onnx.GraphProto) -> int:
    """Initializers and Constant nodes inside the bodies of control-flow nodes, at any depth."""
    count = 0
    for node in graph.node:
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                count += len(body.initializer) + sum(1 for n in body.node if n.op_type == "Constant")
                count += _subgraph_weights(body)
    return count


def print_warnings(warnings: Iterable[Mapping[str, str]], stream: TextIO | None = None) -> None:
    """One `onnxprune: warning: ...` line per warning on stderr."""
    stream = stream or sys.stderr
    for item in warnings:
        stream.write(f"onnxprune: warning: {item['message']}\n")
    stream.flush()
