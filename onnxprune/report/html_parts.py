"""Building blocks of the HTML report: escaped cells, tables, key-value lists, and the generic renderer
for result dicts whose exact shape is not known here (`validate --json`, `bench --json`, future keys).

Everything that reaches the page goes through `esc`. Markup is kept well-formed XML (every tag
closed, only XML's five entities) so a test can parse the page strictly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..check.guards import collapsed, worst_phrase
from .svg_plots import AFTER, P90, Series, esc, hbar_chart

# Columns shown first when present, in this order; the rest follow in order of appearance.
PREFERRED_COLUMNS = ["name", "provider", "model", "op", "shape", "got_shape", "fidelity", "ok", "eligible",
                     "pattern_ok", "density", "worst_channel_cosine", "worst channel", "min_channel_snr_db", "cosine",
                     "max_abs", "rel_to_max", "max_rel", "mean_abs", "top1_agreement",
                     "median_ms", "p90_ms", "mean_ms", "min_ms", "runs"]
_LAST_COLUMNS = ["reason"]  # free text: widest, so last
_ZERO_HIDDEN = ("ref_nan", "ref_inf", "got_nan", "got_inf")  # shown only when some output has them
_LATENCY_KEYS = ("median_ms", "p90_ms")
MAX_ROWS = 300


class Mark(str):
    """Text shown in a cell with a verdict's colour (`css`: "yes" green, "no" red), e.g. an output's
    fidelity: a verdict is more than a bool, and a bool True would colour a collapsed output green."""

    css: str

    def __new__(cls, text: str, css: str) -> Mark:
        mark = super().__new__(cls, text)
        mark.css = css
        return mark


def fmt_cell(value: Any, key: str = "") -> str:
    """One table cell as text: numbers short but exact enough to compare (cosine 0.999987); lists of
    ints under a key naming a shape as 1x3x224x224."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        if "shape" in key.lower() and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "\u00d7".join(str(v) for v in value)
        text = ", ".join(fmt_cell(v) for v in value[:12])
        return text + (f", \u2026 ({len(value)} in all)" if len(value) > 12 else "")
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt_cell(v, f'{key}.{k}')}" for k, v in list(value.items())[:12]
                         if v not in (None, [], {}, ""))
    return str(value)


def cell_class(value: Any) -> str:
    if isinstance(value, Mark):
        return f' class="{esc(value.css)}"'
    if isinstance(value, bool):
        return ' class="yes"' if value else ' class="no"'
    return ' class="num"' if isinstance(value, (int, float)) else ""


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
          headers: dict[str, str] | None = None) -> str:
    """A table of dict rows: `columns` (default: the union of scalar-ish keys, preferred ones first);
    columns empty in every row are dropped."""
    rows = list(rows)
    if not rows:
        return ""
    if columns is None:
        seen: list[str] = []
        for row in rows:
            seen += [key for key in row if key not in seen]
        columns = ([c for c in PREFERRED_COLUMNS if c in seen]
                   + [c for c in seen if c not in PREFERRED_COLUMNS and c not in _LAST_COLUMNS]
                   + [c for c in _LAST_COLUMNS if c in seen])
    columns = [c for c in columns if any(row.get(c) not in (None, [], {}, "") for row in rows)]
    nested = [c for c in columns if any(isinstance(row.get(c), list) and any(isinstance(i, dict) for i in row[c])
                                        for row in rows)]
    columns = [c for c in columns if c not in nested]
    columns = [c for c in columns if c not in _ZERO_HIDDEN or any(row.get(c) for row in rows)]
    head = "".join(f"<th>{esc((headers or {}).get(c, c))}</th>" for c in columns)
    body = []
    for row in rows[:MAX_ROWS]:
        body.append("<tr>" + "".join(_cell(row.get(c), c) for c in columns) + "</tr>")
    more = (f'<p class="muted">{len(rows) - MAX_ROWS} more rows in the JSON.</p>' if len(rows) > MAX_ROWS else "")
    rows_html = "".join(body)
    for column in nested:  # e.g. the gates of each output: one sub-table, rows named by their parent
        flat = [{"of": _row_label(row, index), **item} for index, row in enumerate(rows)
                for item in (row.get(column) or []) if isinstance(item, dict)]
        more += f"<details><summary>{esc(column)}</summary>{table(flat)}</details>"
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table></div>{more}'


