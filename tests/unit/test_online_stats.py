"""Online statistics against published examples and an independent computation.

Wilson intervals: the worked examples of Newcombe (1998a), "Two-sided confidence intervals
for the single proportion", Stat. Med. 17:857-872, Table I, method 3. The difference of
two proportions: Newcombe (1998b), Stat. Med. 17:873-890, example (a), method 1. The
z-test's p-value: Pearson's chi-square of the same 2x2 table by scipy (z^2 = X^2).
"""

from __future__ import annotations

import math

import pytest
from scipy.stats import chi2_contingency, norm

from online_eval.stats import Z95, two_proportion_test, two_sided_p, wilson_interval


@pytest.mark.parametrize(("x", "n", "low", "high"), [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0),
])
def test_wilson_matches_newcombes_table(x: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(x, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_is_exact_at_the_edges_and_uninformative_without_data() -> None:
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_narrows_with_more_data_around_the_same_share() -> None:
    small, large = wilson_interval(3, 10), wilson_interval(300, 1000)
    assert small[0] < large[0] < 0.3 < large[1] < small[1]


@pytest.mark.parametrize(("x", "n"), [(-1, 5), (6, 5), (0, -1)])
def test_impossible_counts_are_refused(x: int, n: int) -> None:
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(x, n)
    with pytest.raises(ValueError, match="successes <= trials"):
        two_proportion_test(x, n, 1, 2)


def test_difference_interval_matches_newcombes_example_a() -> None:
    # 56/70 vs 48/80: difference 0.2000, simple asymptotic interval 0.0575 to 0.3425
    test = two_proportion_test(56, 70, 48, 80)
    assert test.diff == pytest.approx(0.2)
    assert (test.ci_low, test.ci_high) == pytest.approx((0.0575, 0.3425), abs=5e-5)


@pytest.mark.parametrize("counts", [(56, 70, 48, 80), (0, 50, 5, 50), (3, 1000, 9, 1200),
                                    (500, 900, 430, 880)])
def test_z_squared_is_pearsons_chi_square(counts: tuple[int, int, int, int]) -> None:
    x1, n1, x2, n2 = counts
    test = two_proportion_test(x1, n1, x2, n2)
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    pearson = chi2_contingency(table, correction=False)
    assert test.z is not None and test.p_value is not None
    assert test.z ** 2 == pytest.approx(pearson.statistic, rel=1e-9)
    assert test.p_value == pytest.approx(pearson.pvalue, rel=1e-9)
    assert math.copysign(1, test.z) == math.copysign(1, x1 / n1 - x2 / n2)


def test_pooled_for_the_test_unpooled_for_the_interval() -> None:
    # 0/50 vs 5/50 by hand: pooled p = 0.05, se = sqrt(.05 * .95 * (2/50)) = 0.043589,
    # z = -0.1 / 0.043589 = -2.2942; unpooled se = sqrt(0.1 * 0.9 / 50) = 0.042426
    test = two_proportion_test(0, 50, 5, 50)
    assert test.z == pytest.approx(-2.2942, abs=1e-4)
    assert (test.ci_low, test.ci_high) == pytest.approx(
        (-0.1 - Z95 * 0.042426, -0.1 + Z95 * 0.042426), abs=1e-5)
    assert test.significant() is True


def test_zero_counts_never_divide_by_zero() -> None:
    empty = two_proportion_test(0, 0, 4, 10)
    assert empty.to_dict() == {"diff": None, "ci_low": None, "ci_high": None, "z": None,
                               "p_value": None}
    assert empty.significant() is None
    nothing = two_proportion_test(0, 30, 0, 40)  # both all-failure: no difference at all
    assert (nothing.diff, nothing.z, nothing.p_value) == (0.0, 0.0, 1.0)
    assert (nothing.ci_low, nothing.ci_high) == (0.0, 0.0)
    everything = two_proportion_test(30, 30, 40, 40)
    assert (everything.diff, everything.p_value) == (0.0, 1.0)


def test_similar_shares_are_not_significant() -> None:
    test = two_proportion_test(51, 100, 50, 100)
    assert test.significant() is False
    assert test.ci_low is not None and test.ci_low < 0 < test.ci_high


def test_two_sided_p_is_the_normal_tail_even_far_out() -> None:
    assert two_sided_p(Z95) == pytest.approx(0.05, rel=1e-9)
    assert two_sided_p(-1.0) == pytest.approx(2 * norm.sf(1.0), rel=1e-12)
    # 1 - Phi(10) is 0.0 in floating point; the tail itself is about 1.5e-23
    assert two_sided_p(10.0) == pytest.approx(2 * norm.sf(10.0), rel=1e-9)
    assert two_sided_p(10.0) > 0
