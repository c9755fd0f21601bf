"""The Grafana dashboard built from the page's panel list (``ops.dashboard.panels``), for
teams that run Grafana: ``movierec dashboard --grafana ops/grafana/dashboards/movierec.json``
writes it, and a unit test holds the committed file equal to ``build()``.

Each panel keeps its queries as written (Grafana fills ``$__rate_interval`` and
``$__range``). Kinds map to Grafana's panel types: lines to ``timeseries`` (the latency's
deadline as a red threshold line, log scales where the page has them), stats to ``stat``,
states and the loop to ``state-timeline``, figures per arm to ``bargauge`` (the take
rate's success and trial counts ride along as hidden queries). What only the page can
show (the registry's cards, the journal's cycles, the alerts' notifications, the
provenance lookup) stays on the page; Grafana shows those panels' Prometheus side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ops.dashboard.panels import PANELS, Panel

UID = "movierec-overview"
DATASOURCE = {"type": "prometheus", "uid": "movierec-prometheus"}
"""The data source ops/grafana/provisioning/datasources/prometheus.yml provisions."""
TYPES = {"line": "timeseries", "drift": "timeseries", "models": "timeseries",
         "experiment": "timeseries", "alerts": "timeseries", "stat": "stat",
         "state": "state-timeline", "timeline": "state-timeline", "bars": "bargauge",
         "proportion": "bargauge"}
WIDTH, HEIGHT = 12, 8  # grid units: two panels a row


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.threshold is not None:
        defaults["thresholds"] = {"mode": "absolute", "steps": [
            {"color": "green", "value": None}, {"color": "red", "value": panel.threshold}]}
    custom: dict[str, Any] = {}
    if panel.threshold is not None:
        custom["thresholdsStyle"] = {"mode": "line"}
    if panel.log_y:
        custom["scaleDistribution"] = {"type": "log", "log": 10}
    if custom:
        defaults["custom"] = custom
    if panel.states:
        colours = ("green", "red")
        defaults["mappings"] = [{"type": "value", "options": {
            f"{value:g}": {"text": name, "color": colours[min(i, 1)], "index": i}
            for i, (value, name) in enumerate(panel.states)}}]
    if panel.kind == "proportion":
        defaults["min"], defaults["max"] = 0, 1
    return {"defaults": defaults, "overrides": []}


def _panel(panel: Panel, number: int) -> dict[str, Any]:
    targets = []
    for i, target in enumerate(panel.targets):
        entry: dict[str, Any] = {"refId": chr(ord("A") + i), "expr": target.expr,
                                 "legendFormat": target.legend, "datasource": DATASOURCE}
        if panel.instant:
            entry["instant"], entry["range"] = True, False
        if panel.kind == "proportion" and i > 0:
            entry["hide"] = True  # the counts behind the rate: the page's intervals use them
        targets.append(entry)
    return {"id": number, "type": TYPES[panel.kind], "title": panel.title,
            "description": panel.description, "datasource": DATASOURCE,
            "gridPos": {"x": (number - 1) % 2 * WIDTH, "y": (number - 1) // 2 * HEIGHT,
                        "w": WIDTH, "h": HEIGHT},
            "fieldConfig": _field_config(panel), "targets": targets}


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schema 39): one panel per panel with queries."""
    shown = [p for p in PANELS if p.targets]
    return {"uid": UID, "title": "movierec: service, data, model", "tags": ["movierec"],
            "timezone": "utc", "schemaVersion": 39, "version": 1, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "panels": [_panel(p, n) for n, p in enumerate(shown, 1)]}


def text() -> str:
    """``build()`` as the committed file's text."""
    return json.dumps(build(), indent=2) + "\n"


def write(path: Path) -> None:
    Path(path).write_text(text(), encoding="utf-8")
