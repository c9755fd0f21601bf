"""The event store's row schema and the consumer's hot-path builder of Arrow tables.

One row per accepted MLiP log line (the schema is fixed in the lead's event-schema note and
mirrored by ``SCHEMA`` below). The consumer parses a line into a ``movierec.wire`` event,
calls ``EventColumns.add(event, partition, offset)`` and, once per micro-batch, turns the
columns into one ``pyarrow.Table`` with ``to_table()`` for ``EventStore.append``.

Why plain Python lists, one per column: ``add`` runs once per Kafka message (tens of
thousands per second on one core), and appending a value to a list is the cheapest thing
Python can do per field; the conversion to Arrow then runs in C once per batch. A column
that only some kinds have holds only their values (see ``EventColumns``).
``pa.Table.from_pylist`` over dicts is the baseline this is measured against
(benchmarks/event_store.py).

The second half holds the whole-table operations the store applies to such tables
(schema check, deduplication by Kafka position, the pandas conversion), kept next to the
schema they depend on.

Column rules, beyond the types: columns that do not apply to a kind are null; ``items`` is
a (possibly empty) list for every recommendation and null otherwise; ``error`` is null on a
status-200 recommendation and the client's text otherwise. Times are naive site-local
times truncated to milliseconds.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from movierec.wire import Account, Rate, Recommendation, Watch
from stores.event_manifest import EventStoreError

KINDS: tuple[str, ...] = ("watch", "rate", "recommendation", "account")
"""The ``kind`` dictionary, in code order: code 0 is "watch", and so on."""

_KIND_DICTIONARY = pa.array(KINDS, pa.string())
_KIND_SET = frozenset(KINDS)
_KIND_TYPE = pa.dictionary(pa.int8(), pa.string())
_TIME_TYPE = pa.timestamp("ms")
_ITEMS_TYPE = pa.list_(pa.string())

SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("time", _TIME_TYPE),  # event time, naive site-local, ms
        pa.field("kind", _KIND_TYPE),
        pa.field("user_id", pa.int64()),
        pa.field("movie_id", pa.string()),  # null for account / recommendation
        pa.field("minute", pa.int16()),  # null unless watch; 0-based
        pa.field("rating", pa.int8()),  # null unless rate; stars
        pa.field("server", pa.string()),  # null unless recommendation; host:port
        pa.field("status", pa.int16()),  # null unless recommendation
        pa.field("items", _ITEMS_TYPE),  # null unless recommendation
        pa.field("error", pa.string()),  # null unless recommendation with status != 200
        pa.field("response_time_ms", pa.int32()),  # null unless recommendation
        pa.field("partition", pa.int32()),  # Kafka partition
        pa.field("offset", pa.int64()),  # Kafka offset
    ]
)
"""The exact columns and types of an event-store row."""


class EventColumns:
    """Accumulates events column by column; ``to_table()`` builds the batch's Arrow table.

    The four columns every kind has (time, user, partition, offset) and the kind code are
    lists in arrival order. A column that applies to only some kinds (movie id, minute,
    rating, the recommendation fields) is a list of just those kinds' values, in arrival
    order; ``to_table`` scatters it into place and fills the other rows with null in C.
    That halves the appends per watch line against filling ``None`` into all 13 lists:
    on the benchmark mix (benchmarks/event_store.py) that first version took about
    2.0 us/row for add + to_table, this one about 0.75 us. Row order is arrival order.

    Not thread-safe. ``to_table()`` does not clear the builder; call ``clear()`` (or make a
    new builder) for the next batch.
    """

    __slots__ = (
        "_kind", "_time", "_user", "_partition", "_offset", "_movie", "_minute",
        "_rating", "_server", "_status", "_items", "_error", "_rt",
    )  # fmt: skip

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every row added so far."""
        self._kind: list[int] = []  # code into KINDS, every row
        self._time: list[datetime] = []  # every row
        self._user: list[int] = []  # every row
        self._partition: list[int] = []  # every row
        self._offset: list[int] = []  # every row
        self._movie: list[str] = []  # watch and rate rows
        self._minute: list[int] = []  # watch rows
        self._rating: list[int] = []  # rate rows
        self._server: list[str] = []  # recommendation rows, and the four below
        self._status: list[int] = []
        self._items: list[tuple[str, ...]] = []
        self._error: list[str | None] = []
        self._rt: list[int] = []

    def __len__(self) -> int:
        return len(self._offset)

    def add(self, event: Watch | Rate | Recommendation | Account, partition: int, offset: int) -> None:
        """One accepted event, read from Kafka ``partition`` at ``offset``.

        Raises ``TypeError`` for anything that is not one of the four wire events (and
        then adds nothing).
        """
        if type(event) is Watch:
            self._kind.append(0)
            self._movie.append(event.movie_id)
            self._minute.append(event.minute)
        elif type(event) is Rate:
            self._kind.append(1)
            self._movie.append(event.movie_id)
            self._rating.append(event.rating)
        elif type(event) is Recommendation:
            status = event.status
            self._kind.append(2)
            self._server.append(event.server)
            self._status.append(status)
            self._items.append(event.items)
            self._error.append(None if status == 200 else event.error)
            self._rt.append(event.response_time_ms)
        elif type(event) is Account:
            self._kind.append(3)
        else:
            raise TypeError(f"not a wire event: {type(event).__name__}")
        self._time.append(event.time)
        self._user.append(event.user_id)
        self._partition.append(partition)
        self._offset.append(offset)

    def to_table(self) -> pa.Table:
        """The rows added so far, in arrival order, as a table with exactly ``SCHEMA``.

        Raises ``ValueError`` (or a pyarrow subclass of it) when a value does not fit its
        column type, e.g. a minute above 32767, which the wire parser already prevents.
        """
        kinds = np.array(self._kind, dtype=np.int8)
        watch, rate, reco = _places(kinds == 0), _places(kinds == 1), _places(kinds == 2)
        movie = _places((kinds == 0) | (kinds == 1))
        columns = [
            _ms_timestamps(self._time),
            pa.DictionaryArray.from_arrays(pa.array(kinds), _KIND_DICTIONARY),
            pa.array(self._user, pa.int64()),
            _scatter(self._movie, pa.string(), movie),
            _scatter(self._minute, pa.int16(), watch),
            _scatter(self._rating, pa.int8(), rate),
            _scatter(self._server, pa.string(), reco),
            _scatter(self._status, pa.int16(), reco),
            _scatter(self._items, _ITEMS_TYPE, reco),
            _scatter(self._error, pa.string(), reco),
            _scatter(self._rt, pa.int32(), reco),
            pa.array(self._partition, pa.int32()),
            pa.array(self._offset, pa.int64()),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)


