"""The canary's sequential test keeps its error rates under continuous looking, stops
early on a clear effect, and its guardrails and split check stop a canary at once."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from online_eval.sequential import (
    ArmHealth,
    ArmSample,
    Guardrails,
    Outcome,
    SequentialSettings,
    decide,
    guardrail_breaches,
    msprt,
    sample_ratio_p,
)

SETTINGS = SequentialSettings(alpha=0.05, tau=0.02, min_users=100)
HEALTHY = ArmHealth(requests=1000, errors=0, fallbacks=10, p99_ms=20, plays=100, cost=100)


def users(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Per-user take rates: each user has 1-6 eligible lists, each taken with ``rate``."""
    lists = rng.integers(1, 7, size=n)
    return rng.binomial(lists, rate) / lists


def stream(rng: np.random.Generator, rates: tuple[float, float], *, looks: int = 40,
           per_look: int = 100, share: float = 0.5,
           settings: SequentialSettings = SETTINGS) -> tuple[Outcome, int]:
    """A canary watched ``looks`` times, ``per_look`` new users each time split by
    ``share``: its first stopping outcome and the look it stopped at."""
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    p = 1.0
    for look in range(1, looks + 1):
        to_b = rng.binomial(per_look, share)
        a.append(users(rng, per_look - to_b, rates[0]))
        b.append(users(rng, to_b, rates[1]))
        d = decide(ArmSample.of(np.concatenate(a)), ArmSample.of(np.concatenate(b)),
                   settings=settings, shares=(1 - share, share), health=(HEALTHY, HEALTHY),
                   limits=Guardrails(), expired=look == looks, previous_p=p)
        if d.evidence is not None:
            p = d.evidence.p_value
        if d.outcome is not Outcome.CONTINUE:
            return d.outcome, look
    raise AssertionError("expired looks must end the canary")


def test_a_a_streams_looked_at_40_times_reject_at_most_alpha() -> None:
    rng = np.random.default_rng(7)
    runs = 400
    rejected = sum(stream(rng, (0.2, 0.2))[0] in (Outcome.PROMOTE, Outcome.ROLL_BACK)
                   for _ in range(runs))
    # Binomial(400, 0.05) exceeds 30 with probability < 1%; a fixed-horizon z-test
    # peeked at 40 times rejects ~25-30% of these streams.
    assert rejected / runs <= 0.075


def test_a_fixed_horizon_test_peeked_at_the_same_way_would_not_keep_alpha() -> None:
    """The control for the test above: the stream is hard enough that peeking matters."""
    rng = np.random.default_rng(7)
    runs, rejected = 200, 0
    for _ in range(runs):
        a: list[np.ndarray] = []
        b: list[np.ndarray] = []
        for _look in range(40):
            a.append(users(rng, 50, 0.2))
            b.append(users(rng, 50, 0.2))
            x, y = np.concatenate(a), np.concatenate(b)
            z = (y.mean() - x.mean()) / math.sqrt(x.var(ddof=1) / x.size + y.var(ddof=1) / y.size)
            if abs(z) > 1.96:
                rejected += 1
                break
    assert rejected / runs > 0.15


@pytest.mark.parametrize(("rates", "expected"), [((0.20, 0.26), Outcome.PROMOTE),
                                                 ((0.26, 0.20), Outcome.ROLL_BACK)])
def test_a_b_streams_with_a_real_effect_stop_early_in_the_right_direction(
        rates: tuple[float, float], expected: Outcome) -> None:
    rng = np.random.default_rng(11)
    results = [stream(rng, rates) for _ in range(100)]
    right = [look for outcome, look in results if outcome is expected]
    wrong = [outcome for outcome, _ in results if outcome not in (expected, Outcome.KEEP_CHAMPION)]
    assert len(right) >= 80, "power against a 6-point change of take rate"
    assert not wrong
    assert np.median(right) < 20, "stops well before the maximum duration"


def test_a_small_canary_share_keeps_the_error_rate() -> None:
    rng = np.random.default_rng(3)
    results = [stream(rng, (0.2, 0.2), share=0.1, per_look=400, looks=30)[0]
               for _ in range(200)]
    wrong = sum(o in (Outcome.PROMOTE, Outcome.ROLL_BACK) for o in results)
    assert wrong / len(results) <= 0.08
    assert results.count(Outcome.KEEP_CHAMPION) == len(results) - wrong


MARGIN = SequentialSettings(alpha=0.05, tau=0.02, min_users=100, margin=0.1)


