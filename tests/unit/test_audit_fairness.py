"""The fairness audit's core with known answers: age and gender groups, the four-fifths
bar judged on Wilson intervals (pass, fail, inconclusive), position-weighted exposure,
the head of the catalog, and a provider group's exposure against its demand."""

from __future__ import annotations

import math

import pytest

from audit import fairness_report
from audit.fairness import (
    UNKNOWN,
    age_group,
    exposure,
    gender_group,
    head_movies,
    judge_groups,
    judge_provider,
    release_year,
)
from online_eval.join import ArmOutcome


@pytest.mark.parametrize(("age", "group"), [(None, UNKNOWN), (12, "under 18"), (17, "under 18"),
                                            (18, "18-24"), (34, "25-34"), (49, "35-49"),
                                            (50, "50+"), (99, "50+")])
def test_age_bands(age: int | None, group: str) -> None:
    assert age_group(age) == group


def test_gender_groups() -> None:
    assert [gender_group(g) for g in ("F", "M", None, "")] == ["female", "male", UNKNOWN, UNKNOWN]


def outcome(eligible: int, taken: int, minutes: int = 0) -> ArmOutcome:
    return ArmOutcome(requests=eligible, successes=eligible, eligible=eligible, taken=taken,
                      minutes=minutes)


def test_groups_are_judged_against_four_fifths_of_the_overall_rate() -> None:
    overall, results = judge_groups({
        "a": outcome(4_000, 2_000, 80_000),   # 0.50: well above 0.8 x overall
        "b": outcome(4_000, 1_000),           # 0.25: far below the bar
        "c": outcome(20, 7),                  # 0.35 on 20 lists: cannot tell
        UNKNOWN: outcome(100, 0),
    })
    assert overall == pytest.approx(3_007 / 8_120)
    verdicts = {r.group: r.verdict for r in results}
    assert verdicts == {"a": "pass", "b": "fail", "c": "inconclusive", UNKNOWN: "n/a"}
    a = next(r for r in results if r.group == "a")
    assert a.low < 0.5 < a.high and a.minutes_per_list == 20.0


def test_exposure_weighs_positions_like_dcg() -> None:
    got = exposure([("x", "y", "z"), ("y",)])
    assert got["x"] == 1.0 and got["y"] == pytest.approx(1 / math.log2(3) + 1.0)
    assert got["z"] == pytest.approx(0.5)


def test_the_head_is_the_most_popular_fifth() -> None:
    popularity = {f"m{i}": float(i) for i in range(10)}
    assert head_movies(popularity) == {"m9", "m8"}
    assert head_movies({}) == set()


def test_a_provider_group_needs_four_fifths_of_its_demand_as_exposure() -> None:
    exposed = {"tail": 10.0, "head": 90.0}
    assert judge_provider("t", {"tail"}, exposed, {"tail": 30, "head": 70}).verdict == "fail"
    assert judge_provider("t", {"tail"}, exposed, {"tail": 12, "head": 88}).verdict == "pass"
    assert judge_provider("t", {"tail"}, {}, {"tail": 1}).verdict == "inconclusive"


def test_release_years() -> None:
    assert release_year({"release_date": "1994-09-23"}) == 1994
    assert release_year({"release_date": ""}) is None and release_year(None) is None


def test_the_report_names_what_is_below_the_bar() -> None:
    overall, results = judge_groups({"a": outcome(4_000, 2_000), "b": outcome(4_000, 1_000)})
    provider = judge_provider("long tail", {"tail"}, {"tail": 1.0, "head": 9.0},
                              {"tail": 5, "head": 5})
    built = fairness_report.build(overall, results, [], [provider], source="t", lists=8_000)
    assert not built.passed and built.result == "below the bar: b, long tail"
    assert "## Requirement" in built.markdown() and "fairness.svg" in built.plots
