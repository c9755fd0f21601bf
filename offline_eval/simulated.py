"""Event-store tables from a simulated world, and the oracle's verdict on served lists.

An evaluation tool that says so (docs/architecture.md, rule of the house 2): it may read
the simulator's hidden truth. Two uses:

- ``history_table`` turns a simulated history straight into the rows a correct consumer
  would have stored (``stores.event_columns.SCHEMA``), skipping the text lines and
  Kafka. Model tests and the training benchmark need millions of rows in seconds; the
  line -> parse -> store path is covered by the consumer's own tests, and a test here checks
  this shortcut against it on a sample. With ``compact=True`` each viewing session keeps
  only its first and last minute lines, which is all the dataset builder reads (the maximum
  minute) and makes full-scale tables 30-50x smaller.
- ``oracle_values`` scores lists with the simulator's cascade (``simulator.oracle``), so
  the offline ranking of candidates can be checked against the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from simulator.history import ACCOUNT, RATE, WATCH, Events, HistoryGenerator
from simulator.oracle import list_value
from simulator.world import World
from stores.event_columns import KINDS, SCHEMA

_KIND_CODE = np.full(3, -1, np.int8)
_KIND_CODE[WATCH], _KIND_CODE[RATE], _KIND_CODE[ACCOUNT] = (
    KINDS.index("watch"), KINDS.index("rate"), KINDS.index("account"))


def simulate(world: World, *, start: datetime, days: float, seed: int,
             rating_scale: int = 5) -> Events:
    """Every event of ``days`` of organic history, time-ordered (seconds since ``start``)."""
    gen = HistoryGenerator(world, start=start, days=days, seed=seed, rating_scale=rating_scale)
    parts = list(gen.events())
    return Events.concat(parts) if parts else Events(*(np.zeros(0, t) for t in (
        np.float64, np.int8, np.int32, np.int32, np.int16)))


def compact_sessions(events: Events) -> Events:
    """Only the first and last minute line of each viewing session, plus every other line.

    Sessions are runs of consecutive minutes of the same (user, movie); in a time-ordered
    stream a user's session lines are contiguous among that user's watch lines.
    """
    order = np.lexsort((events.t, events.user))  # per user, in time
    ev = events.take(order)
    watch = ev.kind == WATCH
    idx = np.flatnonzero(watch)
    keep = ~watch
    if len(idx):
        u, m, v = ev.user[idx], ev.movie[idx], ev.value[idx]
        new = np.ones(len(idx), bool)
        new[1:] = (u[1:] != u[:-1]) | (m[1:] != m[:-1]) | (v[1:] != v[:-1] + 1)
        last = np.ones(len(idx), bool)
        last[:-1] = new[1:]
        keep[idx[new | last]] = True
    out = ev.take(np.flatnonzero(keep))
    return out.take(np.argsort(out.t, kind="stable"))


def history_table(world: World, events: Events, *, start: datetime,
                  partitions: int = 4) -> pa.Table:
    """``events`` as event-store rows with ``SCHEMA``.

    Times are ``start`` + t, truncated to milliseconds like the store's. Rows land on
    partition ``user % partitions`` (the producer keys lines by user) with offsets
    counting up per partition in time order, as a topic would assign them.
    """
    n = len(events)
    base_ms = int(np.datetime64(start, "ms").astype(np.int64))
    times = base_ms + np.floor(events.t * 1000.0).astype(np.int64)
    kinds = _KIND_CODE[events.kind]
    has_movie = events.movie >= 0
    ids = np.asarray(world.catalog.ids, dtype=object)
    movie = pa.array(np.where(has_movie, ids[np.maximum(events.movie, 0)], None), pa.string())
    watch, rate = events.kind == WATCH, events.kind == RATE
    partition = (events.user.astype(np.int64) % partitions).astype(np.int32)
    offset = np.zeros(n, np.int64)
    for p in range(partitions):
        where = np.flatnonzero(partition == p)
        offset[where] = np.arange(len(where))
    null_str = pa.nulls(n, pa.string())
    columns = [
        pa.array(times, pa.int64()).cast(SCHEMA.field("time").type),
        pa.DictionaryArray.from_arrays(pa.array(kinds), pa.array(KINDS, pa.string())),
        pa.array(events.user.astype(np.int64)),
        movie,
        pa.array(events.value, pa.int16(), mask=~watch),
        pa.array(events.value.astype(np.int8), pa.int8(), mask=~rate),
        null_str,
        pa.nulls(n, pa.int16()),
        pa.nulls(n, SCHEMA.field("items").type),
        null_str,
        pa.nulls(n, pa.int32()),
        pa.array(partition),
        pa.array(offset),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def oracle_values(world: World, user_ids: Sequence[int], lists: Sequence[Sequence[str]]) -> np.ndarray:
    """Expected utility each user takes from their list under the simulator's cascade
    (float64, one per user); unknown ids are worthless."""
    return np.array([list_value(world, int(u), list(items))
                     for u, items in zip(user_ids, lists, strict=True)])
