"""One polled batch turned into what must be made durable: pure, no I/O.

``fold`` takes a batch's Kafka records and returns its ``Folded`` effects: the feature
delta for Redis, the event-store table, the dead letters, the accepted events for the
drift monitor, and counts. The consumer (stream_consumer.consumer) then writes them.

Two paths give the same effects (tests/unit/test_batch.py checks them against each
other on generated streams with every kind of bad line); only the order of entries in
the delta's dicts and identity lists differs, which no merge depends on (maxima,
latest-by-time, sets and HyperLogLogs are order-free):
- line by line: ``LineParser.parse``, ``Validator.check``, ``FeatureDelta.add``,
  ``EventColumns.add``: about 10 us a line, over half of it building ``Watch`` and
  ``datetime`` objects;
- columnar, the default: canonical watch lines (over 99% of the log) are parsed a batch
  at a time in Arrow (movierec.wire_batch), checked and folded in numpy, and only the
  other lines go line by line. Every check judges a line alone (its film's runtime, its
  Kafka record's timestamp: ``Validator``), so the checks are vectorised too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from operator import attrgetter
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from movierec.wire import Event, LineParser, Rejection
from movierec.wire_batch import WatchColumns, parse_watches
from stores.event_columns import EventColumns, watch_table
from stores.feature_delta import EPOCH, FeatureDelta, epoch_ms
from stream_consumer.dlq import dead_letter
from stream_consumer.validate import Check, Validator

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord

    from stream_consumer.drift_monitor import Accepted

_PARTITION, _OFFSET, _TIMESTAMP = attrgetter("partition"), attrgetter("offset"), attrgetter("timestamp")


@dataclass
class Folded:
    """A batch's effects. ``accepted``: events in arrival order for the drift monitor
    (canonical watches as ``(time, user_id, movie_id, minute)`` tuples on the columnar
    path); ``table``: the event-store rows, None when none was accepted; ``dead``:
    dead-letter records; ``oldest_ms``/``newest_ms``: the oldest and newest Kafka
    timestamps."""

    lines: int = 0
    delta: FeatureDelta = field(default_factory=FeatureDelta)
    table: pa.Table | None = None
    accepted: list[Accepted] = field(default_factory=list)
    dead: list[bytes] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    oldest_ms: int | None = None
    newest_ms: int | None = None


class BatchFolder:
    """Holds the parser and the validator (the stream's clock) across batches."""

    def __init__(self, parser: LineParser, validator: Validator, *, columnar: bool = True) -> None:
        self.parser, self.validator, self.columnar = parser, validator, columnar

    def fold(self, records: list) -> Folded:
        """``records``: kafka-python ConsumerRecords (topic, partition, offset, timestamp,
        value) in arrival order."""
        out = Folded(lines=len(records))
        if not records:
            return out
        out.oldest_ms = min(map(_TIMESTAMP, records))
        out.newest_ms = max(map(_TIMESTAMP, records))
        values = [r.value if r.value is not None else b"" for r in records]
        fast = parse_watches(values) if self.columnar else None
        if fast is None or len(fast) == 0:
            self._line_by_line(records, values, out)
            return out
        self._columnar(records, values, fast, out)
        return out

    # -- line by line ------------------------------------------------------------------

    def _line_by_line(self, records: list, values: list[bytes], out: Folded) -> None:
        parse, check = self.parser.parse, self.validator.check
        columns = EventColumns()
        for record, raw in zip(records, values, strict=True):
            event = parse(raw)
            if isinstance(event, Rejection):
                self._reject(record, raw, event, out)
            elif (problem := check(event, record.timestamp)) is not None:
                self._reject(record, raw, problem, out)
            else:
                self._accept(record, raw, event, columns, out)
        if len(columns):
            out.table = columns.to_table()

    @staticmethod
    def _accept(record: ConsumerRecord, raw: bytes, event: Event, columns: EventColumns,
                out: Folded) -> None:
        """An accepted line: into delta, columns and ``accepted``."""
        out.delta.add(event, raw)
        columns.add(event, record.partition, record.offset)
        out.accepted.append(event)
        out.kinds[event.kind] += 1

    @staticmethod
    def _reject(record: ConsumerRecord, raw: bytes, problem: Rejection | tuple[Check, str],
                out: Folded) -> None:
        """A line that is not accepted: counted by reason, and a dead letter."""
        if isinstance(problem, Rejection):
            reason, detail = problem.reason.value, problem.detail
        else:
            reason, detail = problem[0].value, problem[1]
        out.rejected[reason] += 1
        out.dead.append(dead_letter(raw, reason=reason, detail=detail, topic=record.topic,
                                    partition=record.partition, offset=record.offset,
                                    timestamp_ms=record.timestamp))

    # -- columnar ----------------------------------------------------------------------

    def _columnar(self, records: list, values: list[bytes], fast: WatchColumns, out: Folded) -> None:
        is_fast = np.zeros(len(records), dtype=bool)
        is_fast[fast.rows] = True
        slow_rows = np.flatnonzero(~is_fast).tolist()
        parse = self.parser.parse
        slow = {i: parse(values[i]) for i in slow_rows}
        events = {i: e for i, e in slow.items() if not isinstance(e, Rejection)}
        encoded = fast.movies.dictionary_encode()
        movies = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        fast_ok, problems = self._decide(records, values, fast, movies, codes, events)

        # Accepted fast watches, folded as columns first (into an empty delta: fastest).
        good = fast.take(fast_ok)
        good_codes = codes[fast_ok]
        rows = good.rows
        row_list = rows.tolist()
        out.delta.add_watches(good.users, good_codes, movies, good.minutes, good.ms,
                              [values[i] for i in row_list])
        partitions = np.fromiter(map(_PARTITION, records), dtype=np.int32, count=len(records))
        offsets = np.fromiter(map(_OFFSET, records), dtype=np.int64, count=len(records))
        table = watch_table(good.ms, good.users, good.movies, good.minutes, partitions[rows], offsets[rows])
        if len(good):
            out.kinds["watch"] += len(good)

        # Then the lines the fast path did not accept, in arrival order.
        columns = EventColumns()
        accepted_at: list[int] = []
        slow_accepted: list[Event] = []
        for row in sorted(set(slow_rows) | set(fast.rows[~fast_ok].tolist())):
            event = events[row] if row in events else slow[row]
            if isinstance(event, Rejection):
                self._reject(records[row], values[row], event, out)
            elif (problem := problems[row]) is not None:
                self._reject(records[row], values[row], problem, out)
            else:
                self._accept(records[row], values[row], event, columns, out)
                accepted_at.append(row)
                slow_accepted.append(event)
        if len(columns):
            table = pa.concat_tables([table, columns.to_table()])
            table = table.take(pa.array(np.argsort(np.array(row_list + accepted_at), kind="stable")))
        out.table = table if table.num_rows else None
        out.accepted = _in_order(good, movies, good_codes, accepted_at, slow_accepted)

    def _parse_fast(self, raw: bytes) -> Event:
        """The event of a fast-path row: ``parse_watches`` takes only lines that ``parse``
        accepts (a strict subset, tested against it), so never a Rejection."""
        event = self.parser.parse(raw)
        assert not isinstance(event, Rejection), event
        return event

    def _decide(self, records: list, values: list[bytes], fast: WatchColumns, movies: list[str],
                codes: np.ndarray, events: dict[int, Event],
                ) -> tuple[np.ndarray, dict[int, tuple[Check, str] | None]]:
        """The checks, as ``check`` makes them: which fast rows pass (a mask) and each
        other event's problem (None when accepted); then the clock. Every check judges a
        line alone (its runtime, its record's timestamp), so the fast rows are judged in
        columns. Adds the fast rows it had to parse (rejected ones, for their detail) to
        ``events``."""
        written = np.fromiter(map(_TIMESTAMP, records), dtype=np.int64, count=len(records))
        fast_ok = ((fast.minutes <= self.validator.runtime_limits(movies)[codes])
                   & (fast.ms <= self.validator.time_limits(written)[fast.rows]))
        problems = {i: self.validator.future(e, int(written[i])) or self.validator.problem(e)
                    for i, e in events.items()}
        for k in np.flatnonzero(~fast_ok).tolist():  # rare: build the event for its detail
            row = int(fast.rows[k])
            event = events[row] = self._parse_fast(values[row])
            problems[row] = self.validator.future(event, int(written[row])) or self.validator.problem(event)
        # The clock: the exact latest accepted time (the floored ms may tie; the exact
        # times of the tied rows decide).
        at = np.concatenate([fast.rows, np.fromiter(events, dtype=np.int64, count=len(events))])
        ms = np.concatenate([fast.ms, np.array([epoch_ms(e.time) for e in events.values()], dtype=np.int64)])
        ok = np.concatenate([fast_ok, np.array([problems[i] is None for i in events], dtype=bool)])
        if ok.any():
            top = ms[ok].max()
            tied = at[ok & (ms == top)].tolist()
            self.validator.settle(max((events[row] if row in events else self._parse_fast(values[row])).time
                                      for row in tied))
        return fast_ok, problems


def _in_order(good: WatchColumns, movies: list[str], codes: np.ndarray,
              accepted_at: list[int], slow_accepted: list[Event]) -> list[Accepted]:
    """The accepted events in arrival order for the drift monitor; the fast watches as
    ``(time, user_id, movie_id, minute)`` tuples, times floored to ms (drift reads only
    buckets and ms). A ``Watch`` each would cost ~0.6 us a line to build."""
    # A batch spans minutes of event time at one-second stamps: build each distinct
    # time's datetime once.
    distinct, where = np.unique(good.ms, return_inverse=True)
    stamps = [EPOCH + timedelta(milliseconds=t) for t in distinct.tolist()]
    names = [movies[c] for c in codes.tolist()]
    watches: list[Accepted] = list(zip([stamps[w] for w in where.tolist()], good.users.tolist(), names,
                       good.minutes.tolist(), strict=True))
    if not slow_accepted:
        return watches
    merged: list[Accepted] = []
    done = 0
    for place, event in zip(np.searchsorted(good.rows, accepted_at).tolist(), slow_accepted, strict=True):
        merged += watches[done:place]
        merged.append(event)
        done = place
    merged += watches[done:]
    return merged