def test_with_a_margin_an_equal_challenger_is_promoted_as_not_worse() -> None:
    """A retrain as good as the champion serves its fresher data, named as such."""
    rng = np.random.default_rng(5)
    results = [stream(rng, (0.4, 0.4), settings=MARGIN) for _ in range(100)]
    assert sum(o is Outcome.PROMOTE for o, _ in results) >= 80
    last = decide(ArmSample.of(users(rng, 3000, 0.4)), ArmSample.of(users(rng, 3000, 0.4)),
                  settings=MARGIN, shares=(0.5, 0.5), health=(HEALTHY, HEALTHY),
                  limits=Guardrails(), expired=False)
    assert last.outcome is Outcome.PROMOTE and "not worse than the margin" in last.reason


def test_with_a_margin_a_challenger_worse_by_the_margin_is_rarely_promoted() -> None:
    """The non-inferiority test keeps alpha: at the margin's edge (0.4 -> 0.36), a
    promotion is the error the margin bounds."""
    rng = np.random.default_rng(9)
    results = [stream(rng, (0.4, 0.36), settings=MARGIN)[0] for _ in range(300)]
    assert sum(o is Outcome.PROMOTE for o in results) / len(results) <= 0.075
    worse = [stream(rng, (0.4, 0.3), settings=MARGIN)[0] for _ in range(100)]
    assert Outcome.PROMOTE not in worse and worse.count(Outcome.ROLL_BACK) >= 80


def test_the_interval_holds_zero_exactly_when_the_ratio_is_below_one_over_alpha() -> None:
    rng = np.random.default_rng(5)
    for shift in np.linspace(0, 0.08, 17):
        ev = msprt(ArmSample.of(users(rng, 400, 0.2)), ArmSample.of(users(rng, 400, 0.2 + shift)),
                   alpha=0.05, tau=0.02)
        assert ev.significant == (ev.likelihood_ratio >= 20), shift
        assert ev.low < ev.diff < ev.high


def test_the_p_value_never_rises_and_no_variance_rejects_nothing() -> None:
    same = ArmSample.of([0.5] * 200)
    ev = msprt(same, same, alpha=0.05, tau=0.02, previous_p=0.3)
    assert ev.likelihood_ratio == 1.0 and ev.p_value == 0.3 and not ev.significant
    ev = msprt(ArmSample.of([]), ArmSample.of([1.0]), alpha=0.05, tau=0.02)
    assert ev.p_value == 1.0 and not ev.significant
    with pytest.raises(ValueError, match="alpha"):
        msprt(same, same, alpha=1.5, tau=0.02)


def test_no_decision_before_the_minimum_number_of_users() -> None:
    d = decide(ArmSample.of([0.0] * 50), ArmSample.of([1.0] * 49 + [0.9]), settings=SETTINGS,
               shares=(0.5, 0.5), health=(HEALTHY, HEALTHY), limits=Guardrails(),
               expired=False)
    assert d.outcome is Outcome.CONTINUE and d.evidence is not None and d.evidence.significant


def test_sample_ratio_p_is_one_over_the_dirichlet_multinomial_bayes_factor() -> None:
    """Checked for two arms against the Beta-binomial form written with scipy's betaln."""
    special = pytest.importorskip("scipy.special")
    c = 100.0
    for n1, n2, p in [(900, 100, 0.9), (950, 50, 0.9), (40, 60, 0.5), (3, 0, 0.2)]:
        log_bf = (special.betaln(c * p + n1, c * (1 - p) + n2) - special.betaln(c * p, c * (1 - p))
                  - n1 * math.log(p) - n2 * math.log(1 - p))
        assert sample_ratio_p([n1, n2], [p, 1 - p]) == pytest.approx(
            min(1.0, math.exp(-log_bf)), rel=1e-9)
    assert sample_ratio_p([0, 0], [0.5, 0.5]) == 1.0
    with pytest.raises(ValueError, match="share"):
        sample_ratio_p([1, 2], [1.0])


def test_the_split_check_looked_at_every_time_rarely_cries_wolf_and_finds_a_bad_split() -> None:
    rng = np.random.default_rng(13)
    false_alarms = found = 0
    for _ in range(300):
        good, bad = np.zeros(2, dtype=int), np.zeros(2, dtype=int)
        alarm = caught = False
        for _look in range(50):
            good += rng.multinomial(200, [0.9, 0.1])
            bad += rng.multinomial(200, [0.92, 0.08])
            alarm |= sample_ratio_p(list(good), [0.9, 0.1]) < 0.01
            caught |= sample_ratio_p(list(bad), [0.9, 0.1]) < 0.01
        false_alarms += alarm
        found += caught
    assert false_alarms / 300 <= 0.01 + 0.01, "Ville: at most the threshold, whatever the looks"
    assert found / 300 >= 0.9, "a canary served to 8% instead of 10% is found in 10,000 users"


