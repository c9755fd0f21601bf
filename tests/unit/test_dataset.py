"""The dataset builder: per-(user, movie) aggregation, confidence, runtimes, the TrainSet
layout, and reading through a real event store. Small hand-built logs whose right answer
follows from the rules in ``recommender/dataset.py``'s docstring."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from movierec.wire import Account, Rate, Recommendation, Watch
from recommender.confidence import ConfidenceError, ConfidenceParams, confidence
from recommender.dataset import (
    DatasetError,
    _dense_codes,
    _groups,
    aggregate,
    build_trainset,
    build_trainset_with_runtimes,
    item_runtimes,
    read_events,
)
from stores.event_columns import SCHEMA, EventColumns, to_frame
from stores.event_store import EventStore

T0 = datetime(2024, 3, 1, 12, 0, 0)
DAY_S = 86_400.0


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def table_of(events: list, partition: int = 0, first_offset: int = 0) -> pa.Table:
    columns = EventColumns()
    for offset, event in enumerate(events, start=first_offset):
        columns.add(event, partition, offset)
    return columns.to_table()


def ms(when: datetime) -> int:
    return int(np.datetime64(when, "ms").astype(np.int64))


def same_trainset(a, b) -> None:
    assert a.matrix.shape == b.matrix.shape
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(a.matrix, name), getattr(b.matrix, name))
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    assert list(a.item_ids) == list(b.item_ids)
    np.testing.assert_array_equal(a.last_time, b.last_time)


def mixed_log(seed: int = 7) -> list:
    """Sessions and ratings of 30 users over 12 movies, in time order."""
    rng = np.random.default_rng(seed)
    events = []
    for k in range(200):
        user, movie = int(rng.integers(1, 31)), f"movie+{int(rng.integers(12))}+2001"
        if rng.random() < 0.3:
            events.append(Rate(at(k), user, movie, int(rng.integers(1, 6))))
        else:
            events += [Watch(at(k) + timedelta(seconds=m), user, movie, m)
                       for m in range(int(rng.integers(1, 40)))]
    return events


# -- aggregation --------------------------------------------------------------------------


def test_aggregate_folds_max_minute_latest_rating_and_latest_time():
    events = [
        *(Watch(at(m), 7, "b+2001", m) for m in range(10)),
        *(Watch(at(100 + m), 7, "b+2001", m) for m in range(4)),  # a rewatch: later, not further
        Rate(at(50), 7, "b+2001", 2),
        Rate(at(20), 7, "b+2001", 4),  # a later row, an earlier time: loses to the 2
        Rate(at(30), 7, "a+1999", 3),
        Rate(at(30), 7, "a+1999", 5),  # same instant: the higher score wins
        Rate(at(30), 7, "a+1999", 4),
        Watch(at(5), 3, "b+2001", 0),
        Recommendation(at(200), 7, "s:8082", 200, ("a+1999",), "", 30),  # ignored
        Account(at(300), 9),  # ignored
    ]
    found = aggregate(table_of(events))
    assert list(found.user_ids) == [3, 7] and list(found.item_ids) == ["a+1999", "b+2001"]
    pairs = list(zip(found.user_ids[found.user], found.item_ids[found.item], strict=True))
    assert pairs == [(3, "b+2001"), (7, "a+1999"), (7, "b+2001")]
    assert list(found.max_minute) == [0, -1, 9]
    assert list(found.rating) == [-1, 5, 2]
    assert list(found.last_ms) == [ms(at(5)), ms(at(30)), ms(at(103))]
    assert (found.user.dtype, found.item.dtype, found.max_minute.dtype, found.rating.dtype) == (
        np.int32, np.int32, np.int16, np.int8)  # fmt: skip


def test_duplicated_and_reordered_rows_give_the_identical_trainset():
    log = table_of(mixed_log())
    doubled = pa.concat_tables([log, log])
    shuffled = doubled.take(np.random.default_rng(1).permutation(doubled.num_rows))
    as_of = at(400)
    once = build_trainset(log, as_of=as_of)
    assert once.matrix.nnz > 50 and once.n_items == 12
    same_trainset(build_trainset(shuffled, as_of=as_of), once)


def test_a_pandas_frame_gives_the_same_trainset_as_arrow():
    log = table_of(mixed_log(3))
    same_trainset(build_trainset(to_frame(log), as_of=at(400)), build_trainset(log, as_of=at(400)))


def test_groups_and_dense_codes_on_both_paths():
    rng = np.random.default_rng(5)
    small = rng.integers(0, 50, 1000)  # packed value sort
    huge = rng.integers(0, 8, 1000) + (1 << 62)  # too wide to pack: stable argsort
    for keys in (small, huge):
        order, distinct, starts = _groups(keys)
        np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
        expect_distinct, expect_starts = np.unique(np.sort(keys), return_index=True)
        np.testing.assert_array_equal(distinct, expect_distinct)
        np.testing.assert_array_equal(starts, expect_starts)
    for values in (small + 10, rng.integers(0, 10**12, 1000)):  # lookup table / sort
        uniques, codes = _dense_codes(values)
        expect_uniques, expect_codes = np.unique(values, return_inverse=True)
        np.testing.assert_array_equal(uniques, expect_uniques)
        np.testing.assert_array_equal(codes, expect_codes)


# -- confidence ---------------------------------------------------------------------------


def conf(max_minute, rating=-1, age_days=0.0, runtime=100.0, **kw) -> np.ndarray:
    """``confidence`` over broadcast scalars or lists."""
    m, r, a, t = np.broadcast_arrays(np.asarray(max_minute), np.asarray(rating), np.asarray(age_days, float),
                                     np.asarray(runtime, float))  # fmt: skip
    return confidence(m.astype(np.int16), r.astype(np.int8), a * DAY_S, t, **kw)


def test_confidence_terms_at_known_points():
    # watched share of the runtime, capped at the whole film; minutes are 0-based
    np.testing.assert_allclose(conf([0, 24, 49, 99, 150]), [0.01, 0.25, 0.5, 1.0, 1.0], rtol=1e-6)
    # 1 star -> 0.25, the middle -> 1.0, the top -> 1.75, linear between
    np.testing.assert_allclose(conf(99, [1, 2, 3, 4, 5]), [0.25, 0.625, 1.0, 1.375, 1.75], rtol=1e-6)
    np.testing.assert_allclose(conf(99, [1, 10], rating_scale=10), [0.25, 1.75], rtol=1e-6)
    # half-life of 30 days, floor of 0.1
    np.testing.assert_allclose(conf(99, -1, [0, 30, 60, 1000]), [1.0, 0.5, 0.25, 0.1], rtol=1e-6)
    # rated, never watched: half a viewing times the rating factor
    np.testing.assert_allclose(conf(-1, 5), [0.5 * 1.75], rtol=1e-6)
    np.testing.assert_allclose(conf(99, -1, 1000, params=ConfidenceParams(half_life_days=math.inf)), [1.0])


def test_confidence_is_positive_float32_and_monotone_in_each_term():
    grid = np.meshgrid(np.arange(-1, 130, 7), np.r_[-1, 1:11], np.r_[0, 1, 10, 45, 400.0], indexing="ij")
    values = conf(*grid, rating_scale=10)
    assert values.dtype == np.float32 and (values > 0).all()
    watched = values[1:]  # max_minute >= 0
    assert (np.diff(watched, axis=0) >= 0).all() and (np.diff(watched[:, 1:], axis=1) > 0).all()
    assert (np.diff(values, axis=2) <= 0).all()
    assert (np.diff(values[:5, :, :3], axis=2) < 0).all()  # strictly, until the floor


def test_runtime_estimate_and_given_runtimes():
    lengths = np.arange(10, 201, 10)  # minutes watched by 20 users
    events = [Watch(at(0), 100 + k, "long+2000", int(n) - 1) for k, n in enumerate(lengths)]
    events += [Watch(at(0), 1, "short+2000", 2), Watch(at(0), 2, "short+2000", 3),
               Rate(at(0), 1, "rated+2000", 4)]
    found = aggregate(table_of(events))
    assert list(found.item_ids) == ["long+2000", "rated+2000", "short+2000"]
    expected = np.quantile(lengths, 0.95, method="inverted_cdf")  # the 19th of 20 lengths
    np.testing.assert_array_equal(item_runtimes(found), [expected, 20, 20])  # floor of 20 minutes
    given = {"long+2000": 120, "short+2000": "n/a", "rated+2000": 0, "other+1999": 90}
    np.testing.assert_array_equal(item_runtimes(found, given), [120, 20, 20])  # bad values ignored
    np.testing.assert_array_equal(item_runtimes(found, {"short+2000": "12.5"}), [expected, 20, 12.5])
    # and the runtime reaches the matrix: a 60-minute viewing of a 120-minute film
    train = build_trainset(table_of(events), as_of=at(0) + timedelta(seconds=1), runtimes=given)
    row, col = np.searchsorted(train.user_ids, 105), list(train.item_ids).index("long+2000")
    assert train.matrix[row, col] == pytest.approx(0.5, rel=1e-4)


def test_the_runtimes_of_a_trainset_are_those_its_confidences_used():
    """``build_trainset_with_runtimes`` gives the same TrainSet and, per item in its order,
    the runtimes it used (after the filters: the dropped rows do not count)."""
    log = table_of(mixed_log())
    given = {"movie+3+2001": 77}
    train, runtime = build_trainset_with_runtimes(log, as_of=at(400), runtimes=given)
    same_trainset(train, build_trainset(log, as_of=at(400), runtimes=given))
    assert runtime.dtype == np.float32 and runtime.shape == (train.n_items,)
    np.testing.assert_array_equal(runtime, item_runtimes(aggregate(log), given))
    assert runtime[list(train.item_ids).index("movie+3+2001")] == 77
    few, few_runtime = build_trainset_with_runtimes(log, as_of=at(400), runtimes=given,
                                                    min_item_users=13)
    assert 0 < few.n_items < train.n_items  # an item keeps all its users: the same runtime
    kept = [list(train.item_ids).index(m) for m in few.item_ids]
    np.testing.assert_array_equal(few_runtime, runtime[kept])


# -- the training set ---------------------------------------------------------------------


def test_trainset_entries_follow_the_formula_and_times():
    events = [Watch(at(0), 1, "m+2000", 99), Watch(at(0), 2, "m+2000", 99), Rate(at(0), 2, "m+2000", 1)]
    as_of = at(0) + timedelta(days=30)
    train = build_trainset(table_of(events), as_of=as_of, runtimes={"m+2000": 100})
    np.testing.assert_allclose(train.matrix.toarray(), [[0.5], [0.5 * 0.25]], rtol=1e-5)
    np.testing.assert_allclose(train.last_time, [30 * DAY_S, 30 * DAY_S])
    assert train.as_of == as_of and train.matrix.dtype == np.float32 and train.last_time.dtype == np.float64


def test_as_of_drops_rows_at_and_after_it():
    cut = at(10)
    events = [
        Watch(at(0), 1, "m+2000", 5),
        Rate(cut - timedelta(milliseconds=1), 1, "m+2000", 2),
        Rate(cut, 1, "m+2000", 5),  # at the cut: the future
        Watch(cut, 2, "m+2000", 50),  # a user seen only from the cut on
        Watch(at(20), 1, "later+2000", 3),
    ]
    train = build_trainset(table_of(events), as_of=cut)
    assert list(train.user_ids) == [1] and list(train.item_ids) == ["m+2000"]
    assert train.matrix.nnz == 1 and train.matrix[0, 0] < 1.0  # rated 2, not 5
    np.testing.assert_allclose(train.last_time, [0.001])
    # a cut between milliseconds: the event stamped at the millisecond before it is in
    later = build_trainset(table_of(events), as_of=cut + timedelta(microseconds=500))
    assert list(later.user_ids) == [1, 2]
    np.testing.assert_allclose(later.last_time, [0.0005, 0.0005])
    assert later.matrix[0, 0] > train.matrix[0, 0]  # now rated 5


def test_ids_ascending_and_the_same_rows_give_the_same_matrix():
    users = [10**12, 5, 42]  # a sparse id range too
    movies = ["zeta+2000", "alpha+1999", "émile+2001", "b++c+1971"]
    events = [Watch(at(k), users[k % 3], movies[k % 4], k) for k in range(12)]
    train = build_trainset(table_of(events), as_of=at(100))
    assert list(train.user_ids) == sorted(users) and train.user_ids.dtype == np.int64
    assert list(train.item_ids) == sorted(movies) and train.item_ids.dtype == object
    coo = train.matrix.tocoo()
    stored = {(int(train.user_ids[r]), train.item_ids[c]) for r, c in zip(coo.row, coo.col, strict=True)}
    assert stored == {(users[k % 3], movies[k % 4]) for k in range(12)}
    assert train.matrix.has_canonical_format
    reversed_rows = table_of(events[::-1])
    same_trainset(build_trainset(reversed_rows, as_of=at(100)), train)


def test_empty_input_gives_an_empty_trainset():
    only_other_kinds = table_of([Account(at(0), 1), Recommendation(at(1), 1, "s:1", 0, (), "down", 600)])
    for events in (SCHEMA.empty_table(), only_other_kinds, table_of([Watch(at(5), 1, "m+2000", 0)])):
        train = build_trainset(events, as_of=at(2))
        assert train.matrix.shape == (0, 0) and train.matrix.nnz == 0 and train.matrix.dtype == np.float32
        assert train.user_ids.dtype == np.int64 and train.item_ids.dtype == object
        assert len(train.user_ids) == len(train.item_ids) == len(train.last_time) == 0
    assert len(aggregate(SCHEMA.empty_table())) == 0


def test_min_interaction_filters_apply_items_then_users_once():
    pairs = [(1, "p+2000"), (2, "p+2000"), (3, "p+2000"), (1, "q+2000"), (2, "q+2000"), (3, "r+2000")]
    events = [Watch(at(k), u, m, 30) for k, (u, m) in enumerate(pairs)]
    everything = build_trainset(table_of(events), as_of=at(50))
    assert everything.matrix.nnz == 6 and everything.n_users == 3 and everything.n_items == 3
    train = build_trainset(table_of(events), as_of=at(50), min_item_users=2, min_user_items=2)
    assert list(train.user_ids) == [1, 2] and list(train.item_ids) == ["p+2000", "q+2000"]
    assert train.matrix.nnz == 4 and len(train.last_time) == 4


def test_bad_inputs_are_refused():
    log = table_of(mixed_log())
    with pytest.raises(DatasetError, match="lack column"):
        build_trainset(log.drop_columns(["minute"]), as_of=at(10))
    with pytest.raises(DatasetError, match="aware"):
        build_trainset(log, as_of=datetime(2024, 3, 2, tzinfo=UTC))
    with pytest.raises(DatasetError, match="above the rating scale"):
        build_trainset(table_of([Rate(at(0), 1, "m+2000", 7)]), as_of=at(1), rating_scale=5)
    with pytest.raises(ConfidenceError, match="recency_floor"):
        ConfidenceParams(recency_floor=0)
    with pytest.raises(DatasetError, match="DataFrame"):
        aggregate([Watch(at(0), 1, "m+2000", 0)])  # type: ignore[arg-type]
    no_minute = log.set_column(4, SCHEMA.field("minute"), pa.nulls(log.num_rows, pa.int16()))
    with pytest.raises(DatasetError, match="minute"):
        aggregate(no_minute)


# -- through the event store ----------------------------------------------------------------


def test_read_events_from_a_store_snapshot_builds_the_trainset(tmp_path):
    store = EventStore(tmp_path / "store", "movielog15")
    events = [Account(at(0), 1), *mixed_log(11),
              Recommendation(at(300), 4, "s:8082", 200, ("movie+1+2001",), "", 12)]  # fmt: skip
    store.append(table_of(events[:150]))
    store.append(table_of(events[100:], first_offset=100))  # redelivers offsets 100..149
    snap = store.snapshot()
    # after the snapshot
    store.append(table_of([Watch(at(1), 999, "late+2000", 80)], first_offset=len(events)))
    table = read_events(store, snap)
    assert table.column_names == ["time", "kind", "user_id", "movie_id", "minute", "rating"]
    assert pa.types.is_dictionary(table["movie_id"].type)
    assert set(table["kind"].cast(pa.string()).to_pylist()) == {"watch", "rate"}
    assert table.num_rows == sum(isinstance(e, Watch | Rate) for e in events)
    train = build_trainset(table, as_of=at(1000))
    assert 999 not in train.user_ids and "late+2000" not in train.item_ids
    same_trainset(train, build_trainset(table_of(events), as_of=at(1000)))
    window = read_events(store, snap, start=at(50), end=at(60))
    times = window["time"].to_pylist()
    assert min(times) >= at(50) and max(times) < at(60) and len(times) > 0
