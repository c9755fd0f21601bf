"""A small-multiples bar chart and a line chart as SVG text, without matplotlib.

The model comparison needs one picture: a panel per quality (accuracy, training time,
latency, throughput, size), a bar per model, the value written at the end of each bar.
Plotting libraries are heavy dependencies for that, so this module writes the SVG by hand.
Pure: it returns a string; ``compare.write_report`` writes the file.

Bars are horizontal (model names are long; they read best on the left) and scaled per
panel from 0 to the panel's largest value, since the panels have different units. A model
keeps one colour (Okabe & Ito 2008 colour-blind-safe palette) across panels. A missing
value draws a zero-width bar labelled ``n/a``, so every panel has one bar per model.
Labels longer than ``MAX_LABEL_CHARS`` are cut; each bar's ``<title>`` tooltip has the
whole label and value.
Each bar is a ``<rect class="bar">`` with ``data-panel`` and ``data-label`` attributes.

``line_chart`` draws series over a shared x axis (e.g. a quantity per day of a simulated
week), one ``<polyline class="series" data-label=...>`` each, with optional vertical
markers (an event: a drift, a promotion) as ``<line class="marker">``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from offline_eval.ranking_metrics import EvalError

PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9",
                            "#D55E00", "#F0E442", "#000000")
BAR_W, VALUE_W = 150, 64  # px: the longest bar; room for its value after it
ROW_H, BAR_H, TITLE_H, PAD = 22, 14, 28, 12
CHAR_W = 7.0  # px, a generous mean glyph width of 12 px sans-serif, to size the labels
MAX_LABEL_CHARS = 28  # longer labels are cut with an ellipsis (the bar's tooltip has all)
COLUMNS = 3


@dataclass(frozen=True)
class Panel:
    """One quality: a ``title`` (with its unit) and one value per label (None or NaN =
    missing; values below 0 are drawn as 0)."""

    title: str
    values: Sequence[float | None]


def format_value(value: float | None) -> str:
    """Short text of a value: ``n/a``; from 100 up, whole numbers with thousands
    separators (``1,234``); below, 3 significant digits (``0.123``, ``12.3``)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[:MAX_LABEL_CHARS - 1] + "…"


def _panel(x0: float, y0: float, label_w: float, panel: Panel,
           labels: Sequence[str]) -> list[str]:
    finite = [v for v in panel.values if v is not None and math.isfinite(v)]
    top = max([v for v in finite if v > 0], default=1.0)
    panel_w = label_w + BAR_W + VALUE_W
    out = [f'<g class="panel" data-panel={quoteattr(panel.title)}>',
           f'<text x="{x0 + panel_w / 2:.1f}" y="{y0 + 18:.1f}" text-anchor="middle" '
           f'font-weight="bold">{escape(panel.title)}</text>']
    for i, (label, value) in enumerate(zip(labels, panel.values, strict=True)):
        y = y0 + TITLE_H + i * ROW_H
        # None and NaN draw no bar
        width = BAR_W * max(value, 0.0) / top if value is not None and math.isfinite(value) else 0.0
        text = format_value(value)
        out += [
            f'<text x="{x0 + label_w - 6:.1f}" y="{y + BAR_H - 3:.1f}" '
            f'text-anchor="end">{escape(_short(label))}</text>',
            f'<rect class="bar" data-panel={quoteattr(panel.title)} '
            f'data-label={quoteattr(label)} x="{x0 + label_w:.1f}" y="{y:.1f}" '
            f'width="{width:.1f}" height="{BAR_H}" fill="{PALETTE[i % len(PALETTE)]}">'
            f'<title>{escape(f"{label}: {text}")}</title></rect>',
            f'<text class="value" x="{x0 + label_w + width + 4:.1f}" '
            f'y="{y + BAR_H - 3:.1f}">{escape(text)}</text>',
        ]
    out.append("</g>")
    return out


