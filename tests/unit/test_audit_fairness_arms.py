"""The fairness audit by experiment arm: each arm's take rate and provider exposure from
its own lists, the arms users fall into by the serving hash, and the report's mitigation
line read from the running experiment."""

from __future__ import annotations

import pytest

from audit import fairness_report
from audit.fairness import judge_arms
from audit.fairness_log import ArmOf
from online_eval.join import ArmOutcome
from recommender.serving.experiments import Arm, Experiment, assign

EXPERIMENT = Experiment("fair", (Arm("control", "champion", 0.5),
                                 Arm("calibrated", "champion", 0.5, rerank="calibrated")))
POLICIES = {"control": None, "calibrated": "calibrated"}


def outcome(eligible: int, taken: int) -> ArmOutcome:
    return ArmOutcome(requests=eligible, successes=eligible, eligible=eligible, taken=taken)


def test_users_fall_into_the_arm_the_service_routes_them_to():
    from datetime import UTC, datetime
    arm_of = ArmOf(EXPERIMENT)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for user in range(300):
        assert arm_of[user] == assign(user, EXPERIMENT, at).name
    assert set(arm_of.known.values()) == {"control", "calibrated"} and len(arm_of) == 300


def test_each_arm_is_judged_on_its_own_lists_against_the_one_demand():
    # the tail film "t" is a quarter of the demand; control never shows it, the
    # calibrated arm shows it first in one list of two
    lists = {"control": [("h1", "h2"), ("h1", "h2")], "calibrated": [("t", "h1"), ("h1", "h2")]}
    demand = {"h1": 2, "h2": 1, "t": 1}
    out = judge_arms({"control": outcome(100, 30), "calibrated": outcome(100, 28)}, lists,
                     POLICIES, {"long tail": {"t"}}, demand)
    control, calibrated = out
    assert (control.arm, control.rerank, control.lists) == ("control", None, 2)
    assert calibrated.take_rate == pytest.approx(0.28) and calibrated.low < 0.28 < calibrated.high
    assert control.providers[0].exposure_share == 0.0 and control.providers[0].verdict == "fail"
    # exposure of t: 1; of the rest: 1/log2(3) + 1 + 1/log2(3)
    w = 1 / 1.584962500721156
    share = 1 / (1 + 1 + 2 * w)
    assert calibrated.providers[0].exposure_share == pytest.approx(share)
    assert calibrated.providers[0].demand_share == pytest.approx(0.25)
    assert calibrated.providers[0].verdict == "pass"


def test_an_arm_without_lists_is_reported_with_nothing_to_judge():
    out = judge_arms({}, {}, {"control": None}, {"long tail": {"t"}}, {"t": 1})
    assert out[0].take_rate is None and out[0].providers[0].verdict == "inconclusive"


def test_the_report_names_the_mitigation_in_force_and_tabulates_the_arms():
    arms = judge_arms({"control": outcome(50, 10), "calibrated": outcome(50, 12)},
                      {"control": [("a",)], "calibrated": [("t",)]}, POLICIES,
                      {"long tail": {"t"}}, {"a": 1, "t": 1})
    text = fairness_report.mitigation(POLICIES, {"control": 0.5, "calibrated": 0.5}, "fair")
    assert "arm 'calibrated' (calibrated, 50% of users)" in text and "'fair'" in text
    assert fairness_report.mitigation({"a": None}, {"a": 1.0}, "x").startswith("None in force")
    report = fairness_report.build(0.22, [], [], [], source="t", lists=2, arms=arms,
                                   mitigation_text=text)
    assert report.mitigation == text
    table = report.tables[-1]
    assert [row[:3] for row in table.rows] == [["control", "none", 1], ["calibrated", "calibrated", 1]]
    assert "fairness-arms.svg" in report.plots
    assert report.numbers["arms"][1]["providers"][0]["exposure_share"] == 1.0
