"""The canary's online decision: an always-valid sequential test of per-user take rates,
a sample-ratio-mismatch check, and guardrails. Pure: numbers in, a decision out.

Why sequential. The loop looks at a canary every few minutes and stops as soon as the
answer is clear. A fixed-horizon z-test read that often rejects a true null far more often
than its nominal alpha (Armitage, McPherson and Rowe 1969; Johari et al. 2017 measured
type-I error above 50% for daily peeking). The mixture sequential probability ratio test
(mSPRT) keeps its error rate under *any* stopping rule, so every look is allowed.

The test (Johari, Koomen, Pekelis and Walsh, "Peeking at A/B Tests: Why it matters, and
what to do about it", KDD 2017, section 4; Robbins 1970 for the normal mixture). With the
difference of means ``d = mean_B - mean_A`` approximately normal, ``d ~ N(theta, s2)``
where ``s2 = var_A / n_A + var_B / n_B``, and a normal mixing distribution ``N(0, tau2)``
over the effect ``theta`` under the alternative, the mixture likelihood ratio against
``H0: theta = 0`` is::

    Lambda = sqrt(s2 / (s2 + tau2)) * exp(tau2 * d**2 / (2 * s2 * (s2 + tau2)))

``H0`` is rejected the first time ``Lambda >= 1 / alpha``; by Ville's inequality the
probability that this ever happens under ``H0`` is at most ``alpha``. The always-valid
p-value is ``min over looks of 1 / Lambda``, and the always-valid confidence sequence is
the set of theta not rejected::

    |d - theta| < sqrt(s2 * (s2 + tau2) / tau2 * (2 * log(1 / alpha) + log((s2 + tau2) / s2)))

The unit is the *user* (Kohavi, Tang and Xu, "Trustworthy Online Controlled
Experiments", 2020, ch. 18): each user contributes one number, their share of eligible
lists they took, so heavy users do not make the test overconfident.

``tau2``, the mixing variance, tunes where the test is most powerful: Johari et al.
recommend a value of the order of the squared effects one expects; the default is
``(0.02)**2``, a 2-point change of take rate.

Guardrails stop a canary at once, without waiting for significance: they protect users
from a challenger that is slow, falls back, fails, or costs more per play. The sample
ratio mismatch check (Fabijan et al., "Diagnosing Sample Ratio Mismatch in Online
Controlled Experiments", KDD 2019) compares the users per arm with the configured split,
itself sequentially (``sample_ratio_p``); a tiny p-value means the split is broken and no
comparison can be trusted.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

SRM_CONCENTRATION = 100.0
"""The Dirichlet prior's total weight in the split check: the number of users' worth of
belief that the split is as configured. Smaller finds gross mismatches sooner, larger
finds slight ones; with 100, a 10% canary that serves 8% or 12% of users falls under
p = 0.001 after about 5,000 users (p < 1e-8 after 10,000)."""


class Outcome(enum.StrEnum):
    """What the canary's evidence says now."""

    CONTINUE = "continue"
    PROMOTE = "promote"
    ROLL_BACK = "roll_back"
    KEEP_CHAMPION = "keep_champion"
    """Inconclusive at the maximum duration: the challenger goes, the champion stays."""


@dataclass(frozen=True)
class SequentialSettings:
    """How the canary decides: ``alpha`` the error rate kept under continuous looking,
    ``tau`` the mixing standard deviation (take-rate units), ``min_users`` per arm
    before the test may stop (the normal approximation needs some users), ``srm_p`` the
    p-value under which the split is declared broken, ``margin`` the non-inferiority
    margin relative to the champion's take rate (0: only a better challenger is promoted;
    see ``decide``)."""

    alpha: float = 0.05
    tau: float = 0.02
    min_users: int = 100
    srm_p: float = 0.001
    margin: float = 0.0


