"""The dashboard's pure parts on fixed data: the charts, the take rate's Wilson interval,
Prometheus's answers, and the page (every panel drawn, a missing one says why)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import pytest

from ops.dashboard import charts, render, sources
from ops.dashboard.page import PanelData, View, proportions
from ops.dashboard.panels import PANELS
from ops.dashboard.prom import Result, Series, parse

END = 1_796_644_800.0  # 2026-12-07 12:00:00 UTC
VIEW = View("1h", "off", 3600, END, 30, 35)


def test_values_read_in_their_units() -> None:
    assert charts.fmt(0.0123, "s") == "12.3 ms" and charts.fmt(2.5, "s") == "2.5 s"
    assert charts.fmt(0.99871, "percentunit") == "99.87 %" and charts.fmt(0.0, "percentunit") == "0.00 %"
    assert charts.fmt(1.4321, "currencyUSD") == "$1.43" and charts.fmt(12_345, "short") == "12.3k"
    assert charts.fmt(math.nan, "s") == "n/a" and charts.fmt(1000, "s") == "1,000 s"
    assert charts.fmt(0.2, "percentunit", tick=True) == "20 %"


def test_ticks_are_round_and_cover_the_range() -> None:
    assert charts.nice_ticks(0, 23) == [0, 10, 20, 30]
    assert charts.nice_ticks(0, 0.06) == pytest.approx([0, 0.02, 0.04, 0.06])
    ticks = charts.time_ticks(END - 3600, END)
    assert [label for _, label in ticks] == ["11:00", "11:15", "11:30", "11:45", "12:00"]
    assert charts.time_ticks(END - 7 * 86_400, END)[-1][1] == "Dec 07"


def _ys(svg: str, cls: str) -> list[float]:
    return [float(y) for y in re.findall(rf'class="{cls}"[^>]*?y1="([0-9.]+)"', svg)]


def test_the_latency_chart_draws_the_deadline_above_the_series_on_a_log_scale() -> None:
    points = [(END - 60 * i, 0.01) for i in range(10, 0, -1)]
    svg = charts.time_chart([("p99", points)], start=END - 3600, end=END, unit="s",
                            threshold=0.6, log_y=True)
    deadline = _ys(svg, "threshold")[0]
    line_y = float(re.search(r'points="[0-9.]+,([0-9.]+)', svg).group(1))
    assert deadline < line_y, "0.6 s is drawn above 10 ms"
    assert 'data-value="0.6"' in svg and ">100 ms<" in svg and ">10 ms<" in svg


def test_a_nan_breaks_the_line_instead_of_joining_across_the_gap() -> None:
    points = [(END - 300, 1.0), (END - 240, 2.0), (END - 180, math.nan), (END - 120, 3.0),
              (END - 60, 4.0)]
    svg = charts.time_chart([("a", points)], start=END - 600, end=END, unit="short")
    assert svg.count("<polyline") == 2 and 'data-value="4.0"' in svg


def test_take_rates_carry_wilson_intervals_over_whole_counts() -> None:
    taken = Result("t", [Series({"arm": "champion"}, [(END, 10.4)]),
                         Series({"arm": "challenger"}, [(END, 45.0)])])
    eligible = Result("e", [Series({"arm": "champion"}, [(END, 99.6)]),
                            Series({"arm": "challenger"}, [(END, 50.0)]),
                            Series({"arm": "idle"}, [(END, 0.0)])])
    rows = {arm: (p, lo, hi, n) for arm, p, lo, hi, n in proportions(taken, eligible)}
    assert set(rows) == {"champion", "challenger"}, "an arm without lists has no rate"
    p, lo, hi, n = rows["champion"]  # 10 of 100: Wilson (1927) 95 % = [0.0552, 0.1744]
    assert (p, n) == (0.1, 100) and lo == pytest.approx(0.05523, abs=1e-4)
    assert hi == pytest.approx(0.17437, abs=1e-4)
    _, lo, hi, _ = rows["challenger"]  # 45 of 50
    assert (lo, hi) == (pytest.approx(0.7864, abs=1e-4), pytest.approx(0.9565, abs=1e-4))
    svg = charts.interval_chart([("champion", p, 0.0552, 0.1744)], unit="percentunit")
    assert 'data-label="champion" data-value="0.1" data-low="0.0552" data-high="0.1744"' in svg


def test_prometheus_answers_become_series_or_a_reason() -> None:
    vector = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"arm": "a"}, "value": [END, "0.25"]}]}}
    got = parse("q", vector)
    assert got.series[0].labels == {"arm": "a"} and got.series[0].last == 0.25 and got.why_empty is None
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[END - 5, "1"], [END, "NaN"]]}]}}
    assert parse("q", matrix).series[0].last == 1.0
    assert parse("q", {"status": "success", "data": {"resultType": "vector", "result": []}}
                 ).why_empty == "the query returned no series"
    nan = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [END, "NaN"]}]}}
    assert "NaN" in parse("q", nan).why_empty
    assert parse("q", {"status": "error", "error": "parse error"}).why_empty == "Prometheus: parse error"


def _fixed(panel_key: str) -> PanelData:
    panel = next(p for p in PANELS if p.key == panel_key)
    line = [Series({"status": "200", "reason": "shed", "kind": "watch", "feature": "rating",
                    "arm": "champion", "version": "v1", "alertname": "none"},
                   [(END - 60 * i, 0.5) for i in range(5, -1, -1)])]
    results = [Result(t.expr, line) for t in panel.targets]
    at = datetime.fromtimestamp(END - 600, UTC)
    store = {"models": [sources.ModelCard("champion", "als-1", "als", "2026-12-07", {"ndcg@20": 0.14})],
             "experiment": sources.ExperimentInfo("canary-1", (sources.ArmInfo("champion", "champion", 0.7),
                                                               sources.ArmInfo("challenger", "als-1", 0.3)),
                                                  True, "2026-12-07T11:00", "loop"),
             "timeline": [sources.CycleInfo("0001-x", "schedule", at, None, "canary", None, "", "als-1")],
             "alerts": ([], [{"alertname": "Lag", "status": "resolved", "severity": "page",
                              "summary": "lag", "since": "2026-12-07"}])}.get(panel.kind)
    if panel.kind == "proportion":
        results = [Result("r", line), Result("t", [Series({"arm": "a"}, [(END, 3.0)])]),
                   Result("e", [Series({"arm": "a"}, [(END, 10.0)])])]
    return PanelData(panel, results, store)


def test_the_page_draws_every_panel_and_a_missing_one_says_why() -> None:
    panels = [_fixed(p.key) for p in PANELS]
    panels[0].results[0] = Result("q", error="Prometheus at http://x did not answer")
    panels[0].missing = panels[0].results[0].why_empty
    html = render.page_html(panels, VIEW, elapsed_s=0.05)
    states = dict(re.findall(r'data-panel="([a-z_]+)" data-state="([a-z]+)"', html))
    assert set(states) == {p.key for p in PANELS}
    assert states.pop(PANELS[0].key) == "nodata" and set(states.values()) == {"ok"}
    assert html.count("no data:") == 1 and "no data: Prometheus at http://x did not answer" in html
    assert '<meta http-equiv="refresh"' not in html and "built in 50 ms" in html
    shed = re.search(r'data-panel="shed".*?class="stat" data-value="([^"]+)" data-time="(\d+)"', html)
    assert shed and float(shed.group(1)) == 0.5 and shed.group(2) == f"{END:.0f}"
    assert "canary-1" in html and "look up" in html and "none firing" in html
    refreshing = render.page_html(panels, View("15m", "10s", 900, END, 8, 20), elapsed_s=0.0)
    assert '<meta http-equiv="refresh" content="10">' in refreshing


def test_the_provenance_page_shows_model_code_and_data() -> None:
    found = sources.Provenance("ab12", 5, "default", "2026-12-07T11:00:00+00:00", "als-1", "als",
                               "e4744a5", False, "5627b771", 1000)
    html = render.provenance_html(found, None, "ab12")
    for text in ("als-1 (als)", "e4744a5 dirty=False", "5627b771 (1000 rows)"):
        assert text in html
    assert "no data: not found" in render.provenance_html(None, "not found", "zz")
