"""The dashboard's panel list: one home of every query, the Grafana file built from it
(and committed equal to what it builds), Grafana's variables, and the settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from movierec.settings import SettingsError, load
from ops.dashboard import grafana
from ops.dashboard.panels import (
    PANELS,
    SECTIONS,
    duration,
    rate_window_s,
    resolve,
    step_s,
)
from ops.dashboard.settings import DashboardSettings
from recommender.loop.settings import LoopSettings
from recommender.serving.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "ops/grafana/dashboards/movierec.json"
KINDS = {"line", "stat", "state", "drift", "bars", "proportion", "models", "experiment",
         "timeline", "alerts", "provenance"}


def test_the_committed_grafana_dashboard_is_what_the_panel_list_builds() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == grafana.text(), (
        "run: .venv/bin/movierec dashboard --grafana ops/grafana/dashboards/movierec.json")


def test_grafana_has_every_panel_with_a_query_and_its_queries_as_written() -> None:
    built = grafana.build()
    with_queries = [p for p in PANELS if p.targets]
    assert [p["title"] for p in built["panels"]] == [p.title for p in with_queries]
    for panel, entry in zip(with_queries, built["panels"], strict=True):
        assert [t["expr"] for t in entry["targets"]] == [t.expr for t in panel.targets]
        assert all(t.get("instant", False) == panel.instant for t in entry["targets"])
    latency = next(p for p in built["panels"] if p["title"].startswith("Latency"))
    steps = latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"color": "red", "value": 0.6}
    assert latency["fieldConfig"]["defaults"]["custom"]["scaleDistribution"]["type"] == "log"
    positions = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in built["panels"]}
    assert len(positions) == len(built["panels"]), "no two panels overlap"
    json.dumps(built, allow_nan=False)


def test_the_panel_list_is_well_formed() -> None:
    keys = [p.key for p in PANELS]
    assert len(keys) == len(set(keys))
    for panel in PANELS:
        assert panel.section in SECTIONS and panel.kind in KINDS, panel.key
        assert panel.targets or panel.kind == "provenance", panel.key
    take = next(p for p in PANELS if p.kind == "proportion")
    assert "taken" in take.targets[1].expr and "eligible" in take.targets[2].expr
    covered = {p.section for p in PANELS}
    assert covered == set(SECTIONS)


def test_grafana_variables_become_prometheus_durations() -> None:
    expr = "sum(rate(x[$__rate_interval])) / sum(increase(y[$__range]))"
    assert resolve(expr, range_s=3600, rate_s=35) == "sum(rate(x[35s])) / sum(increase(y[1h]))"
    assert [duration(s) for s in (1, 60, 90, 900, 86_400, 604_800, 0.2)] == [
        "1s", "1m", "90s", "15m", "1d", "7d", "1s"]


def test_step_and_rate_window_follow_grafanas_rule() -> None:
    # about 120 points, never finer than a scrape; rate window max(4 scrapes, step + scrape)
    assert step_s(900, 5) == 8 and step_s(60, 5) == 5 and step_s(604_800, 5) == 5_040
    assert rate_window_s(8, 5) == 20 and rate_window_s(30, 5) == 35 and rate_window_s(5, 15) == 60


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


@pytest.mark.parametrize(("name", "owner"), [("serve_port", ServeSettings), ("loop_dir", LoopSettings)])
def test_variables_declared_again_mean_what_their_owners_say(name: str, owner: type) -> None:
    mine, theirs = _field(DashboardSettings, name), _field(owner, name)
    assert mine.default == theirs.default
    assert mine.metadata["help"] == theirs.metadata["help"]


def test_settings_read_the_environment_and_refuse_a_port_of_the_stack() -> None:
    settings = load(DashboardSettings, {"MOVIEREC_DASHBOARD_PORT": "8123",
                                        "MOVIEREC_PROMETHEUS_PORT": "9999",
                                        "MOVIEREC_LOOP_DIR": "/tmp/loop"})
    assert settings.dashboard_port == 8123
    assert settings.prometheus_url == "http://127.0.0.1:9999"
    assert settings.journal_path == Path("/tmp/loop/journal.jsonl")
    with pytest.raises(SettingsError, match="MOVIEREC_DASHBOARD_PORT"):
        load(DashboardSettings, {"MOVIEREC_DASHBOARD_PORT": "9090"})
    with pytest.raises(SettingsError, match="MOVIEREC_DASHBOARD_RANGE"):
        load(DashboardSettings, {"MOVIEREC_DASHBOARD_RANGE": "2h"})