@dataclass(frozen=True)
class ArmSample:
    """One arm's per-user outcomes: ``values[i]`` is user i's take rate (taken lists /
    eligible lists, in [0, 1])."""

    values: np.ndarray

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> ArmSample:
        return cls(np.asarray(values, dtype=np.float64))

    @property
    def n(self) -> int:
        return int(self.values.size)

    @property
    def mean(self) -> float:
        return float(self.values.mean()) if self.n else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance; 0 with fewer than two users."""
        return float(self.values.var(ddof=1)) if self.n > 1 else 0.0


@dataclass(frozen=True)
class Evidence:
    """One look at the test: the difference ``d`` (challenger minus champion), its
    always-valid interval, the mixture likelihood ratio and the running p-value."""

    diff: float
    low: float
    high: float
    likelihood_ratio: float
    p_value: float
    n_champion: int
    n_challenger: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def msprt(champion: ArmSample, challenger: ArmSample, *, alpha: float, tau: float,
          previous_p: float = 1.0) -> Evidence:
    """The mSPRT evidence after this look (module docstring for the formulas).

    ``previous_p`` is the always-valid p-value of the previous look; the new one is the
    minimum, so it never rises. With no variance yet (too few users, or every user the
    same) the ratio is 1 and nothing is rejected."""
    if alpha <= 0 or alpha >= 1 or tau <= 0:
        raise ValueError(f"alpha must be in (0, 1) and tau > 0, got {alpha}, {tau}")
    d = challenger.mean - champion.mean
    s2 = 0.0
    if champion.n > 1 and challenger.n > 1:
        s2 = champion.variance / champion.n + challenger.variance / challenger.n
    if s2 <= 0:
        return Evidence(d, -math.inf, math.inf, 1.0, min(previous_p, 1.0),
                        champion.n, challenger.n)
    tau2 = tau * tau
    log_ratio = 0.5 * math.log(s2 / (s2 + tau2)) + tau2 * d * d / (2 * s2 * (s2 + tau2))
    half = math.sqrt(s2 * (s2 + tau2) / tau2
                     * (2 * math.log(1 / alpha) + math.log((s2 + tau2) / s2)))
    ratio = math.exp(min(log_ratio, 700.0))
    return Evidence(d, d - half, d + half, ratio, min(previous_p, 1.0 / ratio),
                    champion.n, challenger.n)


def sample_ratio_p(counts: Sequence[int], shares: Sequence[float], *,
                   concentration: float = SRM_CONCENTRATION) -> float:
    """The always-valid p-value that ``counts`` (users per arm so far) were drawn with
    ``shares``: ``min(1, 1 / BF)`` where BF is the Bayes factor of a Dirichlet-multinomial
    mixture against the configured multinomial (Lindon and Malek, "Anytime-Valid Inference
    for Multinomial Count Data", NeurIPS 2022)::

        BF = Gamma(c) / Gamma(c + n) * prod_i Gamma(c p_i + n_i) / Gamma(c p_i)
             / prod_i p_i ** n_i

    with the Dirichlet centred on the shares, ``c p_i``. BF is a nonnegative martingale
    under the configured split, so by Ville's inequality it ever reaches ``1 / a`` with
    probability at most ``a``: the split may be checked at every look. (Pearson's
    chi-square, checked at every look, would cry wolf ever more often as the canary
    runs.)"""
    total = sum(counts)
    if total == 0 or len(counts) < 2:
        return 1.0
    if len(counts) != len(shares) or any(s <= 0 for s in shares):
        raise ValueError(f"one positive share per arm, got {shares} for {counts}")
    norm = sum(shares)
    probs = [s / norm for s in shares]
    c = concentration
    log_bf = math.lgamma(c) - math.lgamma(c + total)
    for n_i, p_i in zip(counts, probs, strict=True):
        log_bf += math.lgamma(c * p_i + n_i) - math.lgamma(c * p_i) - n_i * math.log(p_i)
    return min(1.0, math.exp(-log_bf)) if log_bf < 700 else 0.0


@dataclass(frozen=True)
class Guardrails:
    """Limits on the challenger arm that stop a canary at once. Latency and rates are
    absolute; cost per play is relative to the champion's (1.25: 25% more)."""

    p99_ms: float = 300.0
    fallback_share: float = 0.10
    error_share: float = 0.01
    cost_per_play_ratio: float = 1.25
    min_requests: int = 50
    """Below this many challenger requests the rates are too noisy to act on."""
    min_latency_samples: int = 200
    """The p99 is judged over at least this many answers: the p99 of 50 is their slowest
    one, and one stall of a busy host (a training run, a GC pause) would stop a canary
    that has nothing wrong with it; at 200 it takes three slow answers."""
    min_plays: int = 30
    """Cost per play is judged once both arms have this many plays: the licence costs of a
    handful of plays differ by more than the 25% limit by chance alone."""


@dataclass(frozen=True)
class ArmHealth:
    """Serving facts of one arm since the canary began."""

    requests: int = 0
    """Recommendation lines of the arm in the log (errors are counted against these)."""
    errors: int = 0
    served: int = 0
    """Answers the service recorded for the arm (fallbacks are counted against these;
    0: use ``requests``)."""
    fallbacks: int = 0
    p99_ms: float = 0.0
    plays: int = 0
    cost: float = 0.0

    @property
    def cost_per_play(self) -> float | None:
        return self.cost / self.plays if self.plays else None


def guardrail_breaches(champion: ArmHealth, challenger: ArmHealth,
                       limits: Guardrails) -> list[str]:
    """Every guardrail the challenger breaks, as a sentence for the journal (empty: none).
    Nothing is judged before ``limits.min_requests`` challenger requests."""
    if challenger.requests < limits.min_requests:
        return []
    out = []
    answers = challenger.served or challenger.requests
    if answers >= limits.min_latency_samples and challenger.p99_ms > limits.p99_ms:
        out.append(f"p99 latency {challenger.p99_ms:.0f} ms > {limits.p99_ms:.0f} ms")
    fallback = challenger.fallbacks / (challenger.served or challenger.requests)
    if fallback > limits.fallback_share:
        out.append(f"fallback share {fallback:.1%} > {limits.fallback_share:.1%}")
    errors = challenger.errors / challenger.requests
    if errors > limits.error_share:
        out.append(f"error share {errors:.1%} > {limits.error_share:.1%}")
    ours, theirs = challenger.cost_per_play, champion.cost_per_play
    enough_plays = min(champion.plays, challenger.plays) >= limits.min_plays
    if enough_plays and ours is not None and theirs and ours > theirs * limits.cost_per_play_ratio:
        out.append(f"cost per play {ours:.3f} > {limits.cost_per_play_ratio:g} x the "
                   f"champion's {theirs:.3f}")
    return out


@dataclass(frozen=True)
class Decision:
    """The canary's verdict at one look, with the numbers and the reason the journal
    keeps."""

    outcome: Outcome
    reason: str
    evidence: Evidence | None = None
    breaches: list[str] = field(default_factory=list)
    srm_p: float = 1.0


def decide(champion: ArmSample, challenger: ArmSample, *, settings: SequentialSettings,
           shares: tuple[float, float], health: tuple[ArmHealth, ArmHealth],
           limits: Guardrails, expired: bool, previous_p: float = 1.0) -> Decision:
    """One look at a canary, in order of precedence: a guardrail breach or a broken split
    rolls back now; then the sequential test promotes or rolls back when significant;
    otherwise continue, or keep the champion when the maximum duration has ``expired``.

    ``shares`` are the configured (champion, challenger) traffic shares, ``health`` the
    (champion, challenger) serving facts."""
    breaches = guardrail_breaches(health[0], health[1], limits)
    if breaches:
        return Decision(Outcome.ROLL_BACK, "guardrail: " + "; ".join(breaches),
                        breaches=breaches)
    srm = sample_ratio_p([champion.n, challenger.n], shares)
    if srm < settings.srm_p:
        return Decision(Outcome.ROLL_BACK,
                        f"sample ratio mismatch: {champion.n} vs {challenger.n} users for "
                        f"shares {shares}, p = {srm:.2g}", srm_p=srm)
    enough = min(champion.n, challenger.n) >= settings.min_users
    ev = msprt(champion, challenger, alpha=settings.alpha, tau=settings.tau,
               previous_p=previous_p)
    if not enough:  # a look before min_users neither decides nor lowers the running p
        ev = replace(ev, p_value=min(previous_p, 1.0))
    interval = f"difference {ev.diff:+.4f} [{ev.low:+.4f}, {ev.high:+.4f}], p = {ev.p_value:.3g}"
    if enough and ev.low > 0:
        return Decision(Outcome.PROMOTE, f"mSPRT: challenger better, {interval}", ev, srm_p=srm)
    if enough and ev.high < 0:
        return Decision(Outcome.ROLL_BACK, f"mSPRT: challenger worse, {interval}", ev,
                        srm_p=srm)
    # Non-inferiority: the interval is a confidence sequence, valid at every look, so
    # "its lower end is above -margin" is a sequential test of "worse by more than the
    # margin" with the same error rate alpha (Johari et al. 2017, sec. 4; the margin is
    # taken on the champion's observed rate, a small extra error on small samples). A
    # retrained model that is not measurably worse serves the fresher data; worse by
    # less than the margin but significantly worse still rolls back (above).
    floor = -settings.margin * champion.mean
    if enough and settings.margin > 0 and ev.low > floor:
        return Decision(Outcome.PROMOTE, f"mSPRT: challenger not worse than the margin "
                        f"({floor:+.4f}), {interval}", ev, srm_p=srm)
    if expired:
        return Decision(Outcome.KEEP_CHAMPION, f"inconclusive at the maximum duration, "
                        f"{interval}", ev, srm_p=srm)
    return Decision(Outcome.CONTINUE, interval, ev, srm_p=srm)
