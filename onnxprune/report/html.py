"""`--html PATH`: the report as one self-contained HTML page (inline CSS and SVG plots, no script, no
external reference), readable offline and safe to attach to a ticket.

It renders whatever the report holds, section by section, so it works for every prune mode and for
the JSON of `onnxprune validate --json` and `onnxprune bench --json` (a top-level "validation" or
"bench" key, or "kind": "validate"/"bench"); keys it does not know are listed as JSON at the end.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..check.guards import COLLAPSE_COSINE, COLLAPSE_SNR_DB, collapsed, fidelity_cosine
from ..io.files import check_output_path, write_atomic
from .html_parts import fidelity_row, fmt_cell, generic_results, key_values, raw_json, section, table, warnings_box
from .svg_plots import AFTER, BEFORE, REMOVED, Series, esc, fmt_number, hbar_chart, line_chart

# Keys a section below renders; any other top-level key goes to "Other data".
_KNOWN = {
    "schema_version", "kind", "input", "output", "seed", "notes", "pass_seconds", "criterion", "budget", "spaces",
    "channels_removed", "before", "after", "prune_seconds", "shapes", "validation", "layers", "calibration",
    "spaces_scored_by_magnitude", "spaces_without_batchnorm", "compensation", "bias_slots_added",
    "zero_bias_slots_removed", "target_search", "sensitivity", "curves", "latency_search", "options", "bench",
    "sparsity", "onnxprune_version", "command", "warnings",
}
_SIZE_KEYS = (("params", "parameters"), ("flops", "FLOPs"), ("weight_bytes", "weight bytes"))
MAX_BARS = 150

_CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; color: #222222; background: #ffffff;
       margin: 0; padding: 20px 28px 48px; font-size: 14px; }
main { max-width: 1080px; margin: 0 auto; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d5dbe4; }
h3 { font-size: 14px; margin: 18px 0 6px; }
h4 { font-size: 13px; margin: 12px 0 4px; }
.muted { color: #5b6472; }
.paths { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0 4px; }
.card { border: 1px solid #d5dbe4; border-radius: 6px; padding: 8px 14px; min-width: 120px; background: #f7f9fc; }
.card b { display: block; font-size: 20px; }
.card span { color: #5b6472; font-size: 12px; }
.card.bad { border-color: #b3361a; background: #fdf0ec; }
.card.bad b { color: #b3361a; }
.warnings { border: 2px solid #b3361a; border-radius: 6px; background: #fdf0ec; padding: 6px 16px 8px;
            margin: 16px 0 4px; }
.warnings h2 { color: #b3361a; border: none; margin: 4px 0; }
.warnings code { font-size: 12px; color: #5b6472; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 12.5px; }
th, td { border: 1px solid #e1e5ec; padding: 3px 8px; text-align: left; vertical-align: top; }
thead th { background: #eef2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.yes { color: #1b7a43; }
td.no { color: #b3361a; }
table.kv th { background: #f7f9fc; font-weight: normal; color: #5b6472; white-space: nowrap; }
svg.plot { display: block; margin: 8px 0 4px; max-width: 100%; height: auto; }
details { margin: 4px 0; }
summary { cursor: pointer; color: #33507a; }
pre { background: #f7f9fc; border: 1px solid #e1e5ec; padding: 8px; font-size: 11.5px; overflow-x: auto;
      white-space: pre-wrap; word-break: break-all; }
ul { margin: 4px 0; padding-left: 22px; }
"""


