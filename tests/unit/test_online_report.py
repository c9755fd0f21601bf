"""The online report (rows, reference arm, verdicts, text forms) and the served-record
tally that feeds its serving columns."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from online_eval.join import UNASSIGNED, ArmOutcome, OnlineEvalError
from online_eval.report import ArmServing, OnlineReport
from online_eval.source import ServedTally
from recommender.serving.telemetry import ServedRecord, encode_served
from recommender.versions import model_name, version_id

ALS_V = "als-20250301T120000-abc123"
POP_V = "popularity-20250301T110000-def456"
WINDOW, FOLLOW = timedelta(minutes=30), timedelta(hours=4)


def serving(*versions: str, users: int = 10) -> ArmServing:
    return ArmServing(users=users, answers=100, fallbacks=5, latency_p50_ms=4.0,
                      latency_p99_ms=40.0, model_versions=tuple(versions))


def outcome(taken: int, eligible: int) -> ArmOutcome:
    return ArmOutcome(requests=eligible + 3, successes=eligible, eligible=eligible,
                      taken=taken, minutes=taken * 50, ratings=taken // 2,
                      rating_sum=taken // 2 * 4)


def build(outcomes: dict[str, ArmOutcome], served: dict[str, ArmServing],
          **kw: object) -> OnlineReport:
    return OnlineReport.build(outcomes, served, window=WINDOW, follow_up=FOLLOW, **kw)  # type: ignore[arg-type]


def test_model_name_reads_registry_version_ids() -> None:
    assert model_name(ALS_V) == "als"
    assert model_name(POP_V) == "popularity"
    assert model_name("champion") is None
    assert model_name("als-2025-abc") is None
    made = version_id("item_knn.v2", datetime(2026, 1, 2, 3, 4, 5), "0123456789abcdef")
    assert made == "item_knn.v2-20260102T030405-012345" and model_name(made) == "item_knn.v2"


def test_the_baseline_arm_is_the_default_reference() -> None:
    report = build({"als": outcome(60, 100), "pop": outcome(30, 100)},
                   {"als": serving(ALS_V), "pop": serving(POP_V)})
    assert report.reference == "pop"
    [cmp] = report.comparisons
    assert (cmp.arm, cmp.reference) == ("als", "pop")
    assert cmp.test.diff == pytest.approx(0.3)  # arm minus reference
    assert cmp.test.significant() is True
    assert "significant at 0.05" in cmp.verdict() and "not significant" not in cmp.verdict()
    assert "+30.00 points" in cmp.verdict()


def test_a_small_difference_is_called_not_significant() -> None:
    report = build({"als": outcome(51, 100), "pop": outcome(50, 100)},
                   {"als": serving(ALS_V), "pop": serving(POP_V)})
    assert "not significant at 0.05" in report.comparisons[0].verdict()


def test_a_named_reference_wins_and_an_unknown_one_is_an_error() -> None:
    outcomes = {"als": outcome(60, 100), "pop": outcome(30, 100)}
    served = {"als": serving(ALS_V), "pop": serving(POP_V)}
    report = build(outcomes, served, reference="als")
    assert [(c.arm, c.reference) for c in report.comparisons] == [("pop", "als")]
    assert report.comparisons[0].test.diff == pytest.approx(-0.3)
    with pytest.raises(OnlineEvalError, match="'nope' not found; arms: als, pop"):
        build(outcomes, served, reference="nope")


def test_no_single_baseline_arm_means_no_comparison_and_a_note() -> None:
    mixed = {"a": serving(ALS_V, POP_V), "b": serving(ALS_V)}  # 'a' swapped models mid-run
    report = build({"a": outcome(1, 10), "b": outcome(2, 10)}, mixed)
    assert report.reference is None and report.comparisons == []
    assert any("name the reference arm" in n for n in report.notes)
    two = build({}, {"a": serving(POP_V), "b": serving(POP_V)})
    assert two.reference is None


def test_unassigned_is_listed_last_and_never_compared() -> None:
    report = build({"als": outcome(6, 10), UNASSIGNED: outcome(1, 10), "pop": outcome(3, 10)},
                   {"als": serving(ALS_V), "pop": serving(POP_V)})
    assert [r.arm for r in report.rows] == ["als", "pop", UNASSIGNED]
    assert [c.arm for c in report.comparisons] == ["als"]
    assert report.rows[2].serving is None


def test_an_arm_without_eligible_lists_cannot_be_compared() -> None:
    report = build({"als": outcome(0, 0), "pop": outcome(3, 10)},
                   {"als": serving(ALS_V), "pop": serving(POP_V)})
    assert "cannot compare" in report.comparisons[0].verdict()
    assert report.comparisons[0].to_dict()["significant"] is None


def test_to_dict_is_json_with_wilson_intervals() -> None:
    report = build({"als": outcome(0, 20), "pop": outcome(3, 10)},
                   {"als": serving(ALS_V), "pop": serving(POP_V)}, server="h:1",
                   since=datetime(2025, 3, 1), until=datetime(2025, 3, 2))
    d = json.loads(json.dumps(report.to_dict()))
    assert (d["since"], d["server"], d["window_min"], d["follow_up_min"]) == (
        "2025-03-01T00:00:00", "h:1", 30.0, 240.0)
    als = d["arms"][0]
    assert als["take_rate"] == 0.0
    assert als["take_rate_ci95"] == pytest.approx([0.0, 0.1611], abs=5e-5)  # Newcombe, 0/20
    assert (als["fallback_share"], als["model_versions"]) == (0.05, [ALS_V])
    assert d["comparisons"][0]["metric"] == "take_rate"


def test_text_forms_show_every_arm_and_the_verdicts() -> None:
    report = build({"als": outcome(60, 100), "pop": outcome(30, 100)},
                   {"als": serving(ALS_V), "pop": serving(POP_V)})
    table = report.format_table()
    lines = table.splitlines()
    assert lines[0].startswith("Online evaluation: window 30 min, follow-up 240 min")
    assert any(line.startswith("als ") and "60.0% [" in line for line in lines)
    assert any(line.startswith("pop ") and "popularity" in line for line in lines)
    assert report.comparisons[0].verdict() in lines
    md = report.to_markdown().splitlines()
    header = next(i for i, line in enumerate(md) if line.startswith("| arm |"))
    assert md[header + 1].count("---") == md[header].count("|") - 1
    assert md[header + 2].startswith("| als |") and md[header + 3].startswith("| pop |")


# -- the served-record tally ------------------------------------------------------------


def served(user: int, arm: str, time_ms: int, latency: float = 5.0, fallback: str | None = None,
           version: str | None = ALS_V) -> ServedRecord:
    return ServedRecord(request_id=f"{user:016x}{time_ms:016x}", time_ms=time_ms, user_id=user,
                        arm=arm, model_version=version, items=("a+2001",), path="model",
                        fallback=fallback, latency_ms=latency, status=200)


def test_a_users_arm_is_that_of_the_latest_record_by_its_time() -> None:
    tally = ServedTally()
    for record in [served(1, "als", 2_000), served(1, "pop", 1_000),  # published out of order
                   served(2, "pop", 1_000), served(3, "als", 5)]:
        tally.add(record)
    assert tally.arm_of == {1: "als", 2: "pop", 3: "als"}
    assert tally.switched == {1}
    summary = tally.summary()
    assert (summary["als"].users, summary["pop"].users) == (2, 1)
    assert (summary["als"].answers, summary["pop"].answers) == (2, 2)


def test_serving_facts_per_arm() -> None:
    tally = ServedTally()
    for i in range(1, 101):  # latencies 1..100 ms: nearest rank p50 = 50, p99 = 99
        tally.add(served(i, "als", i, latency=float(i), fallback="budget" if i % 4 == 0 else None,
                         version=ALS_V if i < 90 else "als-20250302T000000-aaaaaa"))
    tally.add(served(500, "pop", 1, version=None))  # nothing answered: no version
    tally.add_raw(b"not json")
    tally.add_raw(None)  # a tombstone
    tally.add_raw(json.dumps({"request_id": "x"}).encode())
    tally.add_raw(served(501, "pop", 2).to_json())
    # one value of several records (the service's batches), one of its lines bad
    tally.add_raw(encode_served([served(502, "pop", 3), served(503, "pop", 4)]) + b"\n{}")
    s = tally.summary()
    assert (s["als"].latency_p50_ms, s["als"].latency_p99_ms) == (50.0, 99.0)
    assert s["als"].fallback_share == 0.25
    assert s["als"].model_versions == (ALS_V, "als-20250302T000000-aaaaaa")
    assert s["pop"].model_versions == (ALS_V,) and s["pop"].answers == 4
    assert (tally.records, tally.bad_records) == (104, 4)


def test_the_latency_sample_is_bounded_and_uniform() -> None:
    tally = ServedTally(reservoir=500, seed=1)
    for i in range(20_000):  # latencies 0..19,999 in order: a biased sample shows at once
        tally.add(served(i, "als", i, latency=float(i)))
    assert len(tally._latency["als"]) == 500
    p50 = tally.summary()["als"].latency_p50_ms
    assert p50 is not None and 8_000 < p50 < 12_000
