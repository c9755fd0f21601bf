"""The drills' pure core: the scenario table, the durations a timeline gives, matching the
receiver's records, and the postmortem skeleton."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ops.drills.core import (
    ACTION,
    AUTOMATIC,
    FIRED,
    INJECTED,
    RECEIVED,
    RECOVERED,
    RESOLVED,
    RUNBOOK,
    SCENARIOS,
    STARTED,
    Timeline,
    durations,
    find_alert,
    rfc3339_s,
)
from ops.drills.postmortem import Outcome, markdown
from ops.drills.runner import still_firing

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {"serve-killed", "redis-down", "consumer-stalled", "kafka-down", "corrupt-model",
            "drift"}


def _rules() -> dict[str, dict]:
    found = {}
    for path in (ROOT / "ops/prometheus/rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.update({r["alert"]: r for r in group["rules"] if "alert" in r})
    return found


def test_the_scenario_table_covers_the_issue_and_names_real_alerts_and_runbook_sections() -> None:
    assert set(SCENARIOS) >= REQUIRED
    rules = _rules()
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in
                re.findall(r"^#+ (.+)$", (ROOT / "docs/runbook.md").read_text(), re.M)}
    for s in SCENARIOS.values():
        assert s.alerts and all(a in rules for a in s.alerts), s.name
        assert s.recovery in (AUTOMATIC, RUNBOOK), s.name
        assert s.runbook in headings, s.name
        assert rules[s.alerts[0]]["annotations"]["runbook_url"].endswith("#" + s.runbook), s.name
        assert s.detect_bound_s > 0 and s.recover_bound_s > 0 and s.resolve_bound_s > 0


def test_drills_section_of_the_runbook_lists_every_scenario() -> None:
    runbook = (ROOT / "docs/runbook.md").read_text()
    drills = runbook[runbook.index("## Drills"):]
    for name in SCENARIOS:
        assert f"movierec drill {name}" in drills, name


def _timeline() -> Timeline:
    t = Timeline()
    t.add(100.0, STARTED, "start")
    t.add(110.0, INJECTED, "Redis stopped")
    t.add(160.0, FIRED, "active")
    t.add(181.5, RECEIVED, "MovierecRedisBreakerOpen received")
    t.add(182.0, ACTION, "runbook", "movierec infra up redis")
    t.add(215.0, RECOVERED, "healthy")
    t.add(240.0, RESOLVED, "resolved")
    return t


def test_durations_count_from_the_injection() -> None:
    assert durations(_timeline()) == {"time_to_detect_s": 71.5, "time_to_recover_s": 105.0,
                                      "time_to_resolve_s": 130.0}


def test_durations_of_what_did_not_happen_are_none() -> None:
    t = Timeline()
    t.add(1.0, INJECTED, "x")
    assert durations(t) == {"time_to_detect_s": None, "time_to_recover_s": None,
                            "time_to_resolve_s": None}
    assert durations(Timeline())["time_to_detect_s"] is None


def _record(name: str, status: str, at: float, **labels: str) -> dict:
    return {"alertname": name, "status": status, "received_s": at, "fingerprint": name + status[:0]
            + labels.get("instance", ""), "labels": {"alertname": name, **labels}}


def test_find_alert_takes_the_first_matching_record_after_the_injection() -> None:
    records = [
        _record("MovierecTargetDown", "firing", 50.0, instance="127.0.0.1:8082"),  # before
        _record("MovierecTargetDown", "firing", 120.0, instance="127.0.0.1:9102"),  # other job
        _record("MovierecRedisBreakerOpen", "firing", 130.0),
        _record("MovierecTargetDown", "firing", 140.0, instance="127.0.0.1:8082"),
    ]
    labels = {"MovierecTargetDown": {"instance": "127.0.0.1:8082"}}
    got = find_alert(records, ("MovierecTargetDown",), status="firing", since_s=100.0,
                     labels=labels)
    assert got is not None and got["received_s"] == 140.0
    assert find_alert(records, ("MovierecTargetDown",), status="resolved", since_s=0.0) is None
    drift = [_record("MovierecDriftAlarm", "firing", 150.0, feature="session_minutes"),
             _record("MovierecDriftAlarm", "firing", 160.0, feature="rating")]
    got = find_alert(drift, ("MovierecDriftAlarm",), status="firing", since_s=100.0,
                     labels={"MovierecDriftAlarm": {"feature": ("rating", "event_mix")}})
    assert got is not None and got["labels"]["feature"] == "rating"  # any of the values
    either = find_alert(records, ("MovierecConsumerStalled", "MovierecRedisBreakerOpen"),
                        status="firing", since_s=100.0)
    assert either is not None and either["alertname"] == "MovierecRedisBreakerOpen"


def test_an_alert_still_firing_from_before_blocks_a_drill_and_its_resolution_frees_it() -> None:
    fired = _record("MovierecRedisBreakerOpen", "firing", 10.0)
    assert still_firing([fired], ("MovierecRedisBreakerOpen",), {}) == ["MovierecRedisBreakerOpen"]
    resolved = {**fired, "status": "resolved", "received_s": 20.0}
    assert still_firing([fired, resolved], ("MovierecRedisBreakerOpen",), {}) == []
    other = _record("MovierecTargetDown", "firing", 10.0, instance="127.0.0.1:9102")
    assert still_firing([other], ("MovierecTargetDown",),
                        {"MovierecTargetDown": {"instance": "127.0.0.1:8082"}}) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-07T11:50:01.123456789Z", 1796644201.123456),
    ("2026-12-07T12:50:01+01:00", 1796644201.0),
    ("0001-01-01T00:00:00Z", None), (None, None),
])
def test_alertmanager_times_become_unix_seconds(text: str | None, expected: float | None) -> None:
    got = rfc3339_s(text)
    assert got == expected if expected is None else got == pytest.approx(expected, abs=1e-6)


def test_the_postmortem_has_the_timeline_the_commands_the_durations_and_the_headings() -> None:
    outcome = Outcome(SCENARIOS["redis-down"], _timeline(), detected_by="MovierecRedisBreakerOpen",
                      impact=["40 requests: 38 popular, 2 failed"])
    text = markdown(outcome)
    assert text.startswith("# Postmortem (drill): redis-down") and "It **passed**." in text
    assert "| time to detect (fault -> alert received) | 72 s |" in text  # 71.5 rounds to even
    assert "| time to recover (fault -> healthy again) | 105 s |" in text
    assert "    movierec infra up redis" in text  # the exact command, runnable
    assert "| +71.5 | alert_received |" in text and "| -10.0 | started |" in text
    assert "- 40 requests: 38 popular, 2 failed" in text
    for heading in ("## Summary", "## Impact", "## Timeline (UTC)", "## Root cause",
                    "## What went well", "## What to improve", "## Action items"):
        assert heading in text
    data = outcome.to_dict()
    assert data["passed"] and data["time_to_detect_s"] == 71.5
    assert [e["kind"] for e in data["timeline"]][:2] == [STARTED, INJECTED]


def test_a_failed_drill_says_why() -> None:
    outcome = Outcome(SCENARIOS["drift"], _timeline(), problems=["no MovierecDriftAlarm within 720 s"])
    assert not outcome.passed
    assert "It **failed**: no MovierecDriftAlarm within 720 s" in markdown(outcome)
    assert "None: the system recovers by itself." not in markdown(outcome)  # a command was run
