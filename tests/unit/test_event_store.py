"""The offline event store: the row schema, the hot-path column builder, date-partitioned
append with offset metadata, at-least-once redelivery, snapshots and their verification,
time windows, compaction (with old snapshots still valid) and crash safety."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from movierec.wire import Account, Rate, Recommendation, Watch
from stores.event_columns import KINDS
from stores.event_manifest import (
    FileInfo,
    LineageEdge,
    file_name,
    in_ranges,
    merge_intervals,
    resolve_plan,
)
from stores.event_store import (
    SCHEMA,
    EventColumns,
    EventStore,
    EventStoreError,
    event_row,
    snapshot_provenance,
)

TOPIC = "movielog15"
T0 = datetime(2024, 2, 27, 18, 45, 18, 123456)
MIDNIGHT = datetime(2024, 2, 28)


def make_event(i: int, when: datetime):
    """A deterministic mix of every kind, including both recommendation outcomes."""
    user = 1000 + i % 37
    match i % 10:
        case 0:
            return Recommendation(when, user, "team15.example:8082", 200, (f"m{i}+2001", "x+1999"), "",
                                  40 + i % 50)
        case 1:
            return Recommendation(when, user, "team15.example:8082", 200, (), "", 7)
        case 2:
            return Recommendation(when, user, "team15.example:8082", 0, (), f"timeout after 600 ms #{i}", 600)
        case 3:
            return Rate(when, user, f"movie+{i % 11}+2003", 1 + i % 5)
        case 4:
            return Account(when, user)
        case _:
            return Watch(when, user, f"movie+{i % 11}+2003", i % 90)


def make_log(n: int, start: datetime = T0, step_s: float = 1.0, partitions: int = 2) -> list[tuple]:
    """(event, partition, offset) for n lines spread round-robin over partitions, each
    partition's offsets counting up from 0, like a real topic."""
    log, next_offset = [], [0] * partitions
    for i in range(n):
        p = i % partitions
        log.append((make_event(i, start + timedelta(seconds=i * step_s)), p, next_offset[p]))
        next_offset[p] += 1
    return log


def table_of(log: list[tuple]) -> pa.Table:
    columns = EventColumns()
    for event, partition, offset in log:
        columns.add(event, partition, offset)
    return columns.to_table()


def reference_frame(tmp_path: Path, log: list[tuple], **read_kw) -> pd.DataFrame:
    """What a store that saw every line exactly once reads back."""
    store = EventStore(tmp_path / "reference", TOPIC)
    store.append(table_of(log))
    return store.read(**read_kw)


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "store", TOPIC)


# -- schema and EventColumns ------------------------------------------------------------


def test_schema_is_exactly_the_spec():
    expected = [
        ("time", pa.timestamp("ms")),
        ("kind", pa.dictionary(pa.int8(), pa.string())),
        ("user_id", pa.int64()),
        ("movie_id", pa.string()),
        ("minute", pa.int16()),
        ("rating", pa.int8()),
        ("server", pa.string()),
        ("status", pa.int16()),
        ("items", pa.list_(pa.string())),
        ("error", pa.string()),
        ("response_time_ms", pa.int32()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
    ]
    assert [(f.name, f.type) for f in SCHEMA] == expected
    assert SCHEMA.field("time").type.tz is None  # naive site-local time
    assert not SCHEMA.metadata


NULLS = dict.fromkeys(["movie_id", "minute", "rating", "server", "status", "items", "error",
                      "response_time_ms"])
T = datetime(2024, 2, 27, 18, 45, 18, 123000)


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        (Watch(T, 7, "kill+bill+vol.+1+2003", 89),
         {"kind": "watch", "movie_id": "kill+bill+vol.+1+2003", "minute": 89}),
        (Rate(T, 7, "i_+robot+2004", 4), {"kind": "rate", "movie_id": "i_+robot+2004", "rating": 4}),
        (
            Recommendation(T, 7, "h:8082", 200, ("a+2001", "b+2002"), "", 123),
            {"kind": "recommendation", "server": "h:8082", "status": 200, "items": ["a+2001", "b+2002"],
             "response_time_ms": 123},
        ),
        (  # a 200 with no ids: an empty list, not null
            Recommendation(T, 7, "h:8082", 200, (), "", 5),
            {"kind": "recommendation", "server": "h:8082", "status": 200, "items": [], "response_time_ms": 5},
        ),
        (  # a failure: the error text; items as the wire gives them (empty)
            Recommendation(T, 7, "h:8082", 0, (), "java.net.SocketTimeoutException: after 600 ms", 600),
            {"kind": "recommendation", "server": "h:8082", "status": 0, "items": [],
             "error": "java.net.SocketTimeoutException: after 600 ms", "response_time_ms": 600},
        ),
        (Account(T, 7), {"kind": "account"}),
    ],
    ids=["watch", "rate", "reco-200", "reco-200-empty", "reco-failed", "account"],
)  # fmt: skip
def test_event_columns_every_kind(event, fields):
    columns = EventColumns()
    columns.add(event, 3, 42)
    assert len(columns) == 1
    table = columns.to_table()
    assert table.schema.equals(SCHEMA)
    expected = {"time": T, "user_id": 7, "partition": 3, "offset": 42, **NULLS, **fields}
    assert table.to_pylist() == [expected]
    assert table.to_pylist() == [event_row(event, 3, 42)]  # the slow reference agrees


