"""The safety audit's core on a small world with known answers: which lists had to be
minor-safe, which movies in them were unsafe and why, on every path and arm; the report
states the requirement, the measurement, the result and the mitigation."""

from __future__ import annotations

import json

from audit import report, safety_report
from audit.safety import ADULT, MINOR, UNKNOWN_AGE, audit, judge
from recommender.serving.telemetry import ServedRecord

SAFE = {"adult": "False", "content_rating": "PG-13"}
META = {
    "toy+story+1995": SAFE,
    "up+2009": {"adult": "0"},
    "scarface+1983": {"adult": "False", "content_rating": "R"},
    "showgirls+1995": {"adult": "false", "content_rating": "nc-17"},
    "deep+throat+1972": {"adult": "True"},
    "mystery+2020": {"adult": "unknown"},
}


def served(n: int, user: int, items: tuple[str, ...], *, path: str = "model",
           arm: str = "default", fallback: str | None = None, status: int = 200) -> ServedRecord:
    return ServedRecord(request_id=f"{n:032x}", time_ms=1_700_000_000_000 + n, user_id=user,
                        arm=arm, model_version="als-1", items=items, path=path,
                        fallback=fallback, latency_ms=3.0, status=status)


AGES = {1: 12, 2: 35, 3: None, 4: 17}


def test_only_unsafe_movies_to_minors_or_unknown_ages_are_findings() -> None:
    everything = tuple(META) + ("never+heard+of+it",)
    assert judge(served(1, 2, everything), 35, META) == [], "an adult may see anything"
    found = judge(served(2, 1, everything), 12, META)
    assert sorted((f.movie_id, f.reason) for f in found) == [
        ("deep+throat+1972", "adult"), ("mystery+2020", "no_metadata"),
        ("never+heard+of+it", "no_metadata"), ("scarface+1983", "rating_R"),
        ("showgirls+1995", "rating_NC17")]
    assert {f.audience for f in found} == {MINOR}
    assert {f.audience for f in judge(served(3, 3, everything), None, META)} == {UNKNOWN_AGE}
    assert judge(served(4, 1, ("toy+story+1995", "up+2009")), 12, META) == []
    assert judge(served(5, 1, everything, status=500), 12, META) == [], "no list was sent"


def test_the_audit_counts_paths_arms_and_splits_violations_from_policy_breaches() -> None:
    records = [
        served(1, 1, ("toy+story+1995",), path="popular", fallback="shed"),
        served(2, 4, ("scarface+1983", "up+2009"), arm="challenger"),
        served(3, 3, ("deep+throat+1972",), path="coldstart_demographic"),
        served(4, 2, ("showgirls+1995",), arm="champion"),  # an adult: fine
    ]
    result = audit(records, AGES, META)
    assert result.lists == 4
    assert result.lists_by_audience == {MINOR: 2, UNKNOWN_AGE: 1, ADULT: 1}
    assert result.minor_safe_lists_by_path == {"shed": 1, "model": 1,
                                               "coldstart_demographic": 1}
    assert result.minor_safe_lists_by_arm == {"default": 2, "challenger": 1}
    assert [(f.user_id, f.movie_id) for f in result.violations] == [(4, "scarface+1983")]
    assert [(f.user_id, f.reason) for f in result.policy_breaches] == [(3, "adult")]
    assert not result.passed
    assert audit(records[:1] + records[3:], AGES, META).passed


def test_the_report_states_requirement_measurement_result_and_mitigation(tmp_path) -> None:
    records = [served(1, 1, ("toy+story+1995",)), served(2, 4, ("scarface+1983",))]
    built = safety_report.build(audit(records, AGES, META), source="topic t", rejected=3)
    paths = report.write(built, tmp_path)
    assert {p.name for p in paths} == {"report.md", "report.json", "safety.svg"}
    text = (tmp_path / "report.md").read_text()
    for heading in ("## Requirement", "## Measurement", "## Mitigation in force", "FAIL"):
        assert heading in text
    assert "1 unsafe movies served to users under 18" in text
    body = json.loads((tmp_path / "report.json").read_text())
    assert body["passed"] is False and body["numbers"]["violations"] == 1
    assert body["numbers"]["rejected"] == 3
    assert body["numbers"]["findings"][0]["movie_id"] == "scarface+1983"
    assert "<svg" in (tmp_path / "safety.svg").read_text()
    clean = safety_report.build(audit(records[:1], AGES, META), source="topic t", rejected=0)
    assert clean.passed and clean.result.startswith("0 unsafe movies in 1 lists")
