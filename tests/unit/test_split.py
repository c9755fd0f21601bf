"""The temporal split and the test-period truth: nothing after the cut reaches the train
side, and the truth holds exactly the relevant, unseen, known items of the test period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from movierec.wire import Rate, Watch
from offline_eval.ranking_metrics import EvalError
from offline_eval.split import RelevanceParams, Truth, build_truth, temporal_split
from recommender.dataset import build_trainset
from stores.event_columns import EventColumns, to_frame

CUT = datetime(2024, 3, 10)


def at(hours: float) -> datetime:
    """Hours from the cut (negative: the training period)."""
    return CUT + timedelta(hours=hours)


def table_of(events: list) -> pa.Table:
    columns = EventColumns()
    for offset, event in enumerate(events):
        columns.add(event, 0, offset)
    return columns.to_table()


def watched(user: int, movie: str, minutes: int, hours: float) -> Watch:
    """The last line of a session that watched ``minutes`` minutes."""
    return Watch(at(hours), user, movie, minutes - 1)


def split_world(events: list, **truth_kw) -> tuple:
    train_rows, test_rows = temporal_split(table_of(events), CUT)
    train = build_trainset(train_rows, as_of=CUT)
    return train, build_truth(train, test_rows, **truth_kw)


def items_of(truth: Truth, train, user: int) -> list[str]:
    row = list(truth.user_ids).index(user)
    return [train.item_ids[j] for j in truth.items[row]]


# -- temporal_split -------------------------------------------------------------------------


def test_split_is_strict_before_the_cut_and_half_open_after():
    events = [watched(1, "a+2000", 30, h) for h in (-1, -0.001, 0, 0.5, 1, 2)]
    table = table_of(events)
    train, test = temporal_split(table, CUT)
    assert train["time"].to_pylist() == [at(-1), CUT - timedelta(seconds=3.6)]
    assert test["time"].to_pylist() == [CUT, at(0.5), at(1), at(2)]
    _, window = temporal_split(table, CUT, end=at(1))
    assert window["time"].to_pylist() == [CUT, at(0.5)]
    frame_train, frame_test = temporal_split(to_frame(table), CUT, end=at(1))
    assert list(frame_train["time"]) == [at(-1), CUT - timedelta(seconds=3.6)]
    assert list(frame_test["time"]) == [CUT, at(0.5)] and list(frame_test.index) == [0, 1]
    with pytest.raises(EvalError, match="empty"):
        temporal_split(table, CUT, end=CUT)
    with pytest.raises(EvalError, match="naive"):
        temporal_split(table, CUT.replace(tzinfo=UTC))


# -- leakage ----------------------------------------------------------------------------------


def test_a_planted_future_event_reaches_only_the_truth():
    events = [
        watched(1, "old+1990", 90, -5),
        watched(2, "old+1990", 90, -4),
        watched(2, "hit+2024", 90, -3),
        watched(3, "hit+2024", 90, 2),  # planted: after the cut
        watched(1, "hit+2024", 90, 3),  # planted: after the cut
        watched(2, "fresh+2024", 90, 1),  # planted: a movie first seen after the cut
    ]
    train, truth = split_world(events)
    everything = build_trainset(table_of(events), as_of=CUT)  # the builder drops them too
    for t in (train, everything):
        assert list(t.user_ids) == [1, 2] and list(t.item_ids) == ["hit+2024", "old+1990"]
        popularity = dict(zip(t.item_ids, t.matrix.getnnz(axis=0), strict=True))
        assert popularity == {"hit+2024": 1, "old+1990": 2}
    assert train.matrix.nnz == everything.matrix.nnz == 3
    assert list(truth.user_ids) == [1, 3]
    assert items_of(truth, train, 1) == ["hit+2024"] and items_of(truth, train, 3) == ["hit+2024"]
    assert (truth.unknown_item_pairs, truth.unknown_items) == (1, 1)  # fresh+2024


def test_test_rows_from_before_the_train_cut_are_refused():
    events = [watched(1, "a+2000", 90, -2), watched(2, "a+2000", 90, 1)]
    train = build_trainset(table_of(events), as_of=CUT)
    with pytest.raises(EvalError, match="leak"):
        build_truth(train, table_of(events))


# -- the truth ----------------------------------------------------------------------------------


def test_items_seen_in_training_are_left_out_and_counted():
    events = [
        watched(1, "a+2000", 90, -2), watched(1, "b+2000", 90, -2), watched(2, "c+2000", 90, -2),
        watched(1, "a+2000", 90, 1),  # a rewatch: seen, not truth
        watched(1, "c+2000", 90, 1),  # new to user 1: truth
        Rate(at(2), 1, "b+2000", 5),  # rated after the cut, but seen before: not truth
    ]  # fmt: skip
    train, truth = split_world(events)
    assert list(truth.user_ids) == [1] and items_of(truth, train, 1) == ["c+2000"]
    assert truth.seen_pairs == 2 and truth.unknown_item_pairs == 0
    assert truth.items[0].dtype == np.int32


def test_new_users_are_flagged_and_known_users_keep_their_row():
    events = [watched(5, "a+2000", 90, -2), watched(9, "b+2000", 90, -2),
              watched(9, "a+2000", 90, 1), watched(7, "b+2000", 90, 1),
              watched(11, "a+2000", 90, 2)]  # fmt: skip
    train, truth = split_world(events)
    assert list(truth.user_ids) == [7, 9, 11]
    assert list(truth.new_user) == [True, False, True]
    assert list(truth.rows) == [-1, list(train.user_ids).index(9), -1]
    assert truth.user_ids.dtype == np.int64 and len(truth) == 3


def test_unknown_catalog_movies_are_counted_only_when_relevant():
    events = [watched(1, "a+2000", 90, -2),
              watched(1, "new+2024", 60, 1), watched(2, "new+2024", 45, 1),
              watched(3, "new+2024", 2, 1), watched(3, "other+2024", 60, 1),  # 2 minutes: not relevant
              watched(2, "a+2000", 90, 1)]  # fmt: skip
    train, truth = split_world(events)
    assert (truth.unknown_item_pairs, truth.unknown_items) == (3, 2)
    assert list(truth.user_ids) == [2]  # users 1 and 3 have nothing left that the catalog knows


def test_relevance_by_minutes_share_and_rating():
    movies = ["long+2000", "short+2000", "liked+2000", "hated+2000", "meh+2000"]
    before = [watched(100 + k, m, 1, -2) for k, m in enumerate(movies)]  # puts them in the catalog
    after = [
        watched(1, "long+2000", 20, 1),  # 20 minutes: always enough
        watched(2, "long+2000", 19, 1),  # 19 of 120: neither rule
        watched(1, "short+2000", 10, 1),  # 10 of 40 minutes: a quarter of a short film
        watched(2, "short+2000", 9, 1),
        Rate(at(1), 1, "liked+2000", 4),  # rated 4 of 5, never watched
        watched(2, "hated+2000", 120, 1), Rate(at(2), 2, "hated+2000", 1),  # the rating overrides
        watched(1, "meh+2000", 120, 1), Rate(at(2), 1, "meh+2000", 3),
    ]  # fmt: skip
    runtimes = {"long+2000": 120, "short+2000": 40}
    # The thresholds this case was written for (the defaults are stricter: 60 min / 50%).
    loose = RelevanceParams(min_minutes=20, min_fraction=0.25)
    train, truth = split_world(before + after, runtimes=runtimes, params=loose)
    assert list(truth.user_ids) == [1]
    assert items_of(truth, train, 1) == ["liked+2000", "long+2000", "short+2000"]
    ten = [*before, Rate(at(1), 1, "liked+2000", 8), Rate(at(1), 2, "liked+2000", 7)]
    train, truth = split_world(ten, rating_scale=10)
    assert list(truth.user_ids) == [1]
    train, stricter = split_world(before + after, runtimes=runtimes,
                                  params=RelevanceParams(min_minutes=30, min_fraction=0.25))
    assert items_of(stricter, train, 1) == ["liked+2000", "short+2000"]


def test_without_runtimes_the_runtime_is_estimated_from_the_test_rows():
    after = [watched(u, "short+2000", 60, 1) for u in range(10, 30)]  # most reach 60: a 60-minute film
    after += [watched(1, "short+2000", 16, 1), watched(2, "short+2000", 14, 1)]  # a quarter is 15
    before = [watched(100, "short+2000", 1, -1)]
    _, truth = split_world(before + after, params=RelevanceParams(min_minutes=20, min_fraction=0.25))
    assert 1 in truth.user_ids and 2 not in truth.user_ids and len(truth) == 21


def test_an_empty_test_period_gives_an_empty_truth():
    train, truth = split_world([watched(1, "a+2000", 90, -2)])
    assert len(truth) == 0 and truth.items == () and truth.user_ids.dtype == np.int64
    assert (truth.unknown_item_pairs, truth.unknown_items, truth.seen_pairs) == (0, 0, 0)
