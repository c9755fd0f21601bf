"""Statistics of online proportions: the Wilson interval of one share and the comparison
of two shares (an arm's take rate against the reference arm's). Pure: numbers in, numbers
out; every function is defined for zero counts and never divides by zero.

- ``wilson_interval(x, n)``: the score interval of Wilson (1927), "Probable inference,
  the law of succession, and statistical inference", JASA 22:209-212. It stays inside
  [0, 1] and keeps its coverage near 0 and 1, where the Wald interval p +- z*se collapses
  to a point (Newcombe 1998a, "Two-sided confidence intervals for the single proportion:
  comparison of seven methods", Stat. Med. 17:857-872, method 3).
- ``two_proportion_test(x1, n1, x2, n2)``: the difference p1 - p2 with

  - the two-sided z-test of H0: p1 = p2 with the *pooled* standard error (under H0 both
    samples estimate one p). Its z^2 is exactly Pearson's chi-square of the 2x2 table
    without continuity correction (Agresti, "Categorical Data Analysis", 3rd ed. 2013,
    ch. 3), which the tests use as an independent check;
  - the 95 % confidence interval of the difference with the *unpooled* (Wald) standard
    error sqrt(p1 q1 / n1 + p2 q2 / n2): Newcombe 1998b, "Interval estimation for the
    difference between independent proportions: comparison of eleven methods", Stat.
    Med. 17:873-890, method 1. Pooling belongs to the test only: the interval must not
    assume the difference it measures is zero.

Requests of one user are not independent draws, so with heavy users these p-values are
somewhat optimistic (Kohavi, Tang and Xu, "Trustworthy Online Controlled Experiments",
2020, ch. 18 on the unit of analysis); docs/online_eval.md says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054
"""The standard normal's 97.5th percentile: two-sided 95 % intervals."""
ALPHA = 0.05
"""The significance level the reports use."""


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials`` (default: 95 %).

    With p = x/n::

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

    ``(0.0, 1.0)`` when ``trials`` is 0: no data, no information. ``ValueError`` on
    impossible counts.
    """
    _check_counts(successes, trials)
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    scale = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # exact at the edges: rounding must not put the bound a hair inside (0 of n) or out
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class ProportionTest:
    """p1 - p2 with its 95 % interval, z and two-sided p-value; shares are fractions.

    Every field is None when either sample is empty (nothing to compare).
    """

    diff: float | None
    ci_low: float | None
    ci_high: float | None
    z: float | None
    p_value: float | None

    def significant(self, alpha: float = ALPHA) -> bool | None:
        """True when p < ``alpha``; None when there was nothing to test."""
        return None if self.p_value is None else self.p_value < alpha

    def to_dict(self) -> dict[str, float | None]:
        return {"diff": self.diff, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "z": self.z, "p_value": self.p_value}


def two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z: erfc(|z| / sqrt 2), exact in the far tail
    where 2 * (1 - Phi(|z|)) would round to 0 too early."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def two_proportion_test(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> ProportionTest:
    """Compare ``x1 / n1`` with ``x2 / n2`` (module docstring for the method).

    - z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2)) with the pooled p = (x1 + x2) / (n1 + n2);
      when p is 0 or 1 both samples are all-failure or all-success, the difference is
      exactly 0 and so is z (p-value 1).
    - CI = (p1 - p2) +- z95 * sqrt(p1 (1 - p1) / n1 + p2 (1 - p2) / n2), clipped to [-1, 1].
      With p1 and p2 both 0 or 1 it is the single point 0, a known weakness of the Wald
      interval with small samples (Newcombe 1998b).
    """
    _check_counts(x1, n1)
    _check_counts(x2, n2)
    if n1 == 0 or n2 == 0:
        return ProportionTest(None, None, None, None, None)
    p1, p2 = x1 / n1, x2 / n2
    diff = p1 - p2
    pooled = (x1 + x2) / (n1 + n2)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z_stat = 0.0 if se_pooled == 0 else diff / se_pooled
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return ProportionTest(diff=diff, ci_low=max(-1.0, diff - z * se),
                          ci_high=min(1.0, diff + z * se), z=z_stat, p_value=two_sided_p(z_stat))
