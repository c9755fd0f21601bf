"""The quality gate: relative margins over the baseline and against the champion,
missing metrics, guards, and a JSON-safe record of the decision."""

from __future__ import annotations

import json

import pytest

from recommender.training.gate import GateConfig, GateDecision, decide

CFG = GateConfig(metric="ndcg@20", min_lift_over_baseline=0.05, max_regression=0.02)


def m(value: float | None, **more: float) -> dict:
    return {"ndcg@20": value, **more} if value is not None else dict(more)


def test_first_model_needs_only_to_beat_the_baseline_by_the_margin():
    passed = decide(m(0.12), m(0.10), None, CFG)
    assert passed.passed and passed.numbers["champion"] is None
    assert passed.numbers["lift_over_baseline"] == pytest.approx(0.2)
    failed = decide(m(0.104), m(0.10), None, CFG)  # +4 % < 5 %
    assert not failed.passed
    assert any("does not beat the baseline" in r for r in failed.reasons)
    assert failed.numbers["required_for_baseline"] == pytest.approx(0.105)


def test_the_margins_are_inclusive_and_relative():
    assert decide(m(0.105), m(0.10), None, CFG).passed  # exactly +5 %
    assert decide(m(0.0105), m(0.01), None, CFG).passed  # same ratio at another scale
    assert not decide(m(0.0104), m(0.01), None, CFG).passed
    # A champion at 0.2: 2 % below is 0.196, allowed; 0.1959 is not.
    assert decide(m(0.196), m(0.1), m(0.2), CFG).passed
    assert not decide(m(0.1959), m(0.1), m(0.2), CFG).passed


def test_a_regression_against_the_champion_fails_even_above_the_baseline():
    d = decide(m(0.15), m(0.10), m(0.20), CFG)
    assert not d.passed
    assert any("regresses" in r for r in d.reasons)
    assert d.numbers["change_vs_champion"] == pytest.approx(-0.25)
    assert d.numbers["required_for_champion"] == pytest.approx(0.196)


def test_beating_the_champion_but_not_the_baseline_fails():
    d = decide(m(0.102), m(0.10), m(0.09), CFG)
    assert not d.passed and any("baseline" in r for r in d.reasons)


@pytest.mark.parametrize(("cand", "base", "champ", "who"), [
    (m(None), m(0.1), None, "candidate"),
    (m(float("nan")), m(0.1), None, "candidate"),
    (m(0.2), m(None), None, "baseline"),
    (m(0.2), {"ndcg@20": "n/a"}, None, "baseline"),
    (m(0.2), m(0.1), m(None, recall=0.3), "champion"),
    ({"ndcg@20": True}, m(0.1), None, "candidate"),
])
def test_missing_or_non_finite_metrics_fail_with_a_reason(cand, base, champ, who):
    d = decide(cand, base, champ, CFG)
    assert not d.passed
    assert any(r.startswith(who) and "no finite ndcg@20" in r for r in d.reasons), d.reasons


def test_a_zero_baseline_needs_a_positive_candidate():
    assert decide(m(0.01), m(0.0), None, CFG).passed
    assert not decide(m(0.0), m(0.0), None, CFG).passed
    assert decide(m(0.01), m(0.0), None, CFG).numbers["lift_over_baseline"] is None


def test_guard_metrics_must_not_regress_against_the_champion():
    cfg = GateConfig(guards=("recall@20",))
    ok = decide(m(0.2, **{"recall@20": 0.295}), m(0.1), m(0.2, **{"recall@20": 0.3}), cfg)
    assert ok.passed and ok.numbers["guards"]["recall@20"]["required"] == pytest.approx(0.294)
    bad = decide(m(0.2, **{"recall@20": 0.25}), m(0.1), m(0.2, **{"recall@20": 0.3}), cfg)
    assert not bad.passed and any("guard recall@20" in r for r in bad.reasons)
    missing = decide(m(0.2), m(0.1), m(0.2, **{"recall@20": 0.3}), cfg)
    assert not missing.passed
    # Without a champion the guards have nothing to compare with.
    assert decide(m(0.2), m(0.1), None, cfg).passed


def test_other_metrics_can_gate():
    cfg = GateConfig(metric="recall@20", min_lift_over_baseline=0.10)
    assert decide({"recall@20": 0.33}, {"recall@20": 0.30}, None, cfg).passed
    assert not decide({"recall@20": 0.32, "ndcg@20": 9.0}, {"recall@20": 0.30}, None, cfg).passed


def test_the_decision_serialises_to_strict_json():
    d = decide(m(0.12), m(0.10), m(0.11), CFG)
    assert isinstance(d, GateDecision)
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert data["passed"] is True and data["numbers"]["candidate"] == 0.12
    assert data["numbers"]["min_lift_over_baseline"] == 0.05
    assert data["numbers"]["max_regression"] == 0.02
    assert len(data["reasons"]) == 2
    with pytest.raises(AttributeError):
        d.passed = False  # type: ignore[misc]


@pytest.mark.parametrize("kwargs", [{"min_lift_over_baseline": -0.1}, {"max_regression": 1.0},
                                    {"max_regression": -0.01}])
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        GateConfig(**kwargs)


def test_each_decision_can_record_the_gate_metric_by_slice() -> None:
    from recommender.training.gate import slice_numbers

    def entry(family: str, name: str, users: int, mean: float | None) -> dict:
        return {"family": family, "name": name, "users": users, "means": {"ndcg@20": mean},
                "ci95": {"ndcg@20": [0.0, 1.0]}}

    candidate = [entry("cohort", "new", 10, 0.02), entry("cohort", "established", 90, 0.3),
                 entry("activity", "5-19", 50, 0.25), entry("age", "18-24", 30, 0.4)]
    baseline = [entry("cohort", "new", 10, 0.05), entry("cohort", "established", 90, None)]
    numbers = slice_numbers(candidate, baseline, "ndcg@20")
    assert set(numbers) == {"cohort:new", "cohort:established", "activity:5-19"}  # gate families only
    assert numbers["cohort:new"] == {"users": 10, "candidate": 0.02, "baseline": 0.05,
                                     "candidate_ci95": [0.0, 1.0]}
    assert numbers["cohort:established"]["baseline"] is None
    assert numbers["activity:5-19"]["baseline"] is None  # the baseline lacked the slice
