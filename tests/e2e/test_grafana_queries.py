"""Every query of the Grafana dashboard (ops/grafana/dashboards/movierec.json) against the
demo's real Prometheus while its services run: Grafana is not installable here, so this is
what stands in for opening the dashboard. A query fails when it returns no series, or when
it names a metric that no process exports and no rule records."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops/grafana/dashboards/movierec.json"
VARIABLES = {"$__rate_interval": "1m", "$__range": "15m"}
"""Grafana's variables as Grafana would fill them for the last 15 minutes at 5 s scrapes."""
BUILTIN = {"ALERTS", "ALERTS_FOR_STATE"}
"""Series Prometheus itself makes (from its alerting rules)."""
WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
         "offset", "bool", "inf", "nan"}


def targets() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(f"{panel['title']} {target['refId']}", target["expr"])
            for panel in board["panels"] for target in panel["targets"]]


def filled(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither a
    function (followed by "("), a keyword, a label name in a grouping or a matcher, nor
    inside a string or a range."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, label_replace's args
    text = re.sub(r"\{[^}]*\}", "{}", text)  # matchers: label names
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges
    text = re.sub(r"\boffset\s+\S+", " ", text)  # offsets: durations or $__range
    text = re.sub(r"(?<![A-Za-z0-9_:])\d[\w.]*", " ", text)  # numbers (0.5, 1e3)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group().lower() in WORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_are_read_from_expressions() -> None:
    expr = ('sum by (reason) (rate(movierec_a_total{x="y"}[5m])) or on() label_replace('
            '0 * sum(rate(movierec_b_total[1m])), "reason", "none", "", "") / ALERTS{a="b"}')
    assert metric_names(expr) == {"movierec_a_total", "movierec_b_total", "ALERTS"}
    assert metric_names("histogram_quantile(0.5, sum by (le) (rate(m_bucket[1m])))") == {"m_bucket"}
    assert metric_names("(x unless x offset $__range) or 2e3 * y offset 5m") == {"x", "y"}
    page = ('# HELP a x\n# TYPE a counter\n# TYPE d_total counter\n# TYPE b histogram\n'
            'b_bucket{le="1"} 0\n# TYPE c gauge\nc 1\n')
    assert exposed(page) == {"a_total", "d_total", "b_bucket", "b_sum", "b_count", "c"}


def exposed(exposition: str) -> set[str]:
    """The sample names a /metrics page declares (``# TYPE`` lines), samples or not yet: a
    labelled counter is exported before its first increment, only without samples."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count", ""), "gauge": ("",), "untyped": ("",)}
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE):
        base = name.removesuffix("_total") if kind == "counter" else name  # both forms occur
        names |= {base + suffix for suffix in suffixes.get(kind, ("",))}
    return names


def _api(prometheus: str, path: str, **params: str) -> dict:
    url = f"{prometheus}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    return body["data"]


def test_every_grafana_query_returns_series_of_exported_metrics(demo_env: dict[str, str],
                                                                report: dict) -> None:
    prometheus = f"http://127.0.0.1:{demo_env['MOVIEREC_PROMETHEUS_PORT']}"
    known = set(_api(prometheus, "/api/v1/label/__name__/values"))
    known |= {rule["name"] for group in _api(prometheus, "/api/v1/rules")["groups"]
              for rule in group["rules"]}
    known |= BUILTIN
    for target in _api(prometheus, "/api/v1/targets")["activeTargets"]:
        if target["health"] == "up":
            with urllib.request.urlopen(target["scrapeUrl"], timeout=30) as answer:
                known |= exposed(answer.read().decode("utf-8"))
    end = time.time()
    empty, unknown = [], {}
    for name, expr in targets():
        if missing := metric_names(expr) - known:
            unknown[name] = sorted(missing)
        data = _api(prometheus, "/api/v1/query_range", query=filled(expr),
                    start=f"{end - 900:.0f}", end=f"{end:.0f}", step="15")
        if not data["result"]:
            empty.append(name)
    assert unknown == {}, "metrics no process exports and no rule records"
    assert empty == [], "queries without a series over the last 15 minutes"
    assert len(targets()) >= 20