def test_event_columns_mixed_batch_matches_from_pylist_and_keeps_arrival_order():
    log = make_log(500)
    table = table_of(log)
    baseline = pa.Table.from_pylist([event_row(*entry) for entry in log], schema=SCHEMA)
    assert table.to_pylist() == baseline.to_pylist()  # (from_pylist orders the dictionary by first use)
    assert table["offset"].to_pylist() == [offset for _, _, offset in log]
    assert table["kind"].type == pa.dictionary(pa.int8(), pa.string())
    assert table["kind"].chunk(0).dictionary.to_pylist() == list(KINDS)


@pytest.mark.parametrize("kind", [Account, Watch])
def test_event_columns_single_kind_batches(kind):
    """Columns no row of the batch has come out all null (nothing to scatter)."""
    columns = EventColumns()
    for i in range(5):
        columns.add(kind(T, i) if kind is Account else kind(T, i, "a+2001", i), 0, i)
    table = columns.to_table()
    assert table.num_rows == 5 and table["status"].null_count == 5 and table["items"].null_count == 5


def test_event_columns_truncates_time_to_ms_never_into_the_next_day():
    columns = EventColumns()
    columns.add(Account(datetime(2024, 2, 27, 23, 59, 59, 999999), 1), 0, 0)
    assert columns.to_table()["time"].to_pylist() == [datetime(2024, 2, 27, 23, 59, 59, 999000)]


def test_event_columns_empty_rejects_non_events_and_clears():
    columns = EventColumns()
    assert columns.to_table().num_rows == 0 and columns.to_table().schema.equals(SCHEMA)
    with pytest.raises(TypeError, match="not a wire event"):
        columns.add("2024-02-27T18:45:18,1,GET /create_account", 0, 0)
    assert len(columns) == 0
    columns.add(Account(T, 1), 0, 0)
    assert columns.to_table().num_rows == 1  # still aligned after the rejected add
    columns.clear()
    assert len(columns) == 0


# -- append ------------------------------------------------------------------------------


def test_append_splits_by_event_date_and_records_offset_ranges(store):
    log = make_log(40, start=MIDNIGHT - timedelta(seconds=20))  # 20 lines each side of midnight
    paths = store.append(table_of(log))
    assert [p.parent.name for p in paths] == ["date=2024-02-27", "date=2024-02-28"]
    assert all(p.name.startswith("part-p0-1-o") and p.suffix == ".parquet" for p in paths)

    meta = pq.read_metadata(paths[0]).metadata
    assert meta[b"movierec.topic"] == TOPIC.encode()
    assert meta[b"movierec.format"] == b"1"
    assert json.loads(meta[b"movierec.offsets"]) == {"0": [0, 9, 10], "1": [0, 9, 10]}
    assert meta[b"movierec.rows"] == b"20"
    assert meta[b"movierec.time_min"] == b"2024-02-27T23:59:40.000"
    assert meta[b"movierec.time_max"] == b"2024-02-27T23:59:59.000"

    files = store.files()
    assert [f.path for f in files] == paths
    assert [str(f.date) for f in files] == ["2024-02-27", "2024-02-28"]
    assert files[1].offsets == {0: (10, 19), 1: (10, 19)} and files[1].rows == 20
    assert files[1].time_min == MIDNIGHT and files[1].bytes == paths[1].stat().st_size
    assert pq.read_table(paths[0]).schema.remove_metadata().equals(SCHEMA)


