"""The dashboard's charts as inline SVG, drawn on the server: no JavaScript, no CDN.

Pure functions from numbers to SVG text. ``offline_eval.plot`` draws the reports' charts
on a numeric x axis at a fixed report size; a dashboard needs a time axis in UTC, a
threshold line (the 600 ms deadline), a log scale for latencies, error bars and state
strips at panel size, so they are drawn here, with that module's colour-blind-safe
palette (Okabe & Ito 2008) and its number format.

Every mark carries ``data-*`` attributes (label, value), so a test can read the figures a
person sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from offline_eval.plot import PALETTE

W, H = 440, 170  # px: a chart's whole size
ML, MR, MT, MB = 58, 10, 8, 22  # px: margins (the y labels left, the time labels below)
GRID = "#e5e5e5"
THRESHOLD = "#D55E00"
TIME_STEPS_S = (60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400)


def fmt(value: float, unit: str, *, tick: bool = False) -> str:
    """A value as a person reads it in ``unit`` (Grafana's unit ids); ``tick``: an axis
    label (shares without trailing zeros)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if unit == "s":
        if abs(value) >= 100:
            return f"{value:,.0f} s"
        return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit == "percentunit":
        if tick:
            return f"{value * 100:.3g} %"
        return f"{value * 100:.2f} %" if abs(value) >= 0.001 or value == 0 else f"{value * 100:.2g} %"
    if unit == "reqps":
        return f"{value:.3g}/s"
    if unit == "currencyUSD":
        return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.3g}"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round values (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    span = hi - lo if hi > lo else abs(hi) or 1.0
    power = 10.0 ** math.floor(math.log10(span / n))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= span / n)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(math.ceil((hi - first) / step - 1e-9) + 1)]


def time_ticks(start: float, end: float) -> list[tuple[float, str]]:
    """(unix seconds, label) at round UTC times, at most 6 across [start, end]."""
    span = max(end - start, 1.0)
    step = next((s for s in TIME_STEPS_S if span / s <= 5), 86_400 * math.ceil(span / 86_400 / 5))
    first = math.ceil(start / step) * step
    shape = "%b %d" if step >= 86_400 else "%H:%M"
    return [(t, datetime.fromtimestamp(t, UTC).strftime(shape))
            for t in range(int(first), int(end) + 1, int(step))]


def _open(kind: str, height: int = H) -> list[str]:
    return [f'<svg class="chart {kind}" xmlns="http://www.w3.org/2000/svg" width="{W}" '
            f'height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="10">']


def time_chart(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, start: float,
               end: float, unit: str, threshold: float | None = None, log_y: bool = False) -> str:
    """Lines over [start, end] (unix seconds), one per (label, points); NaN breaks a line.
    ``threshold`` draws a red horizontal line; ``log_y`` a log scale (values <= 0 left out)."""
    values = [v for _, pts in series for _, v in pts if math.isfinite(v) and (v > 0 or not log_y)]
    if threshold is not None:
        values.append(threshold)
    lo, hi = (min(values, default=0.0), max(values, default=1.0))
    if log_y:
        lo_e = math.floor(math.log10(max(lo, 1e-9)))
        hi_e = math.ceil(math.log10(max(hi, 1e-9)))
        hi_e = max(hi_e, lo_e + 1)
        ticks = [10.0 ** e for e in range(lo_e, hi_e + 1)]
        y_lo, y_hi = float(lo_e), float(hi_e)
    else:
        lo = min(lo, 0.0)
        hi = hi if hi > lo else lo + 1.0
        ticks = nice_ticks(lo, hi)
        y_lo, y_hi = min(ticks[0], lo), max(ticks[-1], hi)

    def y_of(v: float) -> float:
        scaled = math.log10(v) if log_y else v
        return MT + (H - MT - MB) * (1 - (scaled - y_lo) / ((y_hi - y_lo) or 1.0))

    def x_of(t: float) -> float:
        return ML + (W - ML - MR) * (t - start) / ((end - start) or 1.0)

    out = _open("time")
    for tick in ticks:
        y = y_of(tick)
        out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
                   f'<text x="{ML - 4}" y="{y + 3:.1f}" '
                   f'text-anchor="end">{escape(fmt(tick, unit, tick=True))}</text>')
    for t, label in time_ticks(start, end):
        out.append(f'<text x="{x_of(t):.1f}" y="{H - 6}" text-anchor="middle">{label}</text>')
    if threshold is not None:
        y = y_of(threshold)
        out.append(f'<line class="threshold" data-value="{threshold!r}" x1="{ML}" x2="{W - MR}" '
                   f'y1="{y:.1f}" y2="{y:.1f}" stroke="{THRESHOLD}" stroke-width="1.5" '
                   f'stroke-dasharray="6 3"><title>{escape(fmt(threshold, unit))}</title></line>')
    for i, (label, points) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for t, v in points:
            if math.isfinite(v) and (v > 0 or not log_y):
                runs[-1].append(f"{x_of(t):.1f},{y_of(v):.1f}")
            elif runs[-1]:
                runs.append([])
        last = next((v for _, v in reversed(points) if math.isfinite(v)), math.nan)
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            elif run:
                out.append(f'<polyline class="series" data-label={quoteattr(label)} '
                           f'data-value="{last!r}" fill="none" stroke="{colour}" '
                           f'stroke-width="1.6" points="{" ".join(run)}"/>')
    out.append(f'<line x1="{ML}" x2="{ML}" y1="{MT}" y2="{H - MB}" stroke="#999"/></svg>')
    return "".join(out)


