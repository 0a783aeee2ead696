"""Plots as inline SVG text, drawn by hand so the HTML report needs nothing beyond the standard library.

Every string that reaches the SVG goes through `esc` (names come from user models). Colours are
fixed constants: the report reads the same everywhere, and the browser test finds the bars in a
screenshot by their exact fill.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

BEFORE = "#a9b8cc"  # the original model / size before pruning
AFTER = "#1f6fe0"  # the pruned model / what is kept
P90 = "#8fbaf3"  # the tail of a latency distribution, next to the median in AFTER
REMOVED = "#e4572e"  # what was removed (residual blocks)
OK = "#2a9d55"
# Curves of the sensitivity plot; distinguishable on white and for the common colour-vision deficiencies.
SERIES = ["#1f6fe0", "#e4572e", "#2a9d55", "#9b5de5", "#f2a007", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22"]
INK, GRID, MUTED = "#222222", "#e3e7ee", "#5b6472"
FONT = 12
CHAR_W = 6.6  # average glyph width of the 12 px sans-serif, to size the label margin without a font


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def fmt_number(value: float) -> str:
    """3 significant digits with k/M/G: tick labels and bar annotations stay short."""
    if value is None or not math.isfinite(value):
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def nice_ticks(high: float, count: int = 5) -> list[float]:
    """0 .. >= high in steps of 1, 2 or 5 x 10^k."""
    if not high > 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [0.0]
    while ticks[-1] < high * (1 - 1e-9):
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _truncate(text: str, chars: int) -> str:
    """Cut the middle: the head holds the space id and op, the tail the layer's own name."""
    if len(text) <= chars:
        return text
    head = max(chars // 3, 1)
    return text[:head] + "\u2026" + text[len(text) - (chars - head - 1):]


def _log_label(power: int) -> str:
    return f"{10.0 ** power:g}" if -3 <= power <= 4 else f"1e{power}"


def _svg(width: float, height: float, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{esc(title)}" '
            f'font-family="DejaVu Sans, Arial, Helvetica, sans-serif" font-size="{FONT}">'
            f"<title>{esc(title)}</title>{''.join(body)}</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", colour: str = INK, size: int = FONT,
          weight: str = "normal", extra: str = "", tooltip: str = "") -> str:
    tip = f"<title>{esc(tooltip)}</title>" if tooltip else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{colour}" font-size="{size}" '
            f'font-weight="{weight}"{extra}>{tip}{esc(text)}</text>')


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    parts = []
    for name, colour in items:
        parts.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{colour}"/>')
        parts.append(_text(x + 17, y, name))
        x += 30 + len(name) * CHAR_W
    return parts


@dataclass
class Series:
    name: str
    colour: str
    values: Sequence[float | None]
    colours: Sequence[str] | None = None  # per-bar override (e.g. removed blocks)


def hbar_chart(
    categories: Sequence[str],
    series: Sequence[Series],
    title: str,
    x_label: str,
    overlay: bool = False,
    notes: Sequence[str] | None = None,
    tick_format: Callable[[float], str] = fmt_number,
    legend: bool = True,
    tooltips: Sequence[str] | None = None,
    width: int = 1040,
) -> str:
    """Horizontal bars, one row per category: series side by side, or drawn over each other (`overlay`,
    first series behind: 'kept of before'). `notes` are written after each row's longest bar; `tooltips`
    replace the row labels (which are cut to 52 characters) in the hover text."""
    label_chars = min(max((len(c) for c in categories), default=4), 52)
    left = 16 + label_chars * CHAR_W
    note_room = 12 + min(max((len(n) for n in notes or [""]), default=0), 28) * CHAR_W
    plot_w = max(width - left - note_room - 16, 200)
    bar_h = 14
    row_h = bar_h + 6 if overlay else bar_h * len(series) + 8
    top = 52 if legend and len(series) > 1 else 34
    height = top + row_h * len(categories) + 44
    finite = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    ticks = nice_ticks(max(finite, default=1.0))
    scale = plot_w / ticks[-1]
    body = [_text(left, 20, title, weight="bold", size=14)]
    if legend and len(series) > 1:
        body += _legend([(s.name, s.colour) for s in series], left, 40)
    bottom = top + row_h * len(categories)
    for tick in ticks:
        x = left + tick * scale
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="{GRID}"/>')
        body.append(_text(x, bottom + 15, tick_format(tick), "middle", MUTED, 11))
    body.append(_text(left + plot_w / 2, bottom + 34, x_label, "middle", MUTED))
    for row, category in enumerate(categories):
        y0 = top + row * row_h + 3
        full = tooltips[row] if tooltips and row < len(tooltips) else category
        body.append(_text(left - 8, y0 + (row_h - 6) / 2 + 4, _truncate(category, 52), "end", tooltip=full))
        end = left
        for index, item in enumerate(series):
            value = item.values[row] if row < len(item.values) else None
            if value is None or not math.isfinite(value):
                continue
            colour = item.colours[row] if item.colours else item.colour
            y = y0 if overlay else y0 + index * bar_h
            w = max(value * scale, 0.0)
            tip = f"{category}: {item.name} {fmt_number(value)}"
            body.append(f'<rect x="{left:.1f}" y="{y:.1f}" width="{w:.1f}" height="{bar_h - 2}" fill="{colour}">'
                        f"<title>{esc(tip)}</title></rect>")
            end = max(end, left + w)
        if notes and row < len(notes) and notes[row]:
            body.append(_text(end + 6, y0 + (row_h - 6) / 2 + 4, notes[row], colour=MUTED, size=11))
    body.append(f'<line x1="{left:.1f}" y1="{top - 4}" x2="{left:.1f}" y2="{bottom}" stroke="{INK}"/>')
    return _svg(width, height, body, title)