def test_a_broken_split_rolls_back_whatever_the_take_rates_say() -> None:
    a, b = ArmSample.of([0.2] * 500 + [0.3] * 500), ArmSample.of([0.9] * 300)
    d = decide(a, b, settings=SETTINGS, shares=(0.9, 0.1), health=(HEALTHY, HEALTHY),
               limits=Guardrails(), expired=False)
    assert d.outcome is Outcome.ROLL_BACK and "sample ratio mismatch" in d.reason
    assert d.srm_p < 1e-6


@pytest.mark.parametrize(("challenger", "words"), [
    (ArmHealth(requests=300, p99_ms=450), "p99 latency 450 ms"),
    (ArmHealth(requests=100, fallbacks=30), "fallback share 30.0%"),
    (ArmHealth(requests=100, errors=5), "error share 5.0%"),
    (ArmHealth(requests=100, plays=40, cost=80), "cost per play 2.000"),
])
def test_each_guardrail_stops_the_canary_at_once(challenger: ArmHealth, words: str) -> None:
    good = ArmSample.of([0.9] * 200)
    d = decide(ArmSample.of([0.1] * 1800), good, settings=SETTINGS, shares=(0.9, 0.1),
               health=(HEALTHY, challenger), limits=Guardrails(), expired=False)
    assert d.outcome is Outcome.ROLL_BACK
    assert d.reason.startswith("guardrail") and words in d.reason


def test_guardrails_wait_for_enough_requests_and_pass_a_healthy_arm() -> None:
    assert guardrail_breaches(HEALTHY, ArmHealth(requests=10, errors=10), Guardrails()) == []
    assert guardrail_breaches(HEALTHY, HEALTHY, Guardrails()) == []
    # No plays on either side: cost per play cannot be judged, and is not.
    assert guardrail_breaches(ArmHealth(requests=100), ArmHealth(requests=100), Guardrails()) == []


def test_noisy_estimates_wait_for_their_own_sample_sizes() -> None:
    """A p99 over 60 answers is their slowest one, and the cost of three plays is chance:
    neither stops a canary until its own minimum is reached (the demo's early looks)."""
    limits = Guardrails()
    one_stall = ArmHealth(requests=60, p99_ms=450)
    assert guardrail_breaches(HEALTHY, one_stall, limits) == []
    assert guardrail_breaches(HEALTHY, replace(one_stall, requests=limits.min_latency_samples),
                              limits)
    # served answers count as latency samples when the log has fewer lines yet
    assert guardrail_breaches(HEALTHY, replace(one_stall, served=limits.min_latency_samples),
                              limits)
    few_plays = ArmHealth(requests=100, plays=3, cost=6)  # 2.0 per play against 1.0
    assert guardrail_breaches(HEALTHY, few_plays, limits) == []
    assert guardrail_breaches(replace(HEALTHY, plays=3, cost=3), replace(few_plays, plays=40,
                              cost=80), limits) == [], "the champion's few plays are noise too"
    assert guardrail_breaches(HEALTHY, replace(few_plays, plays=limits.min_plays,
                                               cost=2 * limits.min_plays), limits)


def test_a_look_before_the_minimum_users_does_not_lower_the_running_p_value() -> None:
    tiny = decide(ArmSample.of([0.0] * 5), ArmSample.of([1.0] * 4 + [0.9]), settings=SETTINGS,
                  shares=(0.5, 0.5), health=(HEALTHY, HEALTHY), limits=Guardrails(),
                  expired=False, previous_p=0.7)
    assert tiny.outcome is Outcome.CONTINUE and tiny.evidence is not None
    assert tiny.evidence.p_value == 0.7, "a fluke of five users is not evidence"


def test_the_fallback_share_counts_against_the_answers_the_service_recorded() -> None:
    # 30 fallbacks of 300 recorded answers is 10%, not 30% of 100 log lines read so far
    assert guardrail_breaches(HEALTHY, ArmHealth(requests=100, served=300, fallbacks=30),
                              Guardrails(fallback_share=0.10)) == []
    assert guardrail_breaches(HEALTHY, ArmHealth(requests=100, served=200, fallbacks=30),
                              Guardrails(fallback_share=0.10))
