"""What the simulated course client writes is what the grader reads back."""

from __future__ import annotations

from datetime import datetime

import pytest

from movierec.wire import LineParser, Recommendation, format_event
from simulator import course_client
from simulator.grade import classify

SERVER = "127.0.0.1:8082"


def _logged(outcome: course_client.Outcome, millis: int = 40) -> Recommendation:
    """The outcome as a log line, parsed back: the round trip the grader relies on."""
    error = "" if outcome.kind == "ok" else outcome.text
    event = Recommendation(datetime(2025, 3, 1, 12), 7, SERVER, outcome.status, outcome.items,
                           error, millis)
    parsed = LineParser().parse(format_event(event))
    assert parsed == event
    return parsed


@pytest.mark.parametrize(("outcome", "kind", "category"), [
    (course_client.answered(200, b"x+2000,y+2001"), "ok", "success"),
    (course_client.answered(200, b""), "ok", "success"),
    (course_client.answered(503, b"busy"), "http_error", "http_error"),
    (course_client.answered(200, b"<html>\n</html>"), "malformed", "malformed"),
    (course_client.answered(200, b"x+2000, y+2001"), "malformed", "malformed"),
    (course_client.answered(200, b"a+2000," * 30), "malformed", "malformed"),
    (course_client.failed(TimeoutError(), deadline_ms=600, server=SERVER), "timeout", "timeout"),
    (course_client.failed(ConnectionRefusedError(), deadline_ms=600, server=SERVER), "refused", "refused"),
    (course_client.failed(ConnectionResetError("reset\nby peer"), deadline_ms=600, server=SERVER),
     "error", "other"),
])
def test_outcomes_round_trip_to_the_graders_category(outcome, kind: str, category: str) -> None:
    assert outcome.kind == kind
    assert classify(_logged(outcome), deadline_ms=600) == category


def test_success_lists_the_ids_and_a_late_success_is_late() -> None:
    outcome = course_client.answered(200, b"x+2000,y+2001")
    assert (outcome.status, outcome.items, outcome.text) == (200, ("x+2000", "y+2001"), "x+2000, y+2001")
    assert classify(_logged(outcome, millis=650), deadline_ms=600) == "late"
