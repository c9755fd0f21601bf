"""The shortcut from simulated events to event-store rows equals the consumer's own path
(format the line, parse it, add it to ``EventColumns``), and compaction keeps what the
dataset builder reads."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from movierec.wire import LineParser
from offline_eval.simulated import (
    compact_sessions,
    history_table,
    oracle_values,
    simulate,
)
from simulator.history import WATCH, HistoryGenerator
from simulator.oracle import best_list
from simulator.world import World, WorldSpec
from stores.event_columns import SCHEMA, EventColumns

START = datetime(2025, 3, 1)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldSpec(seed=5, n_users=600, n_movies=300))


@pytest.fixture(scope="module")
def events(world):
    return simulate(world, start=START, days=3, seed=9)


def test_history_table_equals_the_consumer_path(world, events):
    gen = HistoryGenerator(world, start=START, days=3, seed=9)
    sample = events.take(np.arange(0, len(events), max(1, len(events) // 3000)))
    table = history_table(world, sample, start=START, partitions=1)
    parser, cols = LineParser(), EventColumns()
    for i, (line, _key) in enumerate(gen.format(sample)):
        cols.add(parser.parse(line), 0, i)
    expected = cols.to_table()
    assert table.schema == SCHEMA
    # Lines carry whole seconds only... the shortcut keeps milliseconds: compare per column,
    # times to the second.
    for name in ("kind", "user_id", "movie_id", "minute", "rating", "partition", "offset"):
        assert table[name].to_pylist() == expected[name].to_pylist(), name

    def secs(t: pa.Table) -> list:
        return pc.floor_temporal(t["time"], unit="second").to_pylist()

    assert secs(table) == secs(expected)


def test_offsets_count_up_per_partition(world, events):
    table = history_table(world, events, start=START, partitions=4)
    for p in range(4):
        offsets = np.asarray(table.filter(pc.equal(table["partition"], p))["offset"])
        assert np.array_equal(offsets, np.arange(len(offsets)))
    assert np.all(np.diff(np.asarray(table["time"].cast("int64"))) >= 0)


def test_compaction_keeps_each_sessions_first_and_last_minute(events):
    def spans(ev):
        w = ev.kind == WATCH
        keys = {}
        for u, m, v in zip(ev.user[w].tolist(), ev.movie[w].tolist(), ev.value[w].tolist(), strict=True):
            lo, hi = keys.get((u, m), (v, v))
            keys[(u, m)] = (min(lo, v), max(hi, v))
        return keys

    small = compact_sessions(events)
    assert len(small) < len(events) / 5
    assert spans(small) == spans(events)
    assert int((small.kind != WATCH).sum()) == int((events.kind != WATCH).sum())
    assert np.all(np.diff(small.t) >= 0)


def test_oracle_prefers_the_best_list(world):
    users = [1, 2, 3]
    best = [best_list(world, u, 10) for u in users]
    worst_ids = np.asarray(world.catalog.ids)[np.argsort(world.utilities_for(1))[:10]]
    values = oracle_values(world, users, best)
    assert values.shape == (3,)
    assert values[0] > oracle_values(world, [1], [list(worst_ids)])[0]