def write_html(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the page atomically (temporary file beside it, then rename), like the JSON report."""
    check_output_path(path, "--html")
    write_atomic(path, render_html(report))


def render_html(report: dict[str, Any]) -> str:
    """The whole page as a string; sections whose data is missing are left out."""
    if not isinstance(report, dict):
        report = {"data": report}
    kind = _kind(report)
    title = {"validate": "validation", "bench": "benchmark"}.get(kind, "prune")
    body = [
        _header(report, title),
        warnings_box(report.get("warnings"), prune=not kind),
        _sizes(report),
        _spaces(report),
        _layers(report),
        _validation(report, kind),
        _bench(report, kind),
        _sensitivity(report),
        _budget(report),
        _sparsity(report),
        _pins_and_notes(report),
        _options(report),
        _other(report, kind),
    ]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
            f"<title>onnxprune {esc(title)} report: {esc(Path(str(report.get('input') or 'model')).name)}</title>"
            f"<style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n")


def _kind(report: dict[str, Any]) -> str:
    """'validate', 'bench' or '' (a prune report), from "kind" or "command" ('onnxprune.bench' counts)."""
    for key in ("kind", "command"):
        value = report.get(key)
        if isinstance(value, str):
            name = value.lower().rsplit(".", 1)[-1]
            if name.startswith("validat"):
                return "validate"
            if name.startswith("bench"):
                return "bench"
    return ""


def _ratio(before: Any, after: Any) -> str:
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and before:
        return f"{after / before:.3f}\u00d7"
    return "\u2013"


def _header(report: dict[str, Any], title: str) -> str:
    lines = [f"<h1>onnxprune {esc(title)} report</h1>"]
    paths = [f"{esc(key)}: {esc(report[key])}" for key in ("input", "output", "model", "reference")
             if isinstance(report.get(key), str)]
    if paths:
        lines.append(f'<p class="paths">{"<br/>".join(paths)}</p>')
    cards = []
    before, after = report.get("before"), report.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        for key, label in _SIZE_KEYS:
            if key in before and key in after:
                cards.append((_ratio(before[key], after[key]), f"{label} kept"))
    spaces = [s for s in report.get("spaces") or [] if isinstance(s, dict)]
    for kind, noun in (("channels", "channels removed"), ("heads", "heads removed")):
        removed = sum(len(s.get("removed") or []) for s in spaces if s.get("kind", "channels") == kind)
        if removed:
            cards.append((f"{removed:,}", noun))
    layers = report.get("layers")
    if isinstance(layers, dict) and layers.get("blocks"):
        cards.append((f"{len(layers.get('removed') or [])} of {len(layers['blocks'])}", "residual blocks removed"))
    validation = report.get("validation")
    if not isinstance(validation, dict) and title == "validation":
        validation = report
    bad = set()
    if isinstance(validation, dict):
        if isinstance(validation.get("speedup"), (int, float)):
            cards.append((f"{validation['speedup']:.2f}\u00d7", "speedup (median)"))
        outputs = [o for o in validation.get("outputs") or [] if isinstance(o, dict)]
        judged = [(fidelity_cosine(o), o) for o in outputs if isinstance(fidelity_cosine(o), (int, float))]
        if judged:
            cosine, worst = min(judged, key=lambda item: item[0])
            per_channel = worst.get("worst_channel_cosine") is not None
            cards.append((f"{cosine:.5f}", "worst channel cosine" if per_channel else "min output cosine"))
            if any(collapsed(o) for o in outputs):
                bad.add(len(cards) - 1)
    if cards:
        lines.append('<div class="cards">' + "".join(
            f"<div class=\"card{' bad' if index in bad else ''}\"><b>{esc(value)}</b><span>{esc(label)}</span></div>"
            for index, (value, label) in enumerate(cards)) + "</div>")
    return "".join(lines)


def _sizes(report: dict[str, Any]) -> str:
    before, after = report.get("before"), report.get("after")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return ""
    keys = [(k, label) for k, label in _SIZE_KEYS if isinstance(before.get(k), (int, float)) and before.get(k)
            and isinstance(after.get(k), (int, float))]
    if not keys:
        return ""
    chart = hbar_chart(
        [label for _, label in keys],
        [Series("before", BEFORE, [100.0] * len(keys)),
         Series("after", AFTER, [100.0 * after[k] / before[k] for k, _ in keys])],
        "Model size after pruning, % of the original", "% of the original",
        notes=[f"{fmt_number(before[k])} \u2192 {fmt_number(after[k])} ({_ratio(before[k], after[k])})"
               for k, _ in keys],
    )
    rows = [{"": label, "before": before.get(k), "after": after.get(k), "ratio": _ratio(before.get(k), after.get(k))}
            for k, label in keys]
    by_op = []
    ops_before, ops_after = before.get("flops_by_op") or {}, after.get("flops_by_op") or {}
    if isinstance(ops_before, dict) and isinstance(ops_after, dict):
        for op in sorted(set(ops_before) | set(ops_after), key=lambda o: -(ops_before.get(o) or 0)):
            by_op.append({"op": op, "FLOPs before": ops_before.get(op), "FLOPs after": ops_after.get(op),
                          "ratio": _ratio(ops_before.get(op), ops_after.get(op))})
    unknown = before.get("flops_unknown_nodes") or after.get("flops_unknown_nodes")
    extra = (f'<p class="muted">FLOPs not counted for: {esc(fmt_cell(unknown))}</p>' if unknown else "")
    details = (f"<details><summary>FLOPs by operator</summary>{table(by_op)}</details>" if by_op else "")
    return section("sizes", "Sizes", chart, table(rows, ["", "before", "after", "ratio"]), details, extra)


def _spaces(report: dict[str, Any]) -> str:
    spaces = [s for s in report.get("spaces") or [] if isinstance(s, dict) and s.get("prunable")]
    parts = []
    for kind in dict.fromkeys(str(s.get("kind", "channels")) for s in spaces):
        chosen = [s for s in spaces if str(s.get("kind", "channels")) == kind]
        shown = chosen[:MAX_BARS]
        sizes = [float(s.get("size") or 0) for s in shown]
        kept = [float(s["kept"]) if isinstance(s.get("kept"), (int, float)) else None for s in shown]
        notes = [f"{fmt_cell(s.get('kept'))}/{fmt_cell(s.get('size'))}" for s in shown]
        parts.append(hbar_chart(
            [_short_label(s) for s in shown],
            [Series("before", BEFORE, sizes), Series("kept", AFTER, kept)],
            f"{kind.capitalize()} kept per prunable space", kind, overlay=True, notes=notes,
            tooltips=[f"[{s.get('id', '?')}] {s.get('label', '')}" for s in shown]))
        if len(chosen) > MAX_BARS:
            parts.append(f'<p class="muted">{len(chosen) - MAX_BARS} more {esc(kind)} spaces in the JSON.</p>')
    if not parts:
        return ""
    return section("spaces", "Kept per space", *parts,
                   intro="Each bar is one channel space (channels removed together); grey is its size before, "
                         "blue what is kept. Pinned spaces are listed under Pins.")


def _short_label(space: dict[str, Any]) -> str:
    """'[3] /layers.0/mlp/up_proj/MatMul' from "MatMul '/layers.0/mlp/up_proj/MatMul' output features": the
    chart title names the kind, the tooltip keeps the whole label."""
    label = str(space.get("label", ""))
    match = re.search(r"'(.+)'", label)
    return f"[{space.get('id', '?')}] {match[1] if match else label}"


def _layers(report: dict[str, Any]) -> str:
    layers = report.get("layers")
    if not isinstance(layers, dict):
        return ""
    blocks = [b for b in layers.get("blocks") or [] if isinstance(b, dict)]
    removed = set(map(str, layers.get("removed") or []))
    if not blocks:
        return section("layers", "Residual blocks", '<p class="muted">No residual block with a weight was found; '
                                                     "nothing was removed.</p>")
    names = [str(b.get("add", f"#{i}")) for i, b in enumerate(blocks)]
    influence = [b.get("influence") if isinstance(b.get("influence"), (int, float)) else None for b in blocks]
    chart = hbar_chart(
        names, [Series("block influence", AFTER, influence, [REMOVED if n in removed else AFTER for n in names])],
        "Block influence (the lowest are removed)", "1 \u2212 cosine(x, x + f(x))", legend=False,
        notes=["removed" if n in removed else "" for n in names])
    legend = (f'<p class="muted"><span style="color:{REMOVED}">\u25a0</span> removed '
              f'<span style="color:{AFTER}">\u25a0</span> kept</p>')
    rows = [{**{k: v for k, v in b.items()}, "removed": str(b.get("add")) in removed} for b in blocks]
    return section("layers", "Residual blocks", chart, legend, table(rows),
                   intro=str(layers.get("criterion") or ""))


def _results(report: dict[str, Any], key: str, kind: str, own_kind: str) -> dict[str, Any] | None:
    """The `key` section of a prune report, or the whole report when it is a `own_kind` result itself."""
    data = report.get(key)
    if data is None and kind == own_kind:
        data = {k: v for k, v in report.items()
                if k not in ("kind", "command", "schema_version", "input", "output", "warnings")}
    return data


def _validation(report: dict[str, Any], kind: str) -> str:
    data = _results(report, "validation", kind, "validate")
    if data is None:
        return ""
    if isinstance(data, dict) and isinstance(data.get("outputs"), list):
        data = {**data, "outputs": [fidelity_row(o) if isinstance(o, dict) else o for o in data["outputs"]]}
    return section("validation", "Validation: outputs and latency", generic_results(data, "validation"),
                   intro="Original and pruned model run in ONNX Runtime on the same inputs; errors are the worst "
                         "over the samples. Each output is judged by its worst channel (or row): one cosine over an "
                         "output that mixes scales is decided by its loudest part. An output is collapsed when that "
                         f"cosine is below {COLLAPSE_COSINE} or its SNR below {COLLAPSE_SNR_DB:g} dB.")



def _bench(report: dict[str, Any], kind: str) -> str:
    data = _results(report, "bench", kind, "bench")
    if data is None:
        return ""
    return section("bench", "Benchmark", generic_results(data, "bench"))


def _sensitivity(report: dict[str, Any]) -> str:
    curves = report.get("sensitivity")
    if not isinstance(curves, list):
        curves = report.get("curves")
    curves = [c for c in curves or [] if isinstance(c, dict) and isinstance(c.get("ratios"), list)]
    if not curves:
        return ""
    plotted = [(_short_label({"id": c.get("space", "?"), "label": c.get("label", "")}), c["ratios"],
                c.get("errors") or []) for c in curves]
    chart = line_chart([p for p in plotted if p[1]], "Sensitivity: output error when one space is pruned alone",
                       "fraction of the space removed", "relative output error (log)")
    budget = report.get("budget") if isinstance(report.get("budget"), dict) else {}
    chosen = budget.get("ratios") if isinstance(budget.get("ratios"), dict) else {}
    rows = []
    for curve in curves:
        row = {"space": curve.get("space"), "kind": curve.get("kind"), "size": curve.get("size"),
               "label": curve.get("label")}
        if chosen:
            row["ratio chosen"] = chosen.get(str(curve.get("space")), 0.0)
        for ratio, error in zip(curve["ratios"], curve.get("errors") or []):
            row[f"err@{ratio:g}"] = error
        rows.append(row)
    return section("sensitivity", "Sensitivity", chart, f"<details><summary>curves as a table</summary>"
                                                        f"{table(rows)}</details>")


def _budget(report: dict[str, Any]) -> str:
    parts = []
    for key, title in (("target_search", "Target search"), ("latency_search", "Latency search")):
        value = report.get(key)
        if isinstance(value, dict):
            trials = value.get("trials")
            parts.append(f"<h3>{title}</h3>" + key_values((k, v) for k, v in value.items() if k != "trials")
                         + (table(trials) if isinstance(trials, list) else ""))
        elif isinstance(value, list):
            parts.append(f"<h3>{title}</h3>" + table([t for t in value if isinstance(t, dict)]))
    return section("search", "Budget search", *parts)


def _sparsity(report: dict[str, Any]) -> str:
    data = report.get("sparsity")
    if data is None:
        return ""
    weights = data if isinstance(data, list) else None
    if isinstance(data, dict):
        weights = next((v for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
    weights = [w for w in weights or [] if isinstance(w, dict)]
    parts = []
    dense = [w for w in weights if isinstance(w.get("density"), (int, float))][:MAX_BARS]
    if dense:
        colours = [AFTER if w.get("pattern_ok") else BEFORE for w in dense]
        parts.append(hbar_chart([str(w.get("name", "?")) for w in dense],
                                [Series("density", AFTER, [float(w["density"]) for w in dense], colours)],
                                "Density per weight (blue: pattern holds)", "fraction of non-zero weights",
                                legend=False, notes=[fmt_cell(w.get("density")) for w in dense]))
    if isinstance(data, dict):
        parts.append(generic_results(data, "sparsity"))
    else:
        parts.append(table(weights, ["name", "op", "eligible", "pattern_ok", "density", "reason"]
                           + [k for w in weights for k in w if k not in
                              ("name", "op", "eligible", "pattern_ok", "density", "reason")]))
    return section("sparsity", "Sparsity", *parts)


def _pins_and_notes(report: dict[str, Any]) -> str:
    pinned = [s for s in report.get("spaces") or [] if isinstance(s, dict) and not s.get("prunable", True)]
    rows = []
    for space in pinned:
        reasons = [str(r) for r in space.get("pinned_by") or []]
        rows.append({"id": space.get("id"), "kind": space.get("kind"), "size": space.get("size"),
                     "space": space.get("label"),
                     "pinned by": (reasons[0] if reasons else "") + (f" (+{len(reasons) - 1} more)"
                                                                    if len(reasons) > 1 else "")})
    notes = [n for n in report.get("notes") or [] if n is not None]
    for key, text in (("spaces_scored_by_magnitude", "spaces scored by magnitude (no activation data reached them)"),
                      ("spaces_without_batchnorm", "spaces without a BatchNorm (bn-scale fell back)")):
        if report.get(key):
            notes.append(f"{text}: {fmt_cell(report[key])}")
    notes_html = "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>" if notes else ""
    pins = ""
    if rows:
        pins = f"<h3>Pinned spaces ({len(rows)}): left alone</h3>" + table(rows, ["id", "kind", "size", "space",
                                                                                 "pinned by"])
    return section("pins", "Notes and pins", notes_html, pins)


def _options(report: dict[str, Any]) -> str:
    parts = []
    if isinstance(report.get("options"), dict):
        parts.append(f"<h3>Options</h3>{key_values(report['options'].items())}")
    run = [(key, report.get(key)) for key in ("criterion", "seed", "shapes", "calibration", "compensation",
                                              "bias_slots_added", "zero_bias_slots_removed", "channels_removed",
                                              "prune_seconds", "schema_version", "onnxprune_version")]
    budget = report.get("budget")
    if isinstance(budget, dict):
        run += [(f"budget {k}", v) for k, v in budget.items() if k != "ratios"]
    parts.append(key_values(run))
    if isinstance(report.get("pass_seconds"), dict):
        parts.append(f"<h3>Pass times (s)</h3>{key_values(report['pass_seconds'].items())}")
    return section("options", "Options and run", *parts)


def _other(report: dict[str, Any], kind: str) -> str:
    if kind:
        return ""  # those keys were the body of the validation/bench section
    extra = [raw_json(str(key), value) for key, value in report.items() if key not in _KNOWN]
    return section("other", "Other data", *extra)
