"""Checks that need context beyond one line: the movie's runtime, when Kafka received the
line, the size of a served list. Pure; the consumer supplies the context.

The parser (movierec.wire) rejects what is malformed in itself; these reject what is
impossible given what we know: a minute past the runtime (plus slack), an event stamped
later than it can have happened, a "successful" answer with more than 20 ids.

**When is a time in the future?** The reference is the Kafka record's timestamp: when
the producer (CreateTime) or the broker (LogAppendTime) wrote the line. An event cannot
have happened after its line was written, so an event time more than ``ahead`` past its
record's timestamp is a bad clock. The log's times are site-local with no zone
(mlip-interface.md), so ``ahead`` is the most the site's zone may run ahead of UTC (14 h
anywhere on Earth, by default; the site's real offset tightens it) plus a tolerance for
clocks that drift (6 h by default).

Why not the stream's own past, as before: a stream's clock can only be the latest time it
has seen, so after any quiet gap longer than the tolerance (a night, an outage, a replay
of an old period) every valid line looked "ahead" until a run of them forced the clock to
follow; a real ratings log lost 24% of its lines that way. The record's timestamp does not
depend on what came before, so gaps, restarts and replays cost nothing, each line is
judged alone, and a batch is judged in one vectorised comparison. A record without a
timestamp (-1: an old message format) is judged against the time it was read instead
(``now_ms``): it cannot have been written later than that, so a line stamped past it is
as impossible, and cannot move the stream's clock into the future either.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from movierec.wire import MAX_ITEMS, Event, Recommendation, Watch
from stores.feature_delta import epoch_ms

NO_LIMIT = np.iinfo(np.int64).max


class Check(enum.StrEnum):
    """Rejection reasons of the consumer's own checks (the parser's are wire.Reason)."""

    MINUTE_BEYOND_RUNTIME = "minute_beyond_runtime"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_MANY_ITEMS = "too_many_items"


class Validator:
    """The checks, and the stream's clock: the latest accepted event time, which names the
    stream's current day (popularity is refreshed for the days before it). The clock never
    rejects anything."""

    def __init__(self, *, runtime_of: Callable[[str], int | None], runtime_slack_min: int = 10,
                 ahead: timedelta = timedelta(hours=14 + 6),
                 now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.runtime_of = runtime_of
        self.slack = runtime_slack_min
        self.ahead_ms = ahead // timedelta(milliseconds=1)
        self.now_ms = now_ms
        self.clock: datetime | None = None

    def problem(self, event: Event) -> tuple[Check, str] | None:
        """The checks that need no timestamp: (reason, detail), or None."""
        if isinstance(event, Watch):
            runtime = self.runtime_of(event.movie_id)
            if runtime is not None and event.minute > runtime + self.slack:
                return Check.MINUTE_BEYOND_RUNTIME, f"minute {event.minute} of a {runtime}-minute film"
        elif isinstance(event, Recommendation) and len(event.items) > MAX_ITEMS:
            return Check.TOO_MANY_ITEMS, f"{len(event.items)} ids, at most {MAX_ITEMS}"
        return None

    def future(self, event: Event, written_ms: int) -> tuple[Check, str] | None:
        """``FUTURE_TIMESTAMP`` when the event time (epoch ms, floored, its naive time read
        as UTC) is more than ``ahead`` past ``written_ms`` (the record's timestamp; < 0:
        unknown, and the time of reading, ``now_ms``, stands in)."""
        if written_ms < 0:
            written_ms = self.now_ms()
        if epoch_ms(event.time) <= written_ms + self.ahead_ms:
            return None
        written = datetime.fromtimestamp(written_ms / 1000, UTC).replace(tzinfo=None)
        hours = (event.time - written) / timedelta(hours=1)
        return (Check.FUTURE_TIMESTAMP,
                f"{event.time.isoformat()} is {hours:.1f} h after its line was written "
                f"({written.isoformat(timespec='seconds')} UTC)")

    def check(self, event: Event, written_ms: int) -> tuple[Check, str] | None:
        """None if the event is plausible (and the clock moves to it if later), else
        (reason, detail)."""
        problem = self.future(event, written_ms) or self.problem(event)
        if problem is None and (self.clock is None or event.time > self.clock):
            self.clock = event.time
        return problem

    # -- a batch at a time (the consumer's columnar path) ---------------------------------

    def runtime_limits(self, movies: list[str]) -> np.ndarray:
        """The highest plausible minute of each movie (int64; a huge value when the
        runtime is unknown): ``minutes > limits`` is the runtime check, vectorised."""
        limits = np.full(len(movies), NO_LIMIT, dtype=np.int64)
        for i, movie in enumerate(movies):
            runtime = self.runtime_of(movie)
            if runtime is not None:
                limits[i] = runtime + self.slack
        return limits

    def time_limits(self, written_ms: np.ndarray) -> np.ndarray:
        """The latest plausible event time (epoch ms, int64) of each record given its
        timestamp: ``ms > limits`` is ``future``, vectorised (unknown timestamps: the time
        of reading). A timestamp too large to add to saturates at ``NO_LIMIT``."""
        written = np.asarray(written_ms, dtype=np.int64)
        written = np.where(written < 0, self.now_ms(), written)
        return np.minimum(written, NO_LIMIT - self.ahead_ms) + self.ahead_ms

    def settle(self, latest: datetime | None) -> None:
        """After a batch judged in columns: the clock as ``check`` would have left it,
        given the exact latest accepted event time (None if none was accepted)."""
        if latest is not None and (self.clock is None or latest > self.clock):
            self.clock = latest
