"""Ranking metrics and slices on small worlds whose answers follow from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from offline_eval.ranking_metrics import (
    EvalError,
    accuracy,
    coverage,
    item_user_counts,
    judge,
    mean_item_value,
    mean_over_users,
    popularity_percentile,
    self_information,
)
from offline_eval.slices import (
    ACTIVITY_LABELS,
    UNKNOWN,
    activity_slices,
    cohort_slices,
    demographic_slices,
    head_items,
    long_tail_metrics,
    slice_means,
    user_slices,
)
from recommender.models.profiles import AGE_GROUPS, GENDERS, Profiles

D2, D3 = 1 / math.log2(3), 1 / math.log2(4)  # log2 discounts of ranks 2 and 3


def arr(*items: int) -> np.ndarray:
    return np.array(items, dtype=np.int32)


# Hand-computed case, k = 3 (rel = relevant flags by rank, R = |truth|, m = min(R, 3)):
#  user 0: recs [5, 2, 7], truth {2, 7, 9}: rel [0, 1, 1], R = 3, m = 3
#          precision 2/3, recall 2/3, DCG = D2 + D3, IDCG = 1 + D2 + D3,
#          AP = (P@2 + P@3) / 3 = (1/2 + 2/3) / 3, hit 1
#  user 1: recs [1, -1, -1], truth {1}: rel [1, 0, 0], R = 1, m = 1
#          precision 1/3, recall 1, NDCG 1, AP 1, hit 1
#  user 2: recs [3, 4, 3] (3 repeated), truth {3, 8, 10, 11, 12}: rel [1, 0, 0] (the
#          repeat does not count), R = 5, m = 3: precision 1/3, recall 1/3,
#          NDCG 1 / (1 + D2 + D3), AP = 1/3, hit 1
#  user 3: recs [0, 1, 2], truth {}: not evaluable, NaN everywhere
RECS = np.array([[5, 2, 7], [1, -1, -1], [3, 4, 3], [0, 1, 2]], dtype=np.int32)
TRUTH = [arr(2, 7, 9), arr(1), arr(12, 3, 8, 10, 11), arr()]
EXPECTED = {
    "precision": [2 / 3, 1 / 3, 1 / 3],
    "recall": [2 / 3, 1.0, 1 / 3],
    "ndcg": [(D2 + D3) / (1 + D2 + D3), 1.0, 1 / (1 + D2 + D3)],
    "map": [(1 / 2 + 2 / 3) / 3, 1.0, 1 / 3],
    "hit_rate": [1.0, 1.0, 1.0],
}


def test_hand_computed_three_users() -> None:
    got = accuracy(RECS, TRUTH)
    for name, expected in EXPECTED.items():
        np.testing.assert_allclose(got[name][:3], expected, err_msg=name)
        assert np.isnan(got[name][3]), name
        mean, n = mean_over_users(got[name])
        assert n == 3 and mean == pytest.approx(np.mean(expected)), name


def test_judge_marks_hits_and_counts_distinct_relevant() -> None:
    judged = judge(RECS, [*TRUTH[:3], arr(4, 4)])
    np.testing.assert_array_equal(judged.hits, [[0, 1, 1], [1, 0, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(judged.n_relevant, [3, 1, 5, 1])  # duplicate 4 once
    np.testing.assert_array_equal(judged.ideal, [3, 1, 3, 1])


def test_perfect_lists_score_one() -> None:
    truth = [arr(4, 1, 6, 9), arr(2, 3, 5), arr(7, 0, 8)]
    recs = np.array([[1, 4, 6], [5, 3, 2], [8, 7, 0]], dtype=np.int32)
    for name, values in accuracy(recs, truth).items():
        np.testing.assert_allclose(values, 1.0, err_msg=name)


def test_empty_lists_score_zero() -> None:
    recs = np.full((2, 5), -1, dtype=np.int32)
    for name, values in accuracy(recs, [arr(1, 2), arr(3)]).items():
        np.testing.assert_array_equal(values, 0.0, err_msg=name)


def test_padding_is_never_a_hit_even_next_to_item_zero() -> None:
    # keys are user * span + item; padding of user 1 would alias user 0's last item (9)
    recs = np.array([[0, -1], [-1, -1]], dtype=np.int32)
    got = accuracy(recs, [arr(0, 9), arr(9)])
    np.testing.assert_allclose(got["hit_rate"], [1.0, 0.0])
    np.testing.assert_allclose(got["precision"], [0.5, 0.0])


def test_cutoff_truncates_and_pads() -> None:
    recs = np.array([[3, 1, 2]], dtype=np.int32)
    at1 = accuracy(recs, [arr(1, 2)], k=1)
    assert at1["hit_rate"][0] == 0.0 and at1["recall"][0] == 0.0
    at5 = accuracy(recs, [arr(1, 2)], k=5)  # two empty slots are misses for precision
    assert at5["precision"][0] == pytest.approx(2 / 5)
    assert at5["recall"][0] == 1.0
    assert at5["ndcg"][0] == pytest.approx((D2 + D3) / (1 + D2))


def test_bad_inputs_raise() -> None:
    with pytest.raises(EvalError, match="one per user"):
        judge(RECS, TRUTH[:2])
    with pytest.raises(EvalError, match="k must be"):
        judge(RECS, TRUTH, k=0)
    with pytest.raises(EvalError, match="negative"):
        judge(RECS[:1], [arr(-3)])


def test_mean_over_no_users_is_nan() -> None:
    mean, n = mean_over_users(np.array([np.nan, np.nan]))
    assert n == 0 and math.isnan(mean)


def test_catalog_measures() -> None:
    # users x items: item 0 seen by 3 users, item 1 by 1, item 2 by none, item 3 by 2
    matrix = sp.csr_matrix(np.array([[1, 0, 0, 2], [3, 0, 0, 0], [1, 5, 0, 1], [0, 0, 0, 0]],
                                    dtype=np.float32))
    counts = item_user_counts(matrix)
    np.testing.assert_array_equal(counts, [3, 1, 0, 2])
    # ranks ascending: 0 -> 1, 1 -> 2, 2 -> 3, 3 -> 4; percentile = (rank - 1) / 3
    np.testing.assert_allclose(popularity_percentile(counts), [1.0, 1 / 3, 0.0, 2 / 3])
    np.testing.assert_allclose(popularity_percentile(np.array([5, 5, 1])), [0.75, 0.75, 0.0])
    # -log2(count / 4 users); the unseen item counts as one user's
    np.testing.assert_allclose(self_information(counts, 4), [math.log2(4 / 3), 2, 2, 1])
    recs = np.array([[0, 1, -1], [-1, -1, -1], [1, 3, 1]], dtype=np.int32)
    assert coverage(recs, 4) == 0.75
    values = mean_item_value(recs, np.array([0.0, 2.0, 4.0, 1.0]))
    np.testing.assert_allclose(values, [1.0, np.nan, 5 / 3])


# -- slices -----------------------------------------------------------------------------------

def assert_partitions(slices: list, n_users: int) -> None:
    families = {s.family for s in slices}
    for family in families:
        members = sum(s.mask.astype(int) for s in slices if s.family == family)
        np.testing.assert_array_equal(members, np.ones(n_users), err_msg=family)


def test_user_slices_partition_every_family() -> None:
    profiles = Profiles.from_records([
        {"user_id": 10, "age": 15, "gender": "F", "occupation": "student"},
        {"user_id": 11, "age": 30, "gender": "M", "occupation": "writer"},
        {"user_id": 12, "age": None, "gender": "x"},
        {"user_id": 13, "age": 200, "gender": "M"},
        {"user_id": 15, "age": 18, "gender": "F"},  # edges are lower-inclusive
        {"user_id": 16, "age": 65, "gender": "F"},
    ])
    ids = np.array([10, 11, 12, 13, 14, 15, 16], dtype=np.int64)  # 14 has no profile
    new = np.array([True, False, False, True, False, False, False])
    slices = user_slices(ids, new, profiles, np.array([0, 3, 60, 0, 20, 5, 5]))
    assert {s.family for s in slices} == {"cohort", "age", "gender", "activity"}
    assert_partitions(slices, len(ids))
    by = {(s.family, s.name): np.flatnonzero(s.mask).tolist() for s in slices}
    assert by["cohort", "new"] == [0, 3] and by["cohort", "established"] == [1, 2, 4, 5, 6]
    assert by["age", "<18"] == [0] and by["age", "25-34"] == [1]
    assert by["age", "18-24"] == [5] and by["age", "65+"] == [6]
    assert by["age", UNKNOWN] == [2, 3, 4]  # missing, absurd, no profile
    assert by["gender", "F"] == [0, 5, 6] and by["gender", "M"] == [1, 3]
    assert by["gender", "?"] == [2, 4]
    assert by["activity", "0"] == [0, 3] and by["activity", "1-4"] == [1]
    assert by["activity", "20-49"] == [4] and by["activity", "50+"] == [2]
    assert [s.name for s in slices if s.family == "age"] == [*AGE_GROUPS, UNKNOWN]
    assert [s.name for s in slices if s.family == "gender"] == list(GENDERS)


def test_demographics_without_any_profiles() -> None:
    slices = demographic_slices(np.array([1, 2], dtype=np.int64), Profiles.empty())
    assert_partitions(slices, 2)
    assert [s.name for s in slices if s.mask.all()] == [UNKNOWN, "?"]


def test_activity_bin_edges() -> None:
    counts = np.array([0, 1, 4, 5, 19, 20, 49, 50, 1000])
    slices = activity_slices(counts)
    names = [next(s.name for s in slices if s.mask[i]) for i in range(len(counts))]
    assert names == ["0", "1-4", "1-4", "5-19", "5-19", "20-49", "20-49", "50+", "50+"]
    assert [s.name for s in slices] == list(ACTIVITY_LABELS)


def test_slice_means_skip_nan_and_count_users() -> None:
    slices = cohort_slices(np.array([True, True, False, False, False]))
    per_user = {"ndcg": np.array([0.2, np.nan, 0.5, 0.7, 0.0])}
    new, old = slice_means(slices, per_user)
    assert (new.users, new.evaluated["ndcg"], new.means["ndcg"]) == (2, 1, 0.2)
    assert (old.users, old.evaluated["ndcg"]) == (3, 3)
    assert old.means["ndcg"] == pytest.approx(0.4)
    empty = slice_means(slices, {"ndcg": np.array([np.nan] * 2 + [1.0] * 3)})[0]
    assert empty.evaluated["ndcg"] == 0 and empty.to_dict()["means"]["ndcg"] is None


def test_head_is_the_most_popular_share_ties_to_lower_index() -> None:
    counts = np.array([10, 0, 5, 5, 1])
    np.testing.assert_array_equal(head_items(counts), [1, 0, 0, 0, 0])  # ceil(0.2 * 5) = 1
    np.testing.assert_array_equal(head_items(counts, 0.4), [1, 0, 1, 0, 0])
    assert head_items(np.arange(11)).sum() == 3  # ceil(2.2)
    with pytest.raises(EvalError):
        head_items(counts, 1.5)


def test_long_tail_metrics_ignore_head_items() -> None:
    head = np.array([True, True, False, False, False, False])
    recs = np.array([[0, 3, 1], [0, 1, 2], [5, 2, -1]], dtype=np.int32)
    truth = [arr(0, 3), arr(0, 1), arr(1, 2, 4, 5)]
    got = long_tail_metrics(recs, truth, head)
    # user 0: tail truth {3}, hit at rank 2; user 1: no tail truth; user 2: tail {2, 4, 5},
    # two hits, m = min(3, 3)
    np.testing.assert_allclose(got["tail_recall"], [1.0, np.nan, 2 / 3])
    np.testing.assert_allclose(got["tail_hit_rate"], [1.0, np.nan, 1.0])


def test_a_slice_mean_has_its_normal_interval() -> None:
    from offline_eval.slices import Z95, mean_interval

    values = np.array([0.0, 1.0, 0.0, 1.0, np.nan])
    lo, hi = mean_interval(values)
    half = Z95 * np.std([0, 1, 0, 1], ddof=1) / 2
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    assert all(np.isnan(mean_interval(np.array([0.3, np.nan]))))
    wide = mean_interval(np.tile([0.0, 1.0], 10))
    narrow = mean_interval(np.tile([0.0, 1.0], 1000))
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 5  # ~1/sqrt(n)