def test_append_rejects_bad_batches(store):
    assert store.append(table_of([])) == []
    with pytest.raises(EventStoreError, match="schema differs"):
        store.append(table_of(make_log(3)).drop_columns(["error"]))
    with pytest.raises(EventStoreError, match="schema differs"):
        store.append(table_of(make_log(3)).cast(SCHEMA.set(2, pa.field("user_id", pa.int32()))))
    bad = table_of(make_log(3))
    bad = bad.set_column(12, "offset", pa.array([1, None, 3], pa.int64()))
    with pytest.raises(EventStoreError, match="null value"):
        store.append(bad)
    with pytest.raises(EventStoreError, match="pyarrow.Table"):
        store.append([1, 2])
    alien = pa.Table.from_pylist([{**event_row(Account(T0, 1), 0, 0), "kind": "rejection"}], schema=SCHEMA)
    with pytest.raises(EventStoreError, match="unknown kind"):
        store.append(alien)
    assert store.files() == []


def test_append_keeps_a_repeated_offset_once_within_a_batch(store):
    log = make_log(10)
    store.append(table_of(log + log[3:6]))
    (info,) = store.files()
    assert info.rows == 10
    assert len(store.read()) == 10


def test_files_refuse_a_file_of_another_topic(tmp_path):
    EventStore(tmp_path, "movielog1").append(table_of(make_log(5)))
    with pytest.raises(EventStoreError, match="topic 'movielog1'"):
        EventStore(tmp_path, "movielog2").files()


# -- reading ----------------------------------------------------------------------------


def test_redelivery_with_other_batch_boundaries_reads_back_once(tmp_path, store):
    """At-least-once: a crash after append and before the commit re-appends the same
    offsets, cut into different batches. Nothing lost, nothing doubled."""
    log = make_log(1000)
    store.append(table_of(log[:400]))
    store.append(table_of(log[:250]))  # consumer restarted from an older commit
    store.append(table_of(log[250:700]))  # overlaps the first batch
    store.append(table_of(log[650:1000]))
    assert sum(f.rows for f in store.files()) == 1450
    frame = store.read()
    assert len(frame) == 1000
    assert not frame.duplicated(["partition", "offset"]).any()
    pd.testing.assert_frame_equal(frame, reference_frame(tmp_path, log))


def test_read_sorts_by_time_partition_offset_and_types_columns(store):
    log = make_log(30)
    reordered = log[10:20] + log[:10] + log[20:]  # events arrive out of time order
    same_time = [(Account(T0, 1), 1, 100), (Account(T0, 2), 0, 100), (Account(T0, 3), 0, 99)]
    store.append(table_of(reordered))
    store.append(table_of(same_time))
    frame = store.read()
    keys = list(zip(frame["time"], frame["partition"], frame["offset"], strict=True))
    assert keys == sorted(keys)
    assert list(frame.columns) == SCHEMA.names
    assert frame.index.equals(pd.RangeIndex(len(frame)))
    assert list(frame["kind"].cat.categories) == list(KINDS)
    assert str(frame["minute"].dtype) == "Int16" and frame["minute"].isna().sum() == 18
    assert str(frame["time"].dtype) == "datetime64[ms]"
    reco = frame[frame["kind"] == "recommendation"]
    assert [list(x) for x in reco["items"].head(3)] == [["m0+2001", "x+1999"], [], []]
    assert frame.loc[frame["kind"] == "watch", "items"].isna().all()


