"""The alert receiver's core: Alertmanager's notification becomes one record per alert,
the chat text says state, summary and runbook, and the record survives a torn line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.alerting.receiver import AlertLog, BadNotification, Receiver, message, records

NOTIFICATION = {
    "version": "4", "status": "firing", "receiver": "project",
    "alerts": [
        {"status": "firing", "labels": {"alertname": "MovierecRedisBreakerOpen", "severity": "page"},
         "annotations": {"summary": "breaker open", "runbook_url": "docs/runbook.md#x"},
         "startsAt": "2026-12-07T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "ab"},
        {"status": "resolved", "labels": {"alertname": "MovierecTargetDown", "severity": "page"},
         "annotations": {"summary": "down"}, "fingerprint": "cd"},
    ],
}


def test_each_alert_becomes_a_record_and_a_line_of_text() -> None:
    out = records(NOTIFICATION, 12.5)
    assert [(r["alertname"], r["status"], r["severity"]) for r in out] == [
        ("MovierecRedisBreakerOpen", "firing", "page"), ("MovierecTargetDown", "resolved", "page")]
    assert out[0]["received_s"] == 12.5 and out[0]["fingerprint"] == "ab"
    text = message(out).splitlines()
    assert text == ["[FIRING (page)] MovierecRedisBreakerOpen: breaker open (docs/runbook.md#x)",
                    "[RESOLVED] MovierecTargetDown: down"]


@pytest.mark.parametrize("payload", [[], {"alerts": "x"}, {"alerts": [{"status": "firing"}]}])
def test_what_is_not_a_notification_is_refused(payload: object) -> None:
    with pytest.raises(BadNotification):
        records(payload, 0.0)


def test_the_record_is_appended_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    log = AlertLog(tmp_path / "alerts" / "n.jsonl")
    log.append(records(NOTIFICATION, 1.0))
    with log.path.open("a") as f:
        f.write('{"torn": ')  # a crash mid-write
    assert [r["alertname"] for r in log.recent(10)] == ["MovierecRedisBreakerOpen", "MovierecTargetDown"]
    assert [r["alertname"] for r in log.recent(1)] == ["MovierecTargetDown"]


def test_the_receiver_counts_and_forwards_nothing_without_a_url(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "n.jsonl")
    assert receiver.take(json.dumps(NOTIFICATION).encode()) == 2
    with pytest.raises(BadNotification):
        receiver.take(b"{not json")
    assert receiver.counts["notifications"] == 1 and receiver.counts["alerts"] == 2
    assert receiver.counts["forward_failures"] == 0
