"""The human-readable summary printed after a run (the JSON report carries everything)."""

from __future__ import annotations

from typing import Any


def _count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def _ratio(before: float, after: float) -> str:
    return f"{after / before:.3f}x" if before else "-"


def summary(report: dict[str, Any]) -> str:
    """A few lines: what was removed and how, sizes before/after, latency, output errors, notes."""
    lines = []
    spaces = report.get("spaces")
    if spaces is not None:
        prunable = [s for s in spaces if s["prunable"]]
        removed = {kind: sum(len(s.get("removed", [])) for s in spaces if s.get("kind", "channels") == kind)
                   for kind in dict.fromkeys(s.get("kind", "channels") for s in spaces)}
        counts = "; ".join(f"{kind} removed: {count}" for kind, count in removed.items() if count)
        lines.append(f"channel spaces: {len(spaces)} ({len(prunable)} prunable, {len(spaces) - len(prunable)} "
                     f"pinned); {counts or 'channels removed: 0'}")
    layers = report.get("layers")
    if layers is not None:
        names = ", ".join(layers.get("removed", []))
        lines.append(f"residual blocks removed: {len(layers.get('removed', []))} of {len(layers.get('blocks', []))}"
                     + (f" ({names})" if names else ""))
    sparsity = report.get("sparsity")
    if isinstance(sparsity, dict):
        lines.append(f"sparsity {sparsity.get('pattern')} ({sparsity.get('criterion')}): "
                     f"{sparsity.get('sparse_weights')} weights, {_count(sparsity.get('sparse_params', 0))} of "
                     f"{_count(sparsity.get('total_params', 0))} params; "
                     f"{sparsity.get('ineligible_weights')} left dense (see check-sparsity)")
        trtexec = (sparsity.get("build") or {}).get("trtexec")
        if trtexec:
            lines.append(f"build: {trtexec}")
    tensorrt = report.get("tensorrt")
    if isinstance(tensorrt, dict) and not tensorrt.get("available"):
        lines.append(f"TensorRT: {tensorrt.get('reason')}")
    elif isinstance(tensorrt, dict):
        lines.append(f"TensorRT FP16: sparse engine {tensorrt.get('speedup')}x the dense one; sparse kernels in "
                     f"{len((tensorrt.get('sparse') or {}).get('sparse_layers') or [])} layers")
    how = []
    if report.get("criterion"):
        how.append(f"criterion {report['criterion']}")
    calibration = report.get("calibration")
    if isinstance(calibration, dict):
        how.append(f"calibration {calibration.get('samples')} samples from {calibration.get('source') or 'random'}")
    if isinstance(report.get("compensation"), dict):
        refit = report["compensation"]
        how.append("compensation undone (it raised the held-out error)" if refit.get("kept") is False else
                   f"compensation: {refit.get('layers_refit', 0)} layers refit")
    budget = report.get("budget") or {}
    for metric, goal in (budget.get("target") or {}).items():
        how.append(f"target {metric} {goal}: achieved {budget.get('achieved')}")
    if "max_error" in budget:
        how.append(f"max error {budget['max_error']:g} on {budget['held_out']['samples']} held-out samples: "
                   f"{_error(budget.get('achieved_error'))} (estimated {_error(budget.get('estimated_error'))})")
    if how:
        lines.append("; ".join(how))
    before, after = report.get("before"), report.get("after")
    if before and after:
        lines.append(f"{'':14}{'before':>12}{'after':>12}{'ratio':>10}")
        for key in ("params", "flops", "weight_bytes"):
            lines.append(f"{key:14}{_count(before[key]):>12}{_count(after[key]):>12}"
                         f"{_ratio(before[key], after[key]):>10}")
    validation = report.get("validation")
    if validation:
        times = validation["latency_ms"]
        speedup = validation.get("speedup")
        lines.append(
            f"{'latency ms':14}{times['original']['median_ms']:>12.3f}{times['pruned']['median_ms']:>12.3f}"
            f"{_ratio(times['original']['median_ms'], times['pruned']['median_ms']):>10}"
            + (f"  (median; speedup {speedup:.2f}x)" if speedup else "")
        )
        for output in validation["outputs"]:
            lines.append(_output_line(output))
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _output_line(output: dict[str, Any]) -> str:
    """One output's fidelity: the whole-output figures, then its worst channel (what gates and warnings
    judge), marked COLLAPSED below guards.COLLAPSE_COSINE."""
    from ..check.guards import collapsed, worst_phrase

    name = output["name"]
    if output.get("reason"):
        return f"output {name}: {output['reason']}"
    if output.get("max_abs") is None:
        return f"output {name}: same values (not numeric)"
    line = (f"output {name}: max abs err {output['max_abs']:.3g}, max err / max |ref| {output['rel_to_max']:.3g}, "
            f"cosine {output['cosine']:.6f}")
    where = worst_phrase(output)
    if where and output.get("worst_channel_cosine") is not None:
        line += f"; worst {where}: cosine {output['worst_channel_cosine']:.6f}"
    if output.get("min_channel_snr_db") is not None:
        line += f", min SNR {output['min_channel_snr_db']:.1f} dB"
    if output.get("top1_agreement") is not None:
        line += f", top-1 {output['top1_agreement']:.3f}"
    return line + ("  COLLAPSED" if collapsed(output) else "")


def inspect_table(spaces: list[dict[str, Any]], verbose: bool = False) -> str:
    lines = [f"{'id':>4} {'size':>5}  {'status':8} {'layers':>6}  space"]
    for space in spaces:
        status = "prunable" if space["prunable"] else "pinned"
        lines.append(f"{space['id']:>4} {space['size']:>5}  {status:8} {len(space['nodes']):>6}  {space['label']}")
        if len(space["nodes"]) > 2 or verbose:  # more than a producer and its consumer
            shown = space["nodes"] if verbose else space["nodes"][:4]
            more = len(space["nodes"]) - len(shown)
            lines.append(f"{'':27}coupled: {', '.join(shown)}{f' (+{more} more)' if more else ''}")
        for pin in space["pinned_by"][: None if verbose else 1]:
            lines.append(f"{'':27}pinned by: {pin}")
        if verbose:
            for member in space["members"]:
                kind = "weight" if member["weight"] else "tensor"
                lines.append(f"{'':27}{kind} {member['tensor']} axis {member['axis']} @ {member['offset']}")
    prunable = sum(1 for space in spaces if space["prunable"])
    lines.append(f"{len(spaces)} channel spaces: {prunable} prunable, {len(spaces) - prunable} pinned")
    return "\n".join(lines)


def _error(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "not measured"
