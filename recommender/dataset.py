"""From event-store rows to a ``TrainSet``: one entry per (user, movie), with a confidence.

Two steps, both pure and vectorised (40M rows run in seconds; nothing loops per row):

1. ``aggregate``: watch and rate rows (recommendation and account rows are ignored) fold
   into one ``Interactions`` entry per (user, movie): the highest minute watched, the
   latest rating by event time (a tie goes to the higher score, the same merge the
   consumer's Redis features use), and the time of the latest of those events. Every fold
   is a maximum, so duplicated or reordered rows give the same result.
2. ``build_trainset``: drops rows at or after ``as_of`` *before* aggregating (nothing from
   the future leaks into a feature), scores every entry with ``confidence``, and lays the
   entries out as a CSR matrix whose rows are user ids ascending and columns movie ids
   ascending, so the same rows always give the same matrix.

The confidence of an entry is ``recommender.confidence.confidence`` (its docstring has the
formula and why).

Runtimes: the movie API's where given and valid, else estimated from the rows
(``recommender.runtimes``, which also says how serving gets the same ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from movierec.errors import MovierecError
from recommender.confidence import ConfidenceParams, confidence
from recommender.models.base import TrainSet
from recommender.models.item_meta import ItemMeta
from recommender.models.profiles import Profiles
from recommender.runtimes import item_runtimes

if TYPE_CHECKING:
    from stores.event_store import EventStore, Snapshot

Events: TypeAlias = pa.Table | pd.DataFrame
"""Event rows: an Arrow table or a pandas frame with at least ``EVENT_COLUMNS``."""

EVENT_COLUMNS: tuple[str, ...] = ("time", "kind", "user_id", "movie_id", "minute", "rating")
"""The event-store columns the dataset needs."""

_KIND_CODES = pa.array(["watch", "rate"])  # code 0: watch, 1: rate; other kinds: -1
_EPOCH = datetime(1970, 1, 1)
_RATING_SHIFT = 128  # latest-rating key = ms * 128 + stars: one max picks time, then stars


class DatasetError(MovierecError):
    """Event rows cannot be turned into a training set (missing columns or values, a
    rating off the scale, an aware time, bad parameters)."""


@dataclass(frozen=True)
class Interactions:
    """One entry per (user, movie) with a watch or rate event, sorted by (user, item).

    - ``user_ids``: int64 (n_users,), ascending; ``item_ids``: str object (n_items,),
      ascending. Only ids with at least one entry.
    - ``user``, ``item``: int32 (n,), row into ``user_ids`` / ``item_ids``.
    - ``max_minute``: int16 (n,), highest 0-based minute watched, -1 if never watched.
    - ``rating``: int8 (n,), stars of the latest rating (tie: the higher), -1 if unrated.
    - ``last_ms``: int64 (n,), time of the latest watch or rate event, milliseconds since
      1970-01-01 in naive site-local time (the store's clock).
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user: np.ndarray
    item: np.ndarray
    max_minute: np.ndarray
    rating: np.ndarray
    last_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, keep: np.ndarray) -> Interactions:
        """The entries where ``keep`` (bool, (n,)) holds, ids no longer used dropped."""
        users, items = self.user[keep], self.item[keep]
        user_used, item_used = _used(users, len(self.user_ids)), _used(items, len(self.item_ids))
        return Interactions(
            self.user_ids[user_used], self.item_ids[item_used],
            _renumber(users, user_used), _renumber(items, item_used),
            self.max_minute[keep], self.rating[keep], self.last_ms[keep],
        )  # fmt: skip