def _cell(value: Any, column: str, limit: int = 200) -> str:
    """A table cell; long text is cut, the whole of it in the hover title."""
    text = fmt_cell(value, column)
    if len(text) <= limit:
        return f"<td{cell_class(value)}>{esc(text)}</td>"
    return f'<td title="{esc(text)}">{esc(text[:limit])}\u2026</td>'


def key_values(items: Iterable[tuple[str, Any]], within: str = "") -> str:
    """Rows of key: value; `within` names the parent (so a dict under "shapes" prints 1x3x64x64)."""
    rows = [f"<tr><th>{esc(key)}</th><td{cell_class(value)}>{esc(fmt_cell(value, f'{within}.{key}'))}</td></tr>"
            for key, value in items if value not in (None, [], {}, "")]
    return f'<table class="kv"><tbody>{"".join(rows)}</tbody></table>' if rows else ""


def section(anchor: str, title: str, *parts: str, intro: str = "") -> str:
    content = "".join(part for part in parts if part)
    if not content:
        return ""
    lead = f'<p class="muted">{esc(intro)}</p>' if intro else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead}{content}</section>'


def raw_json(name: str, value: Any, limit: int = 20000) -> str:
    text = json.dumps(value, indent=1, default=str, allow_nan=True)
    if len(text) > limit:
        text = text[:limit] + f"\n\u2026 ({len(text) - limit} more characters in the JSON)"
    return f"<details><summary>{esc(name)}</summary><pre>{esc(text)}</pre></details>"


def _is_latency(value: Any) -> bool:
    return isinstance(value, dict) and any(isinstance(value.get(k), (int, float)) for k in _LATENCY_KEYS)


def _row_label(row: dict[str, Any], index: int) -> str:
    parts = [str(row[k]) for k in ("provider", "name", "model", "label", "runner", "engine") if row.get(k)]
    return " / ".join(parts) or f"#{index}"


