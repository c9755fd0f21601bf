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

from movierec.wire import MAX_ITEMS, Event, Recommendation, Watch


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

    def check(self, event: Event) -> tuple[Check, str] | None:
        """None if the event is plausible, else (reason, detail)."""
        when = event.time
        if self.clock is not None and when > self.clock + self.tolerance:
            self._ahead += 1
            if self._ahead < self.jump_after:
                return Check.FUTURE_TIMESTAMP, f"{when.isoformat()} is ahead of {self.clock.isoformat()}"
            self.clock = when  # the stream itself moved on
        self._ahead = 0
        if isinstance(event, Watch):
            runtime = self.runtime_of(event.movie_id)
            if runtime is not None and event.minute > runtime + self.slack:
                return Check.MINUTE_BEYOND_RUNTIME, f"minute {event.minute} of a {runtime}-minute film"
        elif isinstance(event, Recommendation) and len(event.items) > MAX_ITEMS:
            return Check.TOO_MANY_ITEMS, f"{len(event.items)} ids, at most {MAX_ITEMS}"
        if self.clock is None or when > self.clock:
            self.clock = when
        return None