def line_chart(
    curves: Sequence[tuple[str, Sequence[float], Sequence[float | None]]],
    title: str,
    x_label: str,
    y_label: str,
    log_y: bool = True,
    width: int = 1040,
    height: int = 380,
) -> str:
    """Curves (name, xs, ys) with markers; a log y axis by default (errors span decades). Zero or
    missing values on a log axis sit on the floor of the axis."""
    left, right, top = 78, 270, 34
    bottom = height - 48
    plot_w, plot_h = width - left - right, bottom - top
    xs = [x for _, cx, _ in curves for x in cx]
    ys = [y for _, _, cy in curves for y in cy if y is not None and math.isfinite(y)]
    x_ticks = nice_ticks(max(xs, default=1.0))
    x_scale = plot_w / x_ticks[-1]
    if log_y:
        positive = [y for y in ys if y > 0] or [1.0]
        low = math.floor(math.log10(min(positive)))
        high = max(math.ceil(math.log10(max(positive))), low + 1)
        y_ticks = [10.0 ** k for k in range(low, high + 1)]

        def y_of(value: float | None) -> float:
            if value is None or not math.isfinite(value) or value <= 0:
                return bottom
            return bottom - (math.log10(value) - low) / (high - low) * plot_h
    else:
        y_ticks = nice_ticks(max(ys, default=1.0))

        def y_of(value: float | None) -> float:
            value = 0.0 if value is None or not math.isfinite(value) else value
            return bottom - value / y_ticks[-1] * plot_h
    body = [_text(left, 20, title, weight="bold", size=14)]
    for tick in y_ticks:
        y = y_of(tick) if not log_y or tick > 0 else bottom
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{GRID}"/>')
        label = _log_label(round(math.log10(tick))) if log_y else fmt_number(tick)
        body.append(_text(left - 6, y + 4, label, "end", MUTED, 11))
    for tick in x_ticks:
        x = left + tick * x_scale
        body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{GRID}"/>')
        body.append(_text(x, bottom + 15, f"{tick:g}", "middle", MUTED, 11))
    body.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="{INK}"/>')
    body.append(_text(left + plot_w / 2, bottom + 36, x_label, "middle", MUTED))
    body.append(_text(18, top + plot_h / 2, y_label, "middle", MUTED,
                      extra=f' transform="rotate(-90 18 {top + plot_h / 2:.1f})"'))
    for index, (name, cx, cy) in enumerate(curves):
        colour = SERIES[index % len(SERIES)]
        dash = ' stroke-dasharray="6 3"' if index // len(SERIES) % 2 else ""  # colours repeat after 10 curves
        points = [(left + x * x_scale, y_of(y)) for x, y in zip(cx, cy)]
        if not points:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"{dash}>'
                    f"<title>{esc(name)}</title></polyline>")
        for (x, y), value in zip(points, cy):
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                        f"<title>{esc(name)}: {esc(fmt_number(value) if value is not None else '-')}</title></circle>")
        if index < 22:  # the legend column holds ~22 rows; the table below the plot lists every curve
            ly = top + 6 + index * 14
            body.append(f'<rect x="{left + plot_w + 14}" y="{ly - 9}" width="12" height="4" fill="{colour}"/>')
            body.append(_text(left + plot_w + 30, ly - 3, _truncate(name, 40), size=10))
    return _svg(width, height, body, title)