def cut_ms(when: datetime) -> int:
    """The store time (ms) of the first millisecond at or after naive ``when``: an event
    stamped ``t`` ms is before ``when`` exactly when ``t < cut_ms(when)``."""
    if when.tzinfo is not None:
        raise DatasetError(f"{when} is aware; event times are naive site-local times")
    micros = (when - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


def event_ms(events: Events) -> np.ndarray:
    """The ``time`` column as int64 milliseconds (floored), whatever its unit."""
    table = _as_table(events, ("time",))
    return _ms(table["time"])


# -- aggregation --------------------------------------------------------------------------


def aggregate(events: Events) -> Interactions:
    """Fold watch and rate rows into one ``Interactions`` entry per (user, movie)."""
    return _aggregate(*_rows(events, None))


def _rows(events: Events, before_ms: int | None,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, pa.Array]:  # fmt: skip
    """The watch and rate rows (before ``before_ms`` if given) as numpy columns: user
    int64, item int32 (rank among ``movies``), ms int64, minute int16 (-1 on rate rows),
    rating int8 (-1 on watch rows), and ``movies`` (sorted unique ids, Arrow)."""
    table = _as_table(events, EVENT_COLUMNS)
    kind = _kind_codes(table["kind"])
    ms = _ms(table["time"])
    keep = kind >= 0
    if before_ms is not None:
        keep &= ms < before_ms
    table = table.select(["user_id", "movie_id", "minute", "rating"])
    if not keep.all():
        table, kind, ms = table.filter(pa.array(keep)), kind[keep], ms[keep]
    for name in ("user_id", "movie_id"):
        if table[name].null_count:
            raise DatasetError(f"{table[name].null_count} watch/rate row(s) without {name}")
    user = table["user_id"].to_numpy().astype(np.int64, copy=False)
    minute = pc.fill_null(table["minute"], -1).to_numpy().astype(np.int16)
    rating = pc.fill_null(table["rating"], -1).to_numpy().astype(np.int8)
    minute[kind != 0] = -1
    rating[kind != 1] = -1
    if (minute[kind == 0] < 0).any() or (rating[kind == 1] < 1).any():
        raise DatasetError("watch rows need a minute >= 0 and rate rows a rating >= 1")
    item, movies = _movie_codes(table["movie_id"])
    return user, item, ms, minute, rating, movies


def _aggregate(user: np.ndarray, item: np.ndarray, ms: np.ndarray, minute: np.ndarray,
               rating: np.ndarray, movies: pa.Array) -> Interactions:  # fmt: skip
    n_movies = len(movies)
    user_ids, user_code = _dense_codes(user)
    key = user_code * n_movies + item  # (user, movie) as one int64, ordered like the pair
    del user_code
    order, pairs, starts = _groups(key)
    if len(pairs) == 0:
        return _empty_interactions()
    max_minute = np.maximum.reduceat(minute[order], starts)
    last_ms = np.maximum.reduceat(ms[order], starts)
    del order
    stars = np.full(len(pairs), -1, dtype=np.int8)
    rated = np.flatnonzero(rating >= 0)  # the rate rows, a small share: grouped on their own
    if len(rated):
        r_order, r_pairs, r_starts = _groups(key[rated])
        stamp = (ms[rated] * _RATING_SHIFT + rating[rated])[r_order]
        stars[np.searchsorted(pairs, r_pairs)] = np.maximum.reduceat(stamp, r_starts) % _RATING_SHIFT
    users, items = (pairs // n_movies).astype(np.int32), (pairs % n_movies).astype(np.int32)
    used = _used(items, n_movies)
    item_ids = np.array(movies.filter(pa.array(used)).to_pylist(), dtype=object)
    return Interactions(user_ids, item_ids, users, _renumber(items, used), max_minute, stars, last_ms)


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by equal non-negative int64 ``keys``: (a stable sort order of the rows,
    the distinct keys ascending, the start of each key's run in that order).

    When key and row number fit together in 63 bits, they are packed into one int64 and
    sorted by value: numpy's value sort is SIMD-accelerated and about 6x faster than
    ``argsort`` on 40M keys here (1.0 s against 5.9 s).
    """
    n = len(keys)
    row_bits = max(1, (n - 1).bit_length())
    if n and int(keys.max()).bit_length() + row_bits <= 63:
        ordered = keys << row_bits
        ordered |= np.arange(n, dtype=np.int64)
        ordered.sort()
        order = ordered & ((1 << row_bits) - 1)
        ordered >>= row_bits
    else:
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
    first = np.empty(n, dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    return order, ordered[starts], starts


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique values, index of each value among them as int64)."""
    if len(values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    low = int(values.min())
    shifted = values - low
    span = int(shifted.max()) + 1
    if span <= max(4 * len(values), 1 << 20):  # a lookup table a few times the input at most
        present = np.zeros(span, dtype=bool)
        present[shifted] = True
        return np.flatnonzero(present) + low, (np.cumsum(present) - 1)[shifted]
    order, uniques, starts = _groups(shifted)
    codes = np.empty(len(values), dtype=np.int64)
    codes[order] = np.repeat(np.arange(len(starts)), np.diff(starts, append=len(values)))
    return uniques + low, codes


def _movie_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(rank of each row's movie id among the sorted unique ids, int32; those ids)."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    column = column.unify_dictionaries()
    if column.num_chunks == 0 or len(column) == 0:
        return np.zeros(0, np.int32), pa.array([], pa.string())
    dictionary = column.chunk(0).dictionary.cast(pa.string())
    movies = pc.unique(dictionary)
    movies = movies.take(pc.sort_indices(movies))  # byte order = code-point order = Python's
    rank = pc.index_in(dictionary, value_set=movies).to_numpy().astype(np.int32)
    codes = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in column.chunks])
    return rank[codes], movies


def _kind_codes(column: pa.ChunkedArray) -> np.ndarray:
    """int8 per row: 0 watch, 1 rate, -1 any other kind."""
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()
        if column.num_chunks == 0:
            return np.zeros(0, np.int8)
        values = column.chunk(0).dictionary.cast(pa.string())
        codes = pc.fill_null(pc.index_in(values, value_set=_KIND_CODES), -1).to_numpy().astype(np.int8)
        indices = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in column.chunks])
        return codes[indices]
    codes = pc.index_in(column.cast(pa.string()), value_set=_KIND_CODES)
    return pc.fill_null(codes, -1).to_numpy().astype(np.int8)


def _ms(column: pa.ChunkedArray) -> np.ndarray:
    if not pa.types.is_timestamp(column.type) or column.type.tz is not None:
        raise DatasetError(f"'time' must be a naive timestamp column, not {column.type}")
    if column.null_count:
        raise DatasetError(f"{column.null_count} row(s) without a time")
    raw = column.cast(pa.int64()).to_numpy()
    unit = column.type.unit
    if unit == "ms":
        return raw
    return raw * 1000 if unit == "s" else raw // {"us": 1000, "ns": 1_000_000}[unit]  # floor


def _as_table(events: Events, columns: tuple[str, ...]) -> pa.Table:
    if isinstance(events, pd.DataFrame):
        names = list(events.columns)
    elif isinstance(events, pa.Table):
        names = events.column_names
    else:
        raise DatasetError(f"events must be a pyarrow Table or pandas DataFrame, not {type(events).__name__}")
    missing = [c for c in columns if c not in names]
    if missing:
        raise DatasetError(f"events lack column(s) {missing}; need {list(columns)}")
    if isinstance(events, pd.DataFrame):
        return pa.Table.from_pandas(events[list(columns)], preserve_index=False)
    return events


def _used(codes: np.ndarray, n: int) -> np.ndarray:
    used = np.zeros(n, dtype=bool)
    used[codes] = True
    return used


def _renumber(codes: np.ndarray, used: np.ndarray) -> np.ndarray:
    """``codes`` renumbered to count only the ``used`` ones (order kept), int32."""
    return (np.cumsum(used, dtype=np.int64) - 1).astype(np.int32)[codes]


def _empty_interactions() -> Interactions:
    return Interactions(np.zeros(0, np.int64), np.zeros(0, dtype=object), np.zeros(0, np.int32),
                        np.zeros(0, np.int32), np.zeros(0, np.int16), np.zeros(0, np.int8),
                        np.zeros(0, np.int64))  # fmt: skip


# -- the training set ---------------------------------------------------------------------


def build_trainset(events: Events, *, as_of: datetime, profiles: Profiles | None = None,
                   runtimes: Mapping[str, object] | None = None,
                   movies: Mapping[str, Mapping[str, str]] | None = None,
                   params: ConfidenceParams = ConfidenceParams(), rating_scale: int = 5,
                   min_user_items: int = 1, min_item_users: int = 1) -> TrainSet:  # fmt: skip
    """The ``TrainSet`` of the watch and rate rows strictly before ``as_of`` (naive).

    Users and items are those with at least one entry, ids ascending. Optional filters,
    applied once each (not iterated to a fixed point): drop items with fewer than
    ``min_item_users`` users, then users left with fewer than ``min_user_items`` items.
    The defaults (1, 1) keep everything. Runtimes are estimated from the same rows (only
    the ones before ``as_of``) unless ``runtimes`` gives them. ``movies`` (the stored
    metadata by movie id) makes the set's ``item_meta``.
    """
    return build_trainset_with_runtimes(
        events, as_of=as_of, profiles=profiles, runtimes=runtimes, movies=movies, params=params,
        rating_scale=rating_scale, min_user_items=min_user_items, min_item_users=min_item_users,
    )[0]  # fmt: skip


def build_trainset_with_runtimes(events: Events, *, as_of: datetime, profiles: Profiles | None = None,
                                 runtimes: Mapping[str, object] | None = None,
                                 movies: Mapping[str, Mapping[str, str]] | None = None,
                                 params: ConfidenceParams = ConfidenceParams(), rating_scale: int = 5,
                                 min_user_items: int = 1, min_item_users: int = 1,
                                 ) -> tuple[TrainSet, np.ndarray]:  # fmt: skip
    """(``build_trainset``'s TrainSet, the runtimes its confidences used: float32 minutes
    per item, aligned with ``item_ids``). The pipeline stores the runtimes with the model
    version so serving weighs a history as training did (``recommender.runtimes``)."""
    if rating_scale < 2:
        raise DatasetError(f"rating_scale must be at least 2, got {rating_scale}")
    cut = cut_ms(as_of)
    found = _aggregate(*_rows(events, cut))
    if len(found) and int(found.rating.max()) > rating_scale:
        raise DatasetError(f"a rating of {int(found.rating.max())} is above the rating scale {rating_scale}")
    if min_user_items > 1 or min_item_users > 1:
        keep = np.bincount(found.item, minlength=len(found.item_ids))[found.item] >= min_item_users
        per_user = np.bincount(found.user[keep], minlength=len(found.user_ids))
        found = found.subset(keep & (per_user[found.user] >= min_user_items))
    as_of_us = (as_of - _EPOCH) // timedelta(microseconds=1)
    age_s = (as_of_us - found.last_ms * 1000) / 1e6
    runtime = item_runtimes(found, runtimes, quantile=params.runtime_quantile, floor=params.min_runtime)
    values = confidence(found.max_minute, found.rating, age_s, runtime[found.item],
                        params=params, rating_scale=rating_scale)  # fmt: skip
    n_users, n_items = len(found.user_ids), len(found.item_ids)
    index = np.int32 if len(found) < 2**31 else np.int64
    indptr = np.zeros(n_users + 1, dtype=index)
    np.cumsum(np.bincount(found.user, minlength=n_users), out=indptr[1:])
    matrix = sp.csr_matrix((values, found.item.astype(index), indptr), shape=(n_users, n_items))
    matrix.has_sorted_indices = True  # entries come sorted by (user, item)
    train = TrainSet(matrix, found.user_ids, found.item_ids, age_s, as_of,
                     profiles if profiles is not None else Profiles.empty(),
                     None if movies is None else ItemMeta.from_fields(found.item_ids, movies))
    return train, runtime


# -- the adapter ----------------------------------------------------------------------------


def read_events(store: EventStore, snapshot: Snapshot | None, *, start: datetime | None = None,
                end: datetime | None = None) -> pa.Table:  # fmt: skip
    """The watch and rate rows of ``snapshot`` (the store now if None) with time in
    [start, end): ``EVENT_COLUMNS`` only, deduplicated, unsorted, ``movie_id``
    dictionary-encoded (one dictionary over the table), ready for ``build_trainset``."""
    table = store.read_table(snapshot, columns=list(EVENT_COLUMNS), start=start, end=end, sort=False)
    keep = _kind_codes(table["kind"]) >= 0
    if not keep.all():
        table = table.filter(pa.array(keep))
    movies = pc.dictionary_encode(table["movie_id"]).unify_dictionaries()
    position = table.column_names.index("movie_id")
    return table.set_column(position, pa.field("movie_id", movies.type), movies)
