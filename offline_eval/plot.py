"""A small-multiples bar chart as SVG text, without matplotlib.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="{PAD + 16}" text-anchor="middle" '
                   f'font-size="15" font-weight="bold">{escape(title)}</text>')
    for n, panel in enumerate(panels):
        x0 = PAD + (n % columns) * panel_w
        y0 = PAD + head + (n // columns) * panel_h
        out += _panel(x0, y0, label_w, panel, labels)
    out.append("</svg>")
    return "\n".join(out) + "\n"
