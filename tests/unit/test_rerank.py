"""``recommender.rerank``: the calibrated re-ranking core on small worlds whose answers
are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from recommender import rerank


def flags_of(tail: list[int], old: list[int] = ()) -> np.ndarray:
    """Flags of 10 items: ``tail`` are long tail, ``old`` are older."""
    out = np.zeros((10, 2), dtype=bool)
    out[list(tail), rerank.TAIL] = True
    out[list(old), rerank.OLD] = True
    return out


HEAD, TAIL = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
FLAGS = flags_of(TAIL)
RANKED = np.array(HEAD + TAIL)   # the model likes every head film better


def test_item_flags_take_the_head_from_the_ranking_and_old_from_the_year():
    years = np.array([1990, 2005, np.nan, 1999, 2000, 1950, 2010, 2020, 1980, 2001], float)
    ranking = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])   # item 9 most popular
    flags = rerank.item_flags(ranking, years)
    # head: ceil(0.2 * 10) = 2 items, 9 and 8
    assert np.flatnonzero(~flags[:, rerank.TAIL]).tolist() == [8, 9]
    # before 2000 (unknown is not old, 2000 itself is not)
    assert np.flatnonzero(flags[:, rerank.OLD]).tolist() == [0, 3, 5, 8]


def test_release_year_reads_the_api_date_and_rejects_junk():
    assert rerank.release_year({"release_date": "1994-09-23"}) == 1994
    assert rerank.release_year({"release_date": "unknown"}) is None
    assert rerank.release_year({}) is None and rerank.release_year(None) is None


def test_user_target_is_the_confidence_weighted_share():
    target = rerank.user_target(np.array([0, 5]), np.array([3.0, 1.0]), flags_of([5], [0]))
    assert target.tolist() == pytest.approx([0.25, 0.75])
    assert rerank.user_target(np.array([], int), np.array([]), FLAGS).tolist() == [0.0, 0.0]


def test_no_weight_on_calibration_keeps_the_models_order():
    assert rerank.calibrate(RANKED, FLAGS, np.array([1.0, 0.0]), 4, lam=0.0).tolist() == HEAD[:4]


def test_a_head_only_history_keeps_the_head_list():
    # target 0 tail: any tail film only adds divergence, so the model's head order stays
    out = rerank.calibrate(RANKED, FLAGS, np.array([0.0, 0.0]), 5)
    assert out.tolist() == HEAD


def test_a_tail_only_history_leads_with_tail_films_and_lam_sets_how_far():
    out = rerank.calibrate(RANKED, FLAGS, np.array([1.0, 0.0]), 5).tolist()
    # lam 0.5: the best tail film leads; the model's best head film keeps a place beside it
    # (its relevance 1 against 1/log2(8) for the third tail film outweighs the divergence)
    assert out == [5, 0, 6, 1, 7]
    # weighing calibration more, the list is all tail, in the model's order
    assert rerank.calibrate(RANKED, FLAGS, np.array([1.0, 0.0]), 5, lam=0.9).tolist() == TAIL


def test_a_mixed_history_gets_a_mixed_list_and_each_group_keeps_the_models_order():
    out = rerank.calibrate(RANKED, FLAGS, np.array([0.5, 0.0]), 4).tolist()
    tail_picks = [i for i in out if i in TAIL]
    head_picks = [i for i in out if i in HEAD]
    # the model's order within each group (a lower-ranked film never jumps its peer)
    assert tail_picks == sorted(tail_picks) and head_picks == sorted(head_picks)
    share = rerank.list_shares(np.array(out), FLAGS)[rerank.TAIL]
    plain = rerank.list_shares(RANKED[:4], FLAGS)[rerank.TAIL]
    assert plain == 0.0 and 0.2 < share <= 0.5
    more = rerank.calibrate(RANKED, FLAGS, np.array([0.5, 0.0]), 4, lam=0.8)
    assert abs(rerank.list_shares(more, FLAGS)[rerank.TAIL] - 0.5) < 0.1
    assert out[0] == 0   # the model's best film still leads


def test_both_attributes_are_calibrated_at_once():
    flags = flags_of(tail=[5, 6, 7, 8, 9], old=[1, 6])
    out = rerank.calibrate(RANKED, flags, np.array([0.0, 0.5]), 2).tolist()
    # no tail wanted, half old: the head's old film 1 joins the best film 0
    assert sorted(out) == [0, 1]


def test_short_candidate_lists_and_bad_weights():
    assert rerank.calibrate(np.array([3, 1]), FLAGS, np.array([0.5, 0.0]), 5).tolist() == [3, 1]
    assert rerank.calibrate(np.array([], int), FLAGS, np.array([0.5, 0.0]), 5).tolist() == []
    with pytest.raises(ValueError):
        rerank.calibrate(RANKED, FLAGS, np.array([0.5, 0.0]), 5, lam=1.5)


def test_list_shares_weigh_positions_like_exposure():
    share = rerank.list_shares(np.array([5, 0]), FLAGS)[rerank.TAIL]
    assert share == pytest.approx(1.0 / (1.0 + 1.0 / np.log2(3)))


def test_policies_name_their_weight_or_take_the_default():
    assert rerank.parse_policy("calibrated") == rerank.LAMBDA
    assert rerank.parse_policy("calibrated:0.8") == 0.8
    assert rerank.parse_policy("calibrated:1") == 1.0
    for bad in ("diverse", "calibrated:-0.1", "calibrated:nan", "calibrated:inf", "calibrated:"):
        with pytest.raises(ValueError):
            rerank.parse_policy(bad)


def test_the_head_of_a_ranking_is_its_first_fifth_rounded_up():
    assert rerank.head_of([f"m{i}" for i in range(11)]) == {"m0", "m1", "m2"}
    assert rerank.head_of([]) == set()
    flags = rerank.flags_from_head(np.array([2, 0]), np.array([np.nan] * 4))
    assert flags[:, rerank.TAIL].tolist() == [False, True, False, True]
    assert not flags[:, rerank.OLD].any()