def test_read_columns_subset_and_unknown(store):
    store.append(table_of(make_log(10)))
    frame = store.read(columns=["user_id", "kind"])
    assert list(frame.columns) == ["user_id", "kind"] and len(frame) == 10
    with pytest.raises(EventStoreError, match="unknown column"):
        store.read(columns=["user"])


def test_read_time_window_is_half_open_and_spans_dates(tmp_path, store):
    log = make_log(60, start=MIDNIGHT - timedelta(seconds=30))
    store.append(table_of(log[:30]))
    store.append(table_of(log[30:]))
    start, end = MIDNIGHT - timedelta(seconds=5), MIDNIGHT + timedelta(seconds=5)
    frame = store.read(start=start, end=end)
    assert len(frame) == 10
    assert frame["time"].min() == start and frame["time"].max() == end - timedelta(seconds=1)
    pd.testing.assert_frame_equal(frame, reference_frame(tmp_path, log, start=start, end=end))
    assert len(store.read(start=MIDNIGHT)) == 30
    assert len(store.read(end=MIDNIGHT)) == 30
    assert store.read(start=MIDNIGHT + timedelta(days=1)).empty
    assert list(store.read(end=MIDNIGHT - timedelta(days=1)).columns) == SCHEMA.names


def test_read_starts_over_when_a_file_vanishes_under_it(store, monkeypatch):
    """A compaction may delete a listed file before the read opens it."""
    store.append(table_of(make_log(20)))
    real, calls = pq.ParquetFile, []

    def vanishing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", vanishing)
    assert len(store.read()) == 20 and len(calls) == 2


def test_read_refuses_aware_times(store):
    with pytest.raises(EventStoreError, match="naive"):
        store.read(start=datetime(2024, 1, 1, tzinfo=UTC))


