"""The feedback-loop audit's core (``audit.feedback``) and report on small worlds with
known answers: Gini of equal and of concentrated exposure, coverage, the long-tail share
against the day before's head, equal-size measuring, trends and the verdict, and the
mitigation read from an experiment's arms."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit import feedback as core
from audit import feedback_report, report
from recommender.serving.experiments import Arm, Experiment

DAY = core.DAY_S


def test_gini_of_equal_exposure_is_zero_and_of_one_movie_is_n_minus_1_over_n() -> None:
    assert core.gini([2.0, 2.0, 2.0, 2.0]) == 0.0
    assert core.gini([0.0, 0.0, 0.0, 5.0]) == pytest.approx(3 / 4)
    assert core.gini([0.0] * 9 + [1.0]) == pytest.approx(9 / 10)
    assert core.gini([]) == 0.0 and core.gini([0.0, 0.0]) == 0.0
    # the mean-difference definition, sum |xi - xj| / (2 n^2 mean), on an uneven case
    xs = [1.0, 2.0, 3.0, 10.0]
    by_pairs = sum(abs(a - b) for a in xs for b in xs) / (2 * len(xs) ** 2 * (sum(xs) / len(xs)))
    assert core.gini(xs) == pytest.approx(by_pairs)


def test_exposure_gini_counts_unexposed_catalog_movies_as_zeros() -> None:
    lists = [("a",), ("a",)]
    assert core.exposure_gini(lists, ["a"]) == 0.0
    assert core.exposure_gini(lists, ["a", "b", "c", "d"]) == pytest.approx(3 / 4)
    # a (rank 1) and b (rank 3: weight 1/log2(4) = 0.5), c never shown: 1, 0.5, 0 exposure
    g = core.exposure_gini([("a", "x", "b")], ["a", "b", "c", "x"])
    assert g == pytest.approx(core.gini([1.0, 1 / math.log2(3), 0.5, 0.0]))


def test_coverage_and_head_and_tail_share() -> None:
    assert core.coverage([("a", "b"), ("b", "c")], 10) == pytest.approx(0.3)
    assert core.coverage([], 10) == 0.0
    catalog = [f"m{i}" for i in range(10)]
    plays = {"m0": 5, "m1": 3, "m2": 1}
    # the head is ceil(0.2 * 10) = 2 movies of the catalog: m0 and m1
    assert core.head_by_plays(plays, catalog) == {"m0", "m1"}
    # unplayed movies are never head, even when the fifth is larger than the played set
    assert core.head_by_plays({"m3": 1}, catalog) == {"m3"}
    assert core.tail_share({"m0": 2, "m5": 1, "m6": 1}, {"m0", "m1"}) == pytest.approx(0.5)
    assert core.tail_share({}, {"m0"}) is None


def test_fit_recovers_a_straight_line_and_refuses_too_few_points() -> None:
    s = core.fit([0.5, 1.5, 2.5, 3.5], [1.0, 0.9, 0.8, 0.7])
    assert s is not None
    assert s.slope == pytest.approx(-0.1) and s.se == pytest.approx(0.0, abs=1e-12)
    assert s.mean == pytest.approx(0.85) and s.n == 4
    noisy = core.fit([0, 1, 2, 3, 4], [1.0, 1.2, 0.9, 1.1, 1.0])
    assert noisy is not None and noisy.low < noisy.slope < noisy.high
    assert core.fit([0, 1], [1, 2]) is None and core.fit([1, 1, 1], [1, 2, 3]) is None


def world(days: int, narrowing: bool) -> core.Tally:
    """10 movies; each day 20 lists of 2 movies and 20 plays. Steady: every day the lists
    walk the whole catalog and plays spread evenly. Narrowing: day d's lists draw from
    the 10 - 2d first movies and plays follow them."""
    tally = core.Tally()
    for d in range(days):
        pool = [f"m{i}" for i in range(10 - 2 * d if narrowing else 10)]
        for k in range(20):
            t = d * DAY + 3600 + k * 60
            tally.add_list(t, k, (pool[k % len(pool)], pool[(k + 1) % len(pool)]))
            tally.add_play(t + 30, pool[k % len(pool)])
    return tally


def test_a_steady_world_passes_and_a_narrowing_one_fails() -> None:
    steady = core.measure(world(4, narrowing=False))
    assert [b.coverage for b in steady.buckets] == [1.0] * 4
    assert all(b.gini == pytest.approx(0.0, abs=1e-9) for b in steady.buckets)
    # the log starts with the lists: the first day is the head's reference, no tail share
    assert steady.buckets[0].tail_share is None
    assert [b.tail_share for b in steady.buckets[1:]] == [pytest.approx(0.8)] * 3
    assert steady.verdict == "pass" and steady.window_coverage == 1.0
    assert steady.catalog == 10 and steady.per_bucket == 20

    narrowing = core.measure(world(4, narrowing=True))
    assert [b.coverage for b in narrowing.buckets] == pytest.approx([1.0, 0.8, 0.6, 0.4])
    trends = {t.measure: t for t in narrowing.trends}
    assert trends["coverage"].slope_per_day == pytest.approx(-0.2)
    assert trends["coverage"].breadth_change == pytest.approx(-0.2 / 0.7)
    assert trends["coverage"].verdict == "fail" and narrowing.verdict == "fail"
    assert trends["gini"].slope_per_day == pytest.approx(0.2, abs=0.01)  # about (10 - p) / 10
    assert trends["gini"].verdict == "fail"


def test_one_head_from_the_week_before_the_lists_judges_every_day() -> None:
    tally = core.Tally()
    for d in range(7):  # a week of history without lists: m0 and m1 are the hits
        tally.add_play(d * DAY, "m0")
        tally.add_play(d * DAY + 1, "m1")
    for d in range(7, 10):  # then lists, and plays mostly of m5
        tally.add_list(d * DAY, 1, ("m0", "m5"))
        for k, m in enumerate(("m0", "m5", "m5", "m5", "m5", "m5")):
            tally.add_play(d * DAY + 10 + k, m)
    catalog = [f"m{i}" for i in range(10)]
    week = {round(b.start_s / DAY): b for b in core.measure(tally, catalog=catalog).buckets}
    assert week[0].coverage is None and not week[0].judged, "history without lists"
    # the head is 2 of 10 movies by the week before the lists, m0 and m1, and stays so
    # (m5, played most from day 7 on, does not become head): 5 of 6 plays are tail
    assert [week[d].tail_share for d in (7, 8, 9)] == [pytest.approx(5 / 6)] * 3
    assert all(week[d].tail_share is None for d in range(7)), "the reference itself"
    # a shorter reference: the 2 days before the lists, the same head here
    short = core.measure(tally, catalog=catalog, popularity_s=2 * DAY).buckets
    assert [b.tail_share for b in short if b.judged] == [pytest.approx(5 / 6)] * 3


def test_buckets_are_measured_on_equal_samples_and_partial_ones_are_not_judged() -> None:
    tally = core.Tally(sample=50)
    for d, n in enumerate((30, 100, 100, 100, 5)):  # day 0 smaller, day 4 a partial day
        for k in range(n):
            tally.add_list(d * DAY + k, k, (f"m{k % 40}",))
    result = core.measure(tally)
    assert [b.judged for b in result.buckets] == [False, True, True, True, False]
    assert result.per_bucket == 50, "the smallest judged bucket, capped by the sample"
    assert [b.measured_lists for b in result.buckets] == [30, 50, 50, 50, 5]
    # the same sample whatever order the lists arrive in
    backwards = core.Tally(sample=50)
    for d, n in reversed(list(enumerate((30, 100, 100, 100, 5)))):
        for k in reversed(range(n)):
            backwards.add_list(d * DAY + k, k, (f"m{k % 40}",))
    assert core.measure(backwards).buckets == result.buckets


def test_too_few_buckets_is_inconclusive_and_empty_buckets_in_between_show() -> None:
    tally = core.Tally()
    tally.add_list(0.0, 1, ("a",))
    tally.add_list(2 * DAY, 1, ("b",))
    result = core.measure(tally)
    assert len(result.buckets) == 3 and result.buckets[1].lists == 0
    assert result.buckets[1].coverage is None and not result.buckets[1].judged
    assert result.verdict == "inconclusive"
    assert core.measure(core.Tally()).verdict == "inconclusive"


def test_hourly_buckets_take_the_head_from_the_day_before_the_lists() -> None:
    tally = core.Tally(3600.0)
    for h in range(24):
        tally.add_play(h * 3600.0, "old")  # 24 plays of "old" over the first day
    tally.add_list(24 * 3600.0, 1, ("new",))
    tally.add_play(24 * 3600.0, "new")
    tally.add_play(24 * 3600.0 + 1, "old")
    tally.add_movie("x0")  # a rated movie: part of the catalog
    result = core.measure(tally, catalog=[f"c{i}" for i in range(8)], popularity_s=DAY)
    last = result.buckets[-1]
    assert last.plays == 2 and last.tail_share == pytest.approx(0.5)


def test_the_report_states_requirement_result_and_mitigation(tmp_path: Path) -> None:
    result = core.measure(world(4, narrowing=True))
    built = feedback_report.build(result, source="topic movielog (the whole log)",
                                  mitigation=feedback_report.mitigation(None))
    assert not built.passed and "faster than the bar" in built.result
    assert "0.67%" in built.requirement and "None: no experiment" in built.mitigation
    paths = report.write(built, tmp_path)
    assert sorted(p.name for p in paths) == ["feedback.svg", "report.json", "report.md"]
    body = json.loads((tmp_path / "report.json").read_text())
    assert body["numbers"]["verdict"] == "fail" and len(body["numbers"]["buckets"]) == 4
    md = (tmp_path / "report.md").read_text()
    assert "| 1970-01-02 | 20 | 20 | 20 | 0.8000 |" in md
    assert 'data-label="catalog coverage"' in (tmp_path / "feedback.svg").read_text()


def test_the_mitigation_names_the_arms_that_rerank() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    plain = Experiment("ab", (Arm("control", "champion", 0.5), Arm("treat", "v2", 0.5)),
                       start=start)
    assert "none of its arms (control, treat) re-ranks" in feedback_report.mitigation(plain)
    arms = (Arm("control", "champion", 0.5), Arm("calibrated", "champion", 0.5, "calibrated"))
    text = feedback_report.mitigation(Experiment("rr", arms, start=start),
                                      at=datetime(2024, 1, 1, tzinfo=UTC))
    assert "arm calibrated (50% of users, model champion) re-ranks with policy 'calibrated'" in text
    assert "arms control serve the model's own order" in text and "not active" in text
    assert feedback_report.mitigation(None, error="bad json").startswith("Unknown")


def test_arms_are_measured_on_equal_samples_beside_each_other(tmp_path: Path) -> None:
    tally = core.Tally()
    for k in range(40):  # the control shows 2 movies to 30 users, the re-ranked arm 10 to 10
        tally.add_list(k * 60.0, k, (f"m{k % 2}",), "control")
    for k in range(10):
        tally.add_list(k * 60.0, 100 + k, (f"m{k}",), "calibrated")
    result = core.measure(tally, catalog=[f"m{i}" for i in range(10)])
    arms = {a.arm: a for a in result.arms}
    assert arms["control"].lists == 40 and arms["control"].measured_lists == 10
    assert arms["calibrated"].coverage == 1.0 and arms["calibrated"].gini == pytest.approx(0.0)
    assert arms["control"].coverage == pytest.approx(0.2)
    built = feedback_report.build(result, source="t", mitigation="m",
                                  policies={"control": None, "calibrated": "calibrated"})
    md = built.markdown()
    assert "| calibrated | calibrated | 10 | 1.0000 | 0.0000 |" in md
    assert built.numbers["arms"][0]["rerank"] == "calibrated"