def watch_table(ms: np.ndarray, users: np.ndarray, movies: pa.Array, minutes: np.ndarray,
                partitions: np.ndarray, offsets: np.ndarray) -> pa.Table:
    """Watch rows given as columns (the consumer's columnar path) as a ``SCHEMA`` table:
    the rows ``EventColumns.add`` would build from the same watches. ``ms``: epoch ms."""
    n = len(ms)
    kinds = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int8)), _KIND_DICTIONARY)
    columns = [
        pa.array(ms, pa.int64()).cast(_TIME_TYPE),
        kinds,
        pa.array(users, pa.int64()),
        movies.cast(pa.string()),
        pa.array(minutes, pa.int16()),
        pa.nulls(n, pa.int8()),
        pa.nulls(n, pa.string()),
        pa.nulls(n, pa.int16()),
        pa.nulls(n, _ITEMS_TYPE),
        pa.nulls(n, pa.string()),
        pa.nulls(n, pa.int32()),
        pa.array(partitions, pa.int32()),
        pa.array(offsets, pa.int64()),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _ms_timestamps(times: list[datetime]) -> pa.Array:
    """Naive datetimes -> timestamp[ms], truncating sub-millisecond digits.

    pandas' datetime parser is ~4x faster than ``pa.array(times, timestamp("ms"))`` on
    Python datetimes (about 90 ns against 360 ns per value here).
    """
    micros = pd.DatetimeIndex(times, dtype="datetime64[us]")
    if micros.hasnans:
        raise ValueError("event time must not be null")
    millis = micros.asi8 // 1000  # floor: never rounds an event into the next day
    return pa.array(millis, pa.int64()).cast(_TIME_TYPE)


def _places(where: np.ndarray) -> pa.Array | None:
    """For each row, the index of its value among the selected rows (null if not selected);
    None when every row is selected."""
    if where.all():
        return None
    indices = np.cumsum(where, dtype=np.int32) - 1
    indices[~where] = 0  # masked below; any in-range value keeps take() happy
    return pa.array(indices, mask=~where)


def _scatter(values: list, typ: pa.DataType, places: pa.Array | None) -> pa.Array:
    """A full-length column: ``values`` (one per selected row, in order) put in ``places``."""
    compact = pa.array(values, typ)
    return compact if places is None else compact.take(places)


def event_row(event: Watch | Rate | Recommendation | Account, partition: int, offset: int) -> dict:
    """One event as a row dict with every ``SCHEMA`` column: the slow, obvious reference.

    Used by the benchmark's ``pa.Table.from_pylist`` baseline and by tests as an oracle
    for ``EventColumns``.
    """
    row = dict.fromkeys(SCHEMA.names)
    row.update(time=event.time, kind=event.kind, user_id=event.user_id, partition=partition, offset=offset)
    if isinstance(event, Watch):
        row.update(movie_id=event.movie_id, minute=event.minute)
    elif isinstance(event, Rate):
        row.update(movie_id=event.movie_id, rating=event.rating)
    elif isinstance(event, Recommendation):
        row.update(
            server=event.server,
            status=event.status,
            items=list(event.items),
            error=None if event.status == 200 else event.error,
            response_time_ms=event.response_time_ms,
        )
    elif not isinstance(event, Account):
        raise TypeError(f"not a wire event: {type(event).__name__}")
    return row


# -- whole-table operations of the store ----------------------------------------------------


def check_batch(table: pa.Table) -> pa.Table:
    """``table`` without metadata, if it has exactly ``SCHEMA`` and no null keys."""
    if not isinstance(table, pa.Table):
        raise EventStoreError(f"append takes a pyarrow.Table, not {type(table).__name__}")
    table = table.replace_schema_metadata(None)
    if not table.schema.equals(SCHEMA):
        got = ", ".join(f"{f.name}: {f.type}" for f in table.schema)
        raise EventStoreError(f"batch schema differs from the event-store SCHEMA; got [{got}]")
    for name in ("time", "kind", "user_id", "partition", "offset"):
        if table[name].null_count:
            raise EventStoreError(f"batch has {table[name].null_count} null value(s) in {name!r}")
    for chunk in table["kind"].chunks:
        if not set(chunk.dictionary.to_pylist()) <= _KIND_SET:  # else look at the values used
            bad = set(pc.unique(chunk.cast(pa.string())).to_pylist()) - _KIND_SET
            if bad:
                raise EventStoreError(f"batch has unknown kind(s) {sorted(bad)}; the kinds are {list(KINDS)}")
    return table


def normalise(table: pa.Table) -> pa.Table:
    """A table read back from Parquet with ``SCHEMA``'s types, and ``kind`` re-encoded on
    the one dictionary ``KINDS`` (Parquet keeps only the values a file used, in its own
    order), so every read gives the same categories in the same order."""
    table = table.cast(pa.schema([SCHEMA.field(name) for name in table.column_names]))
    if "kind" not in table.column_names:
        return table
    names = table["kind"].cast(pa.string())
    codes = pc.index_in(names, value_set=_KIND_DICTIONARY).cast(pa.int8())
    kind = pa.chunked_array(
        [pa.DictionaryArray.from_arrays(chunk, _KIND_DICTIONARY) for chunk in codes.chunks],
        SCHEMA.field("kind").type,
    )
    return table.set_column(table.column_names.index("kind"), SCHEMA.field("kind"), kind)


_MASKED = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype()}
_NULLABLE_INTS = ("minute", "rating", "status", "response_time_ms")