def test_a_damaged_file_is_reported_not_skipped(store):
    (path,) = store.append(table_of(make_log(20)))
    path.with_name("part-p0-o0-1-bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(EventStoreError, match="unreadable Parquet footer"):
        store.read()


def test_read_table_gives_the_rows_of_read_as_arrow_sorted_or_not(store):
    log = make_log(40)
    store.append(table_of(log[:25][::-1]))  # a file whose rows are not in time order
    store.append(table_of(log[20:]))  # redelivers 20..24
    snap = store.snapshot()
    store.append(table_of(make_log(5, start=T0 - timedelta(days=1))))  # not in the snapshot
    columns = ["time", "kind", "user_id", "offset"]
    table = store.read_table(snap, columns=columns, start=T0 + timedelta(seconds=5))
    assert table.schema.equals(pa.schema([SCHEMA.field(c) for c in columns]))
    frame = store.read(snap, columns=columns, start=T0 + timedelta(seconds=5))
    pd.testing.assert_frame_equal(table.to_pandas(), frame)
    assert table.num_rows == 35
    unsorted = store.read_table(snap, columns=columns, start=T0 + timedelta(seconds=5), sort=False)
    keys = list(zip(unsorted["time"].to_pylist(), unsorted["offset"].to_pylist(), strict=True))
    assert keys[:5] == sorted(keys[:5], reverse=True)  # the file order shows: no sort was paid
    assert sorted(keys) == list(zip(table["time"].to_pylist(), table["offset"].to_pylist(), strict=True))
    with pytest.raises(EventStoreError, match="naive"):
        store.read_table(start=datetime(2024, 1, 1, tzinfo=UTC))


def test_read_of_an_empty_store(store):
    frame = store.read()
    assert frame.empty and list(frame.columns) == SCHEMA.names


# -- snapshots ------------------------------------------------------------------------------


def test_snapshot_id_is_stable_for_the_same_content_and_changes_after_append(tmp_path, store):
    log = make_log(100)
    store.append(table_of(log[:50]))
    store.append(table_of(log[50:]))
    first = store.snapshot()
    assert len(first.id) == 16 and int(first.id, 16) >= 0
    assert store.snapshot().id == first.id
    assert EventStore(store.root, TOPIC).snapshot().id == first.id  # a fresh process, no caches
    saved = json.loads((store.root / "snapshots" / f"{first.id}.json").read_text())
    assert saved["id"] == first.id and saved["manifest"] == first.manifest
    assert "created_at" not in json.dumps(saved["manifest"])  # not inside the hashed part
    assert store.snapshots() == [first.id]

    m = first.manifest
    assert m["file_count"] == 2 and m["rows"] == 100 and m["topic"] == TOPIC
    assert m["partitions"] == {"0": [0, 49], "1": [0, 49]}
    assert first.partitions == {0: (0, 49), 1: (0, 49)}
    first_time = T0.replace(microsecond=123000)
    assert first.time_range == (first_time, first_time + timedelta(seconds=99))
    entry = m["files"][0]
    assert set(entry) == {"path", "bytes", "sha256", "rows", "offsets", "time_min", "time_max"}
    assert entry["path"].startswith("events/date=2024-02-27/part-") and len(entry["sha256"]) == 64

    store.append(table_of(log[90:]))  # even a pure redelivery is new content
    second = store.snapshot()
    assert second.id != first.id and second.rows == 110
    assert store.snapshots() == sorted([first.id, second.id])
    pd.testing.assert_frame_equal(store.read(first), store.read(second))  # same rows, deduplicated


def test_snapshot_reads_only_its_own_files(store):
    log = make_log(100)
    store.append(table_of(log[:60]))
    snap = store.snapshot()
    store.append(table_of(log[60:]))
    assert len(store.read(snap)) == 60 and len(store.read()) == 100
    assert len(store.read(store.load_snapshot(snap.id))) == 60


def test_load_snapshot_detects_a_tampered_file(store):
    store.append(table_of(make_log(50)))
    snap = store.snapshot()
    assert store.load_snapshot(snap.id).manifest == snap.manifest
    path = store.root / snap.files[0]["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(EventStoreError, match="sha256 .* differs"):
        store.load_snapshot(snap.id)
    path.write_bytes(bytes(data[:-1]))
    with pytest.raises(EventStoreError, match="bytes"):
        store.load_snapshot(snap.id)
    path.unlink()
    with pytest.raises(EventStoreError, match="missing"):
        store.load_snapshot(snap.id)


def test_load_snapshot_detects_an_altered_manifest_and_bad_ids(store):
    store.append(table_of(make_log(20)))
    snap = store.snapshot()
    body = json.loads(snap.path.read_text())
    body["manifest"]["rows"] += 1
    snap.path.write_text(json.dumps(body))
    with pytest.raises(EventStoreError, match="altered"):
        store.load_snapshot(snap.id)
    with pytest.raises(EventStoreError, match="no snapshot"):
        store.load_snapshot("0123456789abcdef")
    with pytest.raises(EventStoreError, match="not a snapshot id"):
        store.load_snapshot("../../etc/passwd")


def test_snapshot_of_another_topic_is_refused(tmp_path):
    one = EventStore(tmp_path, "movielog1")
    one.append(table_of(make_log(5)))
    snap = one.snapshot()
    with pytest.raises(EventStoreError, match="topic"):
        EventStore(tmp_path / "other", "movielog2").read(snap)


def test_provenance_is_a_small_json_dict(store):
    store.append(table_of(make_log(40)))
    snap = store.snapshot()
    prov = snapshot_provenance(snap)
    assert prov == {
        "snapshot_id": snap.id, "topic": TOPIC, "files": 1, "rows": 40, "bytes": snap.manifest["bytes"],
        "partitions": {"0": [0, 19], "1": [0, 19]},
        "time_min": "2024-02-27T18:45:18.123", "time_max": "2024-02-27T18:45:57.123",
    }  # fmt: skip
    assert json.loads(json.dumps(prov)) == prov


# -- compaction --------------------------------------------------------------------------


def small_batches(store: EventStore, log: list[tuple], size: int) -> None:
    """Append in batches of ``size``, redelivering the tail of every third batch."""
    for n, at in enumerate(range(0, len(log), size)):
        store.append(table_of(log[at : at + size]))
        if n % 3 == 2:
            store.append(table_of(log[at + size // 2 : at + size + 3]))


def test_compaction_merges_small_files_and_keeps_the_rows(tmp_path, store):
    log = make_log(2000, start=MIDNIGHT - timedelta(seconds=1000))  # two dates
    small_batches(store, log, 100)
    before = store.read()
    files_before = store.files()
    result = store.compact(max_rows_per_file=600, min_files=4)
    assert result.dates == ("2024-02-27", "2024-02-28")
    assert result.files_in == len(files_before) and result.rows_in == sum(f.rows for f in files_before)
    assert result.rows_out == 2000 and result.files_out == 4  # 1000 rows a date, at most 600 a file
    after = store.files()
    assert len(after) == 4 and all(f.rows <= 600 for f in after)
    assert sum(f.rows for f in after) == 2000  # the compacted files hold no duplicates
    assert all(f.compacted_from for f in after)
    pd.testing.assert_frame_equal(store.read(), before)
    pd.testing.assert_frame_equal(store.read(), reference_frame(tmp_path, log))
    assert len(result.records) == 2 and all(p.is_file() for p in result.records)


def test_compaction_skips_dates_with_few_small_files(store):
    log = make_log(300)
    for at in range(0, 300, 100):
        store.append(table_of(log[at : at + 100]))
    result = store.compact(min_files=4)
    assert result.dates == () and result.files_in == 0 and len(store.files()) == 3
    result = store.compact(min_files=3, max_rows_per_file=100)  # 100-row files are not small
    assert result.dates == ()
    assert store.compact(min_files=3).files_out == 1
    with pytest.raises(EventStoreError, match="min_files"):
        store.compact(min_files=1)


def test_old_snapshots_stay_valid_through_compactions(store):
    """Design: compaction deletes the files, a lineage record maps them to the outputs,
    and the snapshot's rows are the outputs' rows inside its files' offset ranges."""
    log = make_log(1200)
    small_batches(store, log[:600], 50)
    snap = store.snapshot()
    expected = store.read(snap)
    assert len(expected) == 600

    store.append(table_of(log[590:800]))  # new lines, with some redelivered ones
    store.compact(min_files=4)
    assert not any((store.root / f["path"]).exists() for f in snap.files)
    assert store.load_snapshot(snap.id).id == snap.id
    pd.testing.assert_frame_equal(store.read(snap), expected)

    small_batches(store, log[800:], 50)
    again = store.compact(min_files=4, max_rows_per_file=1000)  # the 800-row output is small too
    assert again.files_in > 8 and again.rows_out == 1200 and len(store.files()) == 2
    loaded = store.load_snapshot(snap.id)
    pd.testing.assert_frame_equal(store.read(loaded), expected)
    window = dict(start=T0 + timedelta(seconds=100), end=T0 + timedelta(seconds=200))
    pd.testing.assert_frame_equal(store.read(loaded, **window), store.read(**window))
    assert len(store.read()) == 1200
    assert store.snapshot().id != snap.id  # other files, so another id (the same rows)


def test_load_snapshot_detects_a_tampered_compaction_output(store):
    small_batches(store, make_log(400), 50)
    snap = store.snapshot()
    store.compact(min_files=4)
    (output,) = store.files()
    data = bytearray(output.path.read_bytes())
    data[100] ^= 0xFF
    output.path.write_bytes(bytes(data))
    with pytest.raises(EventStoreError, match="altered"):
        store.load_snapshot(snap.id)


def test_compaction_holds_a_lock(store):
    small_batches(store, make_log(400), 50)
    with open(store.root / ".compact.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(EventStoreError, match="another compaction"):
            store.compact()
    assert store.compact().files_out == 1


def test_a_listing_that_overlaps_a_compaction_is_taken_again(store, monkeypatch):
    store.append(table_of(make_log(20)))
    real, calls = EventStore._list_files, []

    def listing(self):
        calls.append(1)
        if len(calls) == 1:  # a compaction finished while we listed: we saw neither side
            record = self.compactions_dir / "20990101T000000000000Z-deadbeef.json"
            record.write_text('{"sources": [], "outputs": []}')
            return []
        return real(self)

    monkeypatch.setattr(EventStore, "_list_files", listing)
    assert len(store.files()) == 1 and len(calls) == 2


def test_readers_racing_compactions_always_see_every_row_once(store):
    log = make_log(2000)
    small_batches(store, log, 100)
    snap = store.snapshot()
    expected = store.read()
    failures, reads, done = [], [0], threading.Event()

    def reader():
        while not done.is_set():
            try:
                pd.testing.assert_frame_equal(store.read(), expected)
                pd.testing.assert_frame_equal(store.read(snap), expected)
                reads[0] += 1
            except Exception as exc:  # reported below
                failures.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(3):
            small_batches(store, log[round_ * 500 : round_ * 500 + 800], 60)  # redeliveries only
            store.compact(min_files=4, max_rows_per_file=1000 + round_)
    finally:
        done.set()
        thread.join()
    assert not failures, failures[0]
    assert reads[0] >= 1
    pd.testing.assert_frame_equal(store.read(store.load_snapshot(snap.id)), expected)


# -- crashes ------------------------------------------------------------------------------


def test_a_leftover_temp_file_is_ignored_then_cleaned(store):
    log = make_log(100)
    (path,) = store.append(table_of(log))
    store.append(table_of(log))  # a second small file of the date
    stale = path.with_name(".tmp-0123456789ab-part-p0-1-o0-49-feedfacecafe.parquet")
    stale.write_bytes(path.read_bytes()[:500])  # killed midway through a write
    fresh = path.with_name(".tmp-ba9876543210-part-p0-1-o50-99-feedfacecafe.parquet")
    fresh.write_bytes(b"PAR1")  # a write in progress right now
    old = time.time() - 7200
    os.utime(stale, (old, old))
    snap_tmp = store.root / "snapshots" / ".tmp-00-abc.json"
    snap_tmp.write_text("{")
    os.utime(snap_tmp, (old, old))

    assert len(store.files()) == 2
    assert len(store.read()) == 100
    snap = store.snapshot()
    assert all(".tmp-" not in f["path"] for f in snap.files)
    assert store.snapshots() == [snap.id]

    result = store.compact(min_files=2)
    assert result.temp_files_removed == 2
    assert not stale.exists() and not snap_tmp.exists() and fresh.exists()
    assert len(store.read()) == 100


def test_a_failed_write_leaves_nothing_visible(store, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        store.append(table_of(make_log(10)))
    monkeypatch.undo()
    assert store.files() == []
    assert not list((store.root / "events").rglob(".tmp-*"))
    store.append(table_of(make_log(10)))  # the consumer's retry
    assert len(store.read()) == 10


def test_compaction_killed_before_deleting_its_sources(store, tmp_path):
    log = make_log(600)
    small_batches(store, log, 50)
    snap = store.snapshot()
    expected = store.read()
    backup = tmp_path / "backup"
    shutil.copytree(store.root / "events", backup)
    result = store.compact(min_files=4)
    (output,) = store.files()
    shutil.copytree(backup, store.root / "events", dirs_exist_ok=True)  # the sources are back

    assert len(store.files()) == result.files_in + 1
    pd.testing.assert_frame_equal(store.read(), expected)  # no duplicates shown
    pd.testing.assert_frame_equal(store.read(store.load_snapshot(snap.id)), expected)

    again = store.compact(min_files=4)
    assert again.leftovers_removed == result.files_in and again.dates == ()
    assert [f.path for f in store.files()] == [output.path]
    pd.testing.assert_frame_equal(store.read(store.load_snapshot(snap.id)), expected)


def test_compaction_killed_before_writing_its_record(store, tmp_path):
    log = make_log(600)
    small_batches(store, log, 50)
    snap = store.snapshot()
    expected = store.read()
    backup = tmp_path / "backup"
    shutil.copytree(store.root / "events", backup)
    result = store.compact(min_files=4)
    for record in result.records:
        record.unlink()  # killed before the record was in place ...
    shutil.copytree(backup, store.root / "events", dirs_exist_ok=True)  # ... so nothing was deleted

    assert len(store.files()) == result.files_in + 1  # the sources and an orphan output
    pd.testing.assert_frame_equal(store.read(), expected)
    pd.testing.assert_frame_equal(store.read(store.load_snapshot(snap.id)), expected)

    again = store.compact(min_files=4)  # merges the orphan output like any small file
    assert again.files_in == result.files_in + 1 and again.rows_out == 600 and again.leftovers_removed == 0
    pd.testing.assert_frame_equal(store.read(), expected)
    pd.testing.assert_frame_equal(store.read(store.load_snapshot(snap.id)), expected)


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta
    from movierec.wire import Watch
    from stores.event_store import EventColumns, EventStore

    store = EventStore(sys.argv[1], "movielog15")
    start = datetime(2024, 2, 27, 23, 0)
    offset = 0
    while True:
        columns = EventColumns()
        for _ in range(2000):
            columns.add(Watch(start + timedelta(seconds=offset), offset % 97, "a+2001", offset % 90),
                        0, offset)
            offset += 1
        store.append(columns.to_table())
        print(offset, flush=True)  # "committed": everything below this offset is durable
    """
)


def test_sigkill_at_any_instant_leaves_a_readable_store(tmp_path):
    root = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        committed = [int(proc.stdout.readline()) for _ in range(3)]
        time.sleep(0.013)  # somewhere inside a later write
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.stdout.close()
        proc.wait()
    committed += [int(x) for x in rest.split()]
    store = EventStore(root, TOPIC)
    frame = store.read(columns=["offset"])
    n = len(frame)
    assert n >= committed[-1]  # every acknowledged batch, and maybe part of the next
    assert np.array_equal(frame["offset"].to_numpy(), np.arange(n))
    assert store.load_snapshot(store.snapshot().id)


# -- pure helpers ---------------------------------------------------------------------------


def test_merge_intervals():
    assert merge_intervals([]) == []
    assert merge_intervals([(5, 9), (1, 3), (4, 4), (20, 30), (25, 26)]) == [(1, 9), (20, 30)]


def test_in_ranges():
    parts = np.array([0, 0, 0, 1, 1, 2])
    offs = np.array([5, 10, 11, 10, 11, 10])
    mask = in_ranges(parts, offs, {0: [(0, 5), (11, 11)], 1: [(11, 20)]})
    assert mask.tolist() == [True, False, True, False, True, False]


def test_file_name():
    assert file_name({3: (10, 20, 5)}, "abc") == "part-p3-o10-20-abc.parquet"
    assert file_name({0: (10, 20, 5), 2: (7, 9, 3)}, "abc") == "part-p0-2-o7-20-abc.parquet"


def test_resolve_plan_follows_lineage_and_checks_hashes():
    entries = [
        {"path": "a", "sha256": "ha", "bytes": 1, "offsets": {"0": [0, 9, 10]}},
        {"path": "b", "sha256": "hb", "bytes": 1, "offsets": {"0": [10, 19, 10]}},
        {"path": "c", "sha256": "hc", "bytes": 1, "offsets": {"1": [0, 4, 5]}},
    ]
    lineage = {
        "a": LineageEdge("ha", (("x", "hx", 2),), "r1"),
        "b": LineageEdge("hb", (("x", "hx", 2),), "r1"),
        "x": LineageEdge("hx", (("y", "hy", 3), ("z", "hz", 3)), "r2"),
    }
    present = {"c", "y", "z"}
    seen = []
    plan = resolve_plan(entries, lineage, present.__contains__, lambda *a: seen.append(a))
    assert plan == {"c": None, "y": {0: [(0, 9), (10, 19)]}, "z": {0: [(0, 9), (10, 19)]}}
    assert ("y", "hy", 3) in seen and ("c", "hc", 1) in seen
    lineage["a"] = LineageEdge("other", (("x", "hx", 2),), "r1")
    with pytest.raises(EventStoreError, match="expects"):
        resolve_plan(entries, lineage, present.__contains__, lambda *a: None)


def test_file_info_stats():
    info = FileInfo(Path("/x"), "x", T.date(), 3, 9, {0: (1, 3)}, {0: 3}, T, T)
    assert info.stats == {0: (1, 3, 3)}
