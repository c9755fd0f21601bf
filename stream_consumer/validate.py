"""Checks that need context beyond one line: the movie's runtime, the stream's clock,
the size of a served list. Pure; the consumer supplies the context.

The parser (movierec.wire) rejects what is malformed in itself; these reject what is
impossible given what we know: a minute past the runtime (plus slack), an event far
ahead of the stream's own clock, a "successful" answer with more than 20 ids.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np

from movierec.wire import MAX_ITEMS, Event, Recommendation, Watch
from stores.feature_delta import epoch_ms


class Check(enum.StrEnum):
    """Rejection reasons of the consumer's own checks (the parser's are wire.Reason)."""

    MINUTE_BEYOND_RUNTIME = "minute_beyond_runtime"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_MANY_ITEMS = "too_many_items"


class Validator:
    """Per-consumer state: the stream's clock (the latest accepted event time).

    The clock comes from the stream, not the wall: simulated and replayed streams run
    on their own time. An event more than ``future_tolerance`` ahead of it is rejected
    and does not move it; but after ``jump_after`` such events in a row the stream has
    truly jumped (a replay of a later period), and the clock follows.
    """

    def __init__(self, *, runtime_of: Callable[[str], int | None], runtime_slack_min: int = 10,
                 future_tolerance: timedelta = timedelta(hours=6), jump_after: int = 1000) -> None:
        self.runtime_of = runtime_of
        self.slack = runtime_slack_min
        self.tolerance = future_tolerance
        self.jump_after = jump_after
        self.clock: datetime | None = None
        self._ahead = 0

    def problem(self, event: Event) -> tuple[Check, str] | None:
        """The checks that need no clock: (reason, detail), or None."""
        if isinstance(event, Watch):
            runtime = self.runtime_of(event.movie_id)
            if runtime is not None and event.minute > runtime + self.slack:
                return Check.MINUTE_BEYOND_RUNTIME, f"minute {event.minute} of a {runtime}-minute film"
        elif isinstance(event, Recommendation) and len(event.items) > MAX_ITEMS:
            return Check.TOO_MANY_ITEMS, f"{len(event.items)} ids, at most {MAX_ITEMS}"
        return None

    def check(self, event: Event) -> tuple[Check, str] | None:
        """None if the event is plausible, else (reason, detail)."""
        when = event.time
        if self.clock is not None and when > self.clock + self.tolerance:
            self._ahead += 1
            if self._ahead < self.jump_after:
                return Check.FUTURE_TIMESTAMP, f"{when.isoformat()} is ahead of {self.clock.isoformat()}"
            self.clock = when  # the stream itself moved on
        self._ahead = 0
        problem = self.problem(event)
        if problem is not None:
            return problem
        if self.clock is None or when > self.clock:
            self.clock = when
        return None

    # -- a batch at a time (the consumer's columnar path) ---------------------------------

    def runtime_limits(self, movies: list[str]) -> np.ndarray:
        """The highest plausible minute of each movie (int64; a huge value when the
        runtime is unknown): ``minutes > limits`` is the runtime check, vectorised."""
        limits = np.full(len(movies), np.iinfo(np.int64).max, dtype=np.int64)
        for i, movie in enumerate(movies):
            runtime = self.runtime_of(movie)
            if runtime is not None:
                limits[i] = runtime + self.slack
        return limits

    def none_ahead(self, ms: np.ndarray, static_ok: np.ndarray) -> bool:
        """Whether ``check`` over a batch of events, in order, with event times ``ms``
        (epoch ms, floored) would find none ahead of the clock; ``static_ok`` marks the
        events that pass ``problem``. If so, ``check`` accepts exactly the ``static_ok``
        events and the caller may skip it, then call ``settle``.

        The clock before event i is the latest accepted time before it: the running
        maximum of the accepted times (np.maximum.accumulate). A margin of 1 ms covers
        the sub-millisecond digits ``ms`` floors, so "True" is never wrong; a batch
        within 1 ms of the tolerance goes through ``check`` one by one.
        """
        if len(ms) == 0:
            return True
        accepted = np.where(static_ok, ms, np.iinfo(np.int64).min)
        before = np.empty_like(accepted)
        before[0] = np.iinfo(np.int64).min
        np.maximum.accumulate(accepted[:-1], out=before[1:])
        if self.clock is not None:
            np.maximum(before, epoch_ms(self.clock), out=before)
        seen = before > np.iinfo(np.int64).min
        limit = before[seen] + (self.tolerance // timedelta(milliseconds=1)) - 1
        return not bool(np.any(ms[seen] > limit))

    def settle(self, latest: datetime | None) -> None:
        """After a batch ``none_ahead`` cleared: what ``check`` would have left, given
        the exact latest accepted event time (None if none was accepted)."""
        self._ahead = 0
        if latest is not None and (self.clock is None or latest > self.clock):
            self.clock = latest