def latency_groups(data: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict[str, dict]]:
    """Every dict holding median_ms/p90_ms, grouped by where it sits: one chart per group, so a bench
    result per provider gets one chart per provider whatever its nesting."""
    groups: dict[tuple[str, ...], dict[str, dict]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if _is_latency(value):
                groups.setdefault(path, {})[str(key)] = value
            elif isinstance(value, (dict, list)):
                for group, found in latency_groups(value, (*path, str(key))).items():
                    groups.setdefault(group, {}).update(found)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                continue
            label = _row_label(item, index)
            direct = [key for key, value in item.items() if _is_latency(value)]
            if _is_latency(item):
                groups.setdefault(path, {})[label] = item
            elif len(direct) == 1 and item.get("provider"):
                # A result row per (provider, model): one chart per provider, one bar per model.
                bar = " / ".join(str(item[k]) for k in ("model", "name", "label", "runner", "engine") if item.get(k))
                groups.setdefault((*path, str(item["provider"])), {})[bar or f"#{index}"] = item[direct[0]]
            else:
                for group, found in latency_groups(item, (*path, label)).items():
                    groups.setdefault(group, {}).update(found)
    return groups


def latency_chart(stats: dict[str, dict], title: str) -> str:
    names = list(stats)
    series = [Series("median", AFTER, [_number(stats[n].get("median_ms")) for n in names])]
    if any(_number(stats[n].get("p90_ms")) is not None for n in names):
        series.append(Series("p90", P90, [_number(stats[n].get("p90_ms")) for n in names]))
    notes = []
    for name in names:
        median, p90 = _number(stats[name].get("median_ms")), _number(stats[name].get("p90_ms"))
        runs = stats[name].get("runs")
        note = f"{median:.4g} ms" if median is not None else ""
        note += f" / p90 {p90:.4g}" if p90 is not None else ""
        note += f" ({runs} runs)" if isinstance(runs, int) else ""
        notes.append(note)
    return hbar_chart(names, series, title, "milliseconds per run", notes=notes)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def generic_results(data: Any, title: str, skip: Sequence[str] = ()) -> str:
    """Whatever a result dict holds: scalars as a key-value table, latency stats as bar charts, lists of
    dicts as tables, nested dicts as sub-sections (two levels), anything else as collapsed JSON."""
    if not isinstance(data, dict):
        if isinstance(data, list) and all(isinstance(item, dict) for item in data):
            return table(data)
        return raw_json(title, data)
    parts = []
    charts = latency_groups({k: v for k, v in data.items() if k not in skip})
    for group, stats in charts.items():
        where = [part for part in group if part.lower() not in ("latency", "latency_ms", "timing", "times")]
        parts.append(latency_chart(stats, "Latency" + (f": {' / '.join(where)}" if where else "")))
    scalars = [(k, v) for k, v in data.items() if k not in skip and not isinstance(v, (dict, list))]
    scalars += [(k, v) for k, v in data.items() if k not in skip and isinstance(v, list)
                and all(not isinstance(item, (dict, list)) for item in v)]
    parts.append(key_values(scalars))
    for key, value in data.items():
        if key in skip or _is_latency(value):
            continue
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            flat = [{k: v for k, v in item.items() if not _is_latency(v)} for item in value]
            parts.append(f"<h3>{esc(key)}</h3>{table(flat)}")
        elif isinstance(value, dict) and value and not all(_is_latency(v) for v in value.values()):
            body = key_values([(k, v) for k, v in value.items() if not _is_nested(v)], key)
            for name, item in value.items():
                if not _is_nested(item) or _is_latency(item):
                    continue
                if isinstance(item, list) and all(isinstance(i, dict) for i in item):
                    body += f"<h4>{esc(name)}</h4>{table(item)}"
                elif isinstance(item, dict) and not any(_is_nested(v) for v in item.values() if not _is_latency(v)):
                    rows_html = key_values([(k, v) for k, v in item.items() if not _is_latency(v)], name)
                    body += f"<h4>{esc(name)}</h4>{rows_html}" if rows_html else ""  # latency: charted above
                else:
                    body += raw_json(name, item)
            parts.append(f"<h3>{esc(key)}</h3>{body}" if body else "")
    return "".join(parts)


def _is_nested(value: Any) -> bool:
    """A dict, or a list holding dicts or lists: more than one table cell can show."""
    if isinstance(value, dict):
        return bool(value)
    return isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value)


def warnings_box(warnings: Any, prune: bool = True) -> str:
    """A run's warnings (check/guards.py) in a red box right under the title: they must not be missed.
    `prune`: the page is a prune report (a model was written despite them)."""
    items = [w for w in warnings or [] if isinstance(w, dict)]
    if not items:
        return ""
    rows = "".join(f"<li>{esc(w.get('message', ''))} <code>{esc(w.get('code', ''))}</code></li>" for w in items)
    after = "The model was still written; " if prune else ""
    return (f'<section id="warnings" class="warnings"><h2>Warnings ({len(items)})</h2><ul>{rows}</ul>'
            f'<p class="muted">{after}--fail-on-warning makes such a run exit 1.</p></section>')


def fidelity_row(output: dict[str, Any]) -> dict[str, Any]:
    """An output's table row with a `fidelity` verdict first. `ok` (comparable) is folded into it, and
    no green "yes" is left in the row of a collapsed output."""
    reason = collapsed(output)
    row = {k: v for k, v in output.items() if k != "ok"}
    where = worst_phrase(output)
    if where:
        row["worst channel"] = where
        row.pop("worst_channel", None)
    comparable = output.get("ok") is not False and not output.get("failure")
    row["fidelity"] = Mark("ok", "yes") if not reason else Mark("collapsed" if comparable else "not comparable", "no")
    if reason:
        row = {k: ("yes, but collapsed" if v is True else v) for k, v in row.items()}
    return row
