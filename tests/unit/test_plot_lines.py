"""The SVG line chart: every finite point drawn where its value says, markers where
they belong, and a clear error when there is nothing to draw."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from offline_eval.plot import LINE_H, _ticks, line_chart
from offline_eval.ranking_metrics import EvalError

NS = {"svg": "http://www.w3.org/2000/svg"}


def _points(svg: str) -> dict[str, list[tuple[float, float]]]:
    root = ET.fromstring(svg)
    return {p.get("data-label"): [tuple(map(float, xy.split(","))) for xy in p.get("points").split()]
            for p in root.iterfind(".//svg:polyline", NS)}


def test_each_series_is_a_line_through_its_finite_points_scaled_to_the_axes() -> None:
    svg = line_chart({"on": [(0, 1.0), (1, 2.0), (2, 3.0)], "off": [(0, 1.0), (1, math.nan), (2, 1.0)]},
                     x_label="day", y_label="utility", title="t", markers=[(1.5, "drift")])
    lines = _points(svg)
    assert len(lines["on"]) == 3 and len(lines["off"]) == 2  # NaN skipped
    (x0, y0), (x1, y1), (x2, y2) = lines["on"]
    assert x0 < x1 < x2 and y0 > y1 > y2  # higher values are drawn higher (smaller y)
    assert x1 - x0 == pytest.approx(x2 - x1) and y0 - y1 == pytest.approx(y1 - y2)
    assert abs(y0 - y2) < LINE_H  # padded: no point on the frame
    assert lines["off"][0][1] == pytest.approx(y0)  # same value, same height
    marker = ET.fromstring(svg).find(".//svg:line[@class='marker']", NS)
    assert marker is not None and marker.get("data-label") == "drift"
    assert float(marker.get("x1")) == pytest.approx((x1 + x2) / 2)


def test_ticks_are_round_and_cover_the_range() -> None:
    assert _ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ticks = _ticks(1.37, 1.92)
    assert all(1.37 <= t <= 1.92 for t in ticks) and len(ticks) >= 3
    assert all(round(t / 0.1, 6).is_integer() or round(t / 0.05, 6).is_integer() for t in ticks)


def test_nothing_to_draw_is_an_error() -> None:
    with pytest.raises(EvalError, match="finite point"):
        line_chart({"a": [(0, math.nan)]}, x_label="x", y_label="y")