def _document(width: float, height: float, title: str) -> list[str]:
    """The opening of an SVG document: its size, a white ground, the title if any."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="{PAD + 16}" text-anchor="middle" '
                   f'font-size="15" font-weight="bold">{escape(title)}</text>')
    return out


def small_multiples(labels: Sequence[str], panels: Sequence[Panel], *, title: str = "") -> str:
    """An SVG document: ``panels`` in a grid of up to ``COLUMNS`` per row, each with one
    bar per label (every panel's ``values`` aligned with ``labels``)."""
    for p in panels:
        if len(p.values) != len(labels):
            raise EvalError(f"panel {p.title!r} has {len(p.values)} values "
                             f"for {len(labels)} labels")
    columns = max(1, min(COLUMNS, len(panels)))
    rows = math.ceil(len(panels) / columns)
    head = TITLE_H if title else 0
    label_w = CHAR_W * max((len(_short(label)) for label in labels), default=0) + 12
    panel_w = label_w + BAR_W + VALUE_W
    panel_h = TITLE_H + len(labels) * ROW_H + PAD
    width = round(columns * panel_w + PAD * 2)
    height = head + rows * panel_h + PAD * 2
    out = _document(width, height, title)
    for n, panel in enumerate(panels):
        x0 = PAD + (n % columns) * panel_w
        y0 = PAD + head + (n // columns) * panel_h
        out += _panel(x0, y0, label_w, panel, labels)
    out.append("</svg>")
    return "\n".join(out) + "\n"


LINE_W, LINE_H = 640, 300  # px: the plotting area of a line chart
MARGIN_L, MARGIN_B, LEGEND_H = 64, 40, 22


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1, 2 or 5 times a power of 10)."""
    span = hi - lo if hi > lo else abs(hi) or 1.0
    raw = span / n
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, x_label: str,
               y_label: str, title: str = "",
               markers: Sequence[tuple[float, str]] = ()) -> str:
    """An SVG document: one line per series of (x, y) points (non-finite y skipped), a
    legend, axes with round ticks, and a dashed vertical line per (x, label) marker."""
    points = [(x, y) for line in series.values() for x, y in line if math.isfinite(y)]
    if not points:
        raise EvalError("a line chart needs at least one finite point")
    xs = [x for x, _ in points] + [x for x, _ in markers]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(y for _, y in points), max(y for _, y in points)
    pad = (y_hi - y_lo) * 0.08 or abs(y_hi) * 0.08 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x_span, y_span = (x_hi - x_lo) or 1.0, y_hi - y_lo
    head = TITLE_H if title else 0
    top = PAD + head + LEGEND_H
    width, height = MARGIN_L + LINE_W + PAD * 2, top + LINE_H + MARGIN_B + PAD

    def at(x: float, y: float) -> str:
        return (f"{MARGIN_L + PAD + (x - x_lo) / x_span * LINE_W:.1f},"
                f"{top + LINE_H - (y - y_lo) / y_span * LINE_H:.1f}")

    left, bottom = MARGIN_L + PAD, top + LINE_H
    out = _document(width, height, title)
    for tick in _ticks(y_lo, y_hi):
        y = at(x_lo, tick).split(",")[1]
        out += [f'<line x1="{left}" y1="{y}" x2="{left + LINE_W}" y2="{y}" stroke="#ddd"/>',
                f'<text x="{left - 6}" y="{float(y) + 4:.1f}" text-anchor="end">'
                f'{escape(format_value(tick))}</text>']
    for tick in _ticks(x_lo, x_hi):
        tx = at(tick, y_lo).split(",")[0]
        out.append(f'<text x="{tx}" y="{bottom + 16}" text-anchor="middle">'
                   f'{escape(format_value(tick))}</text>')
    out += [f'<line x1="{left}" y1="{bottom}" x2="{left + LINE_W}" y2="{bottom}" stroke="black"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>',
            f'<text x="{left + LINE_W / 2}" y="{bottom + 34}" text-anchor="middle">'
            f'{escape(x_label)}</text>',
            f'<text transform="translate({PAD + 12},{top + LINE_H / 2}) rotate(-90)" '
            f'text-anchor="middle">{escape(y_label)}</text>']
    for x, label in markers:
        px = at(x, y_lo).split(",")[0]
        out += [f'<line class="marker" data-label={quoteattr(label)} x1="{px}" y1="{top}" '
                f'x2="{px}" y2="{bottom}" stroke="#888" stroke-dasharray="4 3"/>',
                f'<text x="{float(px) + 3:.1f}" y="{top + 12}" fill="#555">{escape(label)}</text>']
    for i, (label, line) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(at(x, y) for x, y in line if math.isfinite(y))
        out += [f'<polyline class="series" data-label={quoteattr(label)} points="{path}" '
                f'fill="none" stroke="{colour}" stroke-width="2"/>',
                f'<rect x="{left + i * 170}" y="{PAD + head + 4}" width="14" height="4" '
                f'fill="{colour}"/>',
                f'<text x="{left + i * 170 + 20}" y="{PAD + head + 10}">{escape(label)}</text>']
    out.append("</svg>")
    return "\n".join(out) + "\n"