def interval_chart(rows: Sequence[tuple[str, float, float, float]], *, unit: str) -> str:
    """One row per (label, estimate, low, high): a point with its interval as error bars,
    on a shared axis from 0."""
    height = MT + MB + 26 * max(len(rows), 1)
    top = max((high for _, _, _, high in rows), default=1.0) or 1.0
    ticks = nice_ticks(0.0, top)
    right = max(ticks[-1], top)

    def x_of(v: float) -> float:  # room on the right for the last tick's label
        return ML + 40 + (W - ML - 40 - MR - 16) * v / right

    out = _open("intervals", height)
    for tick in ticks:
        x = x_of(tick)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT}" y2="{height - MB}" stroke="{GRID}"/>'
                   f'<text x="{x:.1f}" y="{height - 6}" '
                   f'text-anchor="middle">{escape(fmt(tick, unit, tick=True))}</text>')
    for i, (label, estimate, low, high) in enumerate(rows):
        y = MT + 13 + 26 * i
        colour = PALETTE[i % len(PALETTE)]
        tip = f"{label}: {fmt(estimate, unit)} [{fmt(low, unit)}, {fmt(high, unit)}]"
        out.append(f'<text x="{ML + 34}" y="{y + 3}" text-anchor="end">{escape(label[:16])}</text>'
                   f'<g class="estimate" data-label={quoteattr(label)} data-value="{estimate!r}" '
                   f'data-low="{low!r}" data-high="{high!r}" stroke="{colour}" stroke-width="2">'
                   f'<title>{escape(tip)}</title>'
                   f'<line x1="{x_of(low):.1f}" x2="{x_of(high):.1f}" y1="{y}" y2="{y}"/>'
                   f'<line x1="{x_of(low):.1f}" x2="{x_of(low):.1f}" y1="{y - 6}" y2="{y + 6}"/>'
                   f'<line x1="{x_of(high):.1f}" x2="{x_of(high):.1f}" y1="{y - 6}" y2="{y + 6}"/>'
                   f'<circle cx="{x_of(estimate):.1f}" cy="{y}" r="4" fill="{colour}"/></g>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(rows: Sequence[tuple[str, float]], *, unit: str, group: int = 0) -> str:
    """One horizontal bar per (label, value) from 0, the value written after it. With
    ``group``, rows come in groups of that size and a row's colour is its place in its
    group (one colour per model across metrics); else each row has its own colour."""
    height = MT + 8 + 24 * max(len(rows), 1)
    top = max((v for _, v in rows if math.isfinite(v)), default=1.0) or 1.0
    width = W - ML - 40 - MR - 70
    out = _open("bars", height)
    for i, (label, value) in enumerate(rows):
        y = MT + 24 * i
        size = width * max(value, 0.0) / top if math.isfinite(value) else 0.0
        out.append(f'<text x="{ML + 34}" y="{y + 13}" text-anchor="end">{escape(label[:16])}</text>'
                   f'<rect class="bar" data-label={quoteattr(label)} data-value="{value!r}" '
                   f'x="{ML + 40}" y="{y + 3}" width="{size:.1f}" height="14" '
                   f'fill="{PALETTE[(i % group if group else i) % len(PALETTE)]}"/>'
                   f'<text x="{ML + 44 + size:.1f}" y="{y + 14}">{escape(fmt(value, unit))}</text>')
    out.append("</svg>")
    return "".join(out)


def span_chart(spans: Sequence[tuple[str, float, float, str, str]], *, start: float,
               end: float) -> str:
    """One row per (label, from, to, colour, tooltip) over [start, end] (unix seconds):
    a state's history, or the loop's cycles. Spans are at least 3 px wide."""
    height = MT + MB + 18 * max(len({label for label, *_ in spans}), 1)

    def x_of(t: float) -> float:
        return ML + (W - ML - MR) * (min(max(t, start), end) - start) / ((end - start) or 1.0)

    out = _open("spans", height)
    for t, label in time_ticks(start, end):
        out.append(f'<line x1="{x_of(t):.1f}" x2="{x_of(t):.1f}" y1="{MT}" y2="{height - MB}" '
                   f'stroke="{GRID}"/><text x="{x_of(t):.1f}" y="{height - 6}" '
                   f'text-anchor="middle">{label}</text>')
    rows: dict[str, int] = {}
    for label, t0, t1, colour, tip in spans:
        row = rows.setdefault(label, len(rows))
        y = MT + 18 * row
        x0 = x_of(t0)
        out.append(f'<text x="{ML - 4}" y="{y + 12}" text-anchor="end">{escape(label[:12])}</text>'
                   f'<rect class="span" data-label={quoteattr(label)} x="{x0:.1f}" y="{y + 2}" '
                   f'width="{max(x_of(t1) - x0, 3.0):.1f}" height="13" fill="{colour}">'
                   f'<title>{escape(tip)}</title></rect>')
    out.append("</svg>")
    return "".join(out)