def to_frame(table: pa.Table) -> pd.DataFrame:
    """``table`` as a DataFrame; the nullable integer columns as pandas masked integers
    (not float64 with NaN), the never-null ones as plain numpy integers."""
    masked = [name for name in _NULLABLE_INTS if name in table.column_names]
    frame = table.drop_columns(masked).to_pandas()
    for name in masked:
        frame.insert(table.column_names.index(name), name, table[name].to_pandas(types_mapper=_MASKED.get))
    return frame


def column_values(table: pa.Table, name: str) -> np.ndarray:
    """A non-null numeric or timestamp column as a numpy array (int64 for timestamps)."""
    values = table[name].to_numpy()
    return values.view(np.int64) if values.dtype.kind == "M" else values


def dedupe(table: pa.Table, *, sort: bool) -> pa.Table:
    """Keep the first row of each (partition, offset); if ``sort``, order by
    (time, partition, offset), else keep the input order."""
    parts, offs = column_values(table, "partition"), column_values(table, "offset")
    if not sort and _increasing_per_partition(parts, offs):
        return table  # the consumer's batches: nothing to do, no sort paid
    order = np.lexsort((offs, parts))  # stable: among equal keys the earliest row first
    sp, so = parts[order], offs[order]
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (sp[1:] == sp[:-1]) & (so[1:] == so[:-1])
    keep = order[~repeat]
    if sort:
        times = column_values(table, "time")
        keep = keep[np.lexsort((offs[keep], parts[keep], times[keep]))]
    else:
        keep.sort()
    return table.take(pa.array(keep))


def _increasing_per_partition(parts: np.ndarray, offs: np.ndarray) -> bool:
    for p in np.unique(parts):
        mine = offs[parts == p]
        if len(mine) > 1 and not (np.diff(mine) > 0).all():
            return False
    return True
