"""The dashboard's readers of the project's stores (registry, experiment file, the loop's
journal) on files written here, and the app when nothing answers: every panel says why
it has no data, and the page still answers 200."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from movierec.settings import load
from ops.dashboard import sources
from ops.dashboard.app import create_app
from ops.dashboard.panels import PANELS
from ops.dashboard.settings import DashboardSettings
from tests.unit.test_registry import metadata, registry, trained

CYCLE = "0001-20261207T114043Z"
JOURNAL = [
    {"at": "2026-12-07T11:40:43.339+00:00", "champion": "pop-1", "cycle": CYCLE,
     "log_time": "2025-03-25T23:59:58+00:00", "numbers": {}, "reason": "no cycle has run yet",
     "stage": "triggered", "trigger": "schedule"},
    {"at": "2026-12-07T11:40:48.565+00:00", "challenger": "hybrid-2", "cycle": CYCLE,
     "numbers": {}, "stage": "trained"},
    {"at": "2026-12-07T11:40:48.566+00:00", "challenger": "hybrid-2", "cycle": CYCLE,
     "experiment": "canary-0001", "share": 0.3, "since": "2026-12-07T11:40:48+00:00",
     "stage": "canary"},
    {"at": "2026-12-07T11:41:13.055+00:00", "cycle": CYCLE, "numbers": {},
     "reason": "mSPRT: challenger better", "result": "promoted", "stage": "decided"},
    {"at": "2026-12-07T11:41:13.060+00:00", "champion": "hybrid-2", "cycle": CYCLE,
     "result": "promoted", "stage": "closed"},
]


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "loop" / "journal.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(e) + "\n" for e in JOURNAL))
    return path


def test_cycles_come_from_the_journal_with_their_outcome(journal: Path, tmp_path: Path) -> None:
    [cycle] = sources.cycles(journal)
    assert (cycle.id, cycle.trigger, cycle.result, cycle.challenger) == (CYCLE, "schedule",
                                                                          "promoted", "hybrid-2")
    assert cycle.ended is not None and (cycle.ended - cycle.started).total_seconds() == pytest.approx(29.721)
    assert sources.cycles(tmp_path / "none.jsonl") == []


def test_the_running_experiment_or_else_the_last_canary(journal: Path, tmp_path: Path) -> None:
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps({"generation": 3, "updated": "2026-12-07T12:00:00+00:00",
                                "reason": "ab", "experiment": {
                                    "id": "ab-1", "start": None, "stop": None,
                                    "arms": [{"name": "a", "model": "champion", "share": 0.5},
                                             {"name": "b", "model": "als-1", "share": 0.5}]}}))
    running = sources.experiment(path, [], journal)
    assert running.running and running.id == "ab-1" and [a.name for a in running.arms] == ["a", "b"]
    path.write_text(json.dumps({"generation": 4, "experiment": None, "reason": "loop: promoted"}))
    last = sources.experiment(path, sources.cycles(journal), journal)
    assert not last.running and last.id == "canary-0001"
    assert [(a.name, a.model, a.share) for a in last.arms] == [("champion", "champion", 0.7),
                                                                ("challenger", "hybrid-2", 0.3)]
    assert "ended: promoted" in last.note
    with pytest.raises(sources.SourceError, match="no canary"):
        sources.experiment(path, [], tmp_path / "none.jsonl")


def test_models_show_champion_challenger_and_baseline_with_offline_numbers(
        tmp_path: Path, journal: Path) -> None:
    reg = registry(tmp_path)
    with pytest.raises(sources.SourceError, match="no champion"):
        sources.models(reg.root, [])
    old = reg.register(trained(1), metadata=metadata(metrics={"ndcg@20": 0.08, "map@20": 0.1}))
    new = reg.register(trained(2), metadata=metadata(metrics={"ndcg@20": 0.14, "recall@20": 0.3}))
    reg.promote(old.version, alias="baseline", reason="t", force=True)
    reg.promote(new.version, reason="t", force=True)
    cycles = [c.__class__(**{**c.__dict__, "challenger": new.version}) for c in sources.cycles(journal)]
    cards = sources.models(reg.root, cycles)
    assert [(c.role, c.version) for c in cards] == [("champion", new.version),
                                                    ("challenger", new.version),
                                                    ("baseline", old.version)]
    assert cards[0].metrics == {"ndcg@20": 0.14, "recall@20": 0.3}, "only the offline numbers shown"
    assert cards[1].note == f"cycle {CYCLE}: promoted"


def test_a_bad_request_id_is_refused_before_any_call() -> None:
    with pytest.raises(sources.SourceError, match="not a request id"):
        sources.provenance(None, "http://127.0.0.1:1", "../admin")  # type: ignore[arg-type]


def test_with_nothing_answering_every_panel_says_why_and_the_page_still_answers(
        tmp_path: Path) -> None:
    from tests.conftest import free_ports

    dead, manager, receiver = free_ports(3)
    settings = load(DashboardSettings, {
        "MOVIEREC_PROMETHEUS_PORT": str(dead), "MOVIEREC_ALERTMANAGER_PORT": str(manager),
        "MOVIEREC_ALERT_RECEIVER_PORT": str(receiver), "MOVIEREC_SERVE_PORT": str(dead),
        "MOVIEREC_REGISTRY_DIR": str(tmp_path / "reg"), "MOVIEREC_LOOP_DIR": str(tmp_path / "loop"),
        "MOVIEREC_SERVE_EXPERIMENTS_FILE": str(tmp_path / "reg" / "experiments.json"),
        "MOVIEREC_DASHBOARD_TIMEOUT_S": "1"})
    client = create_app(settings).test_client()
    page = client.get("/?range=15m&refresh=10s")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    states = dict(re.findall(r'data-panel="([a-z_]+)" data-state="([a-z]+)"', html))
    assert {k for k, v in states.items() if v == "ok"} == {"provenance"}
    assert len(states) == len(PANELS)
    assert html.count("no data:") == len(PANELS) - 1 and "did not answer" in html
    assert '<meta http-equiv="refresh" content="10">' in html
    assert client.get("/health").get_data(as_text=True) == "ok\n"
    missing = client.get("/provenance?request_id=abc123")
    assert missing.status_code == 404 and "no data: the service at" in missing.get_data(as_text=True)
