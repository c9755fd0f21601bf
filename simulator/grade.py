"""The grader probe's core: the numbers the MLiP course grades, from recommendation events.

The course grades a team's service from the recommendation lines of its Kafka log
(../shared/mlip-interface.md, section 2): at least 2,000 successful requests in 24 h, at
least 10 % of all requests answered with personalized lists, and availability of at least
70 % over 7 days (bonus: 99 %). A *success* is status 200, a well-formed list of at most 20
movie ids, answered within the deadline (600 ms; 800 ms in older offerings).

``GradeAccumulator`` is pure (no I/O): feed it log lines or ``Recommendation`` events, in
any order, then ask for a ``GradeReport`` (JSON via ``to_dict``, a table via
``format_table``). The Kafka reader and the live HTTP probe in ``grade_probe`` both feed
it, so they share all the arithmetic. Memory is bounded for logs of millions of lines:
per-minute counters, per-hour list counters for the open hours only (older hours shrink
to three numbers), a capped set of list fingerprints and a fixed-size latency reservoir.

Definitions (a request counts in the minute and the clock hour of its event time):

- *late*: a 200 with a well-formed list over the deadline. An empty list is well-formed,
  as in ``wire.parse_answer``.
- *malformed*: a 200 line whose result is not a list of ids (the parser rejects it with
  ``bad_result``), more than 20 ids, or a failure whose text starts with "malformed".
  Other failures go by their text: timeout, refused, http_error (status not 0), other.
- *personalized*: a success whose list differs from the most common successful list of
  its clock hour; a list is "the common one" only if it was served at least twice that
  hour. The share is over all requests, like the course's ">= 10 % of all requests".
- *availability*: a minute with at least one request is down when its success share is
  below ``down_threshold`` (0.5); availability = 1 - down / observed minutes, and
  consecutive down minutes merge into downtime intervals. Request availability is
  successes / requests.
- *latency*: p50/p95/p99 by nearest rank (the ceil(p/100 * n)-th smallest response time)
  over every request; exact up to ``RESERVOIR_SIZE`` requests, beyond that over a uniform
  reservoir sample of that size (seeded: reproducible). The max is always exact.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import datetime, timedelta

from movierec.grading import (  # the rules themselves: shared with online_eval.live
    CATEGORIES,
    DEFAULT_DEADLINE_MS,
    DEFAULT_DOWN_THRESHOLD,
    classify,
    minute_down,
)
from movierec.wire import LineParser, Reason, Recommendation, Rejection
from simulator.grade_report import Downtime, GradeReport

RESERVOIR_SIZE = 100_000
DISTINCT_LISTS_CAP = 200_000
OPEN_HOURS = 2

_RECO_MARK = ",recommendation request "
_STATUS_200 = ", status 200, result:"
_AS_FAILURE = ", status 0, result: malformed answer:"
_MINUTE = timedelta(minutes=1)


def nearest_rank(ordered: list[int], percent: float) -> int | None:
    """The nearest-rank percentile of an ascending list: the ceil(p/100 * n)-th value."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def downtime_intervals(down: list[datetime]) -> list[Downtime]:
    """Merge down minutes (minute starts) that follow each other into intervals."""
    intervals: list[Downtime] = []
    for minute in sorted(down):
        last = intervals[-1] if intervals else None
        if last is not None and last.end == minute:
            intervals[-1] = Downtime(last.start, minute + _MINUTE, last.minutes + 1)
        else:
            intervals.append(Downtime(minute, minute + _MINUTE, 1))
    return intervals


class _Reservoir:
    """Up to ``size`` latency samples, uniform over all seen (algorithm R, seeded)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.samples: list[int] = []
        self.seen = 0
        self.max: int | None = None
        self._rng = random.Random(seed)

    def add(self, value: int) -> None:
        self.seen += 1
        if self.max is None or value > self.max:
            self.max = value
        if len(self.samples) < self.size:
            self.samples.append(value)
        else:
            slot = self._rng.randrange(self.seen)
            if slot < self.size:
                self.samples[slot] = value


class _HourLists:
    """Counts of successful lists per hour, to tell personalized answers from the common one.

    Lists are kept as fingerprints (``hash`` of the id tuple). Only the newest
    ``open_hours`` hours keep a full Counter; an older hour shrinks to
    ``[n, top_count, top_key]``, and a late event for it is counted against that top list
    only: results are exact unless an event comes after events ``open_hours`` or more clock
    hours later (the log is near time order; the staff reorder a few lines).
    """

    def __init__(
        self, open_hours: int = OPEN_HOURS, distinct_cap: int = DISTINCT_LISTS_CAP
    ) -> None:
        self._open_hours = open_hours
        self._open: dict[datetime, Counter[int]] = {}
        self._closed: dict[datetime, list[int]] = {}
        self._newest: datetime | None = None
        self._distinct: set[int] = set()
        self._distinct_cap = distinct_cap
        self.distinct_capped = False

    def add(self, hour: datetime, items: tuple[str, ...]) -> None:
        key = hash(items)
        if len(self._distinct) < self._distinct_cap:
            self._distinct.add(key)
        elif key not in self._distinct:
            self.distinct_capped = True
        closed = self._closed.get(hour)
        if closed is not None:
            closed[0] += 1
            closed[1] += key == closed[2]
            return
        self._open.setdefault(hour, Counter())[key] += 1
        if self._newest is None or hour > self._newest:
            self._newest = hour
            limit = hour - timedelta(hours=self._open_hours - 1)
            for old in [h for h in self._open if h < limit]:
                counter = self._open.pop(old)
                top_key, top = counter.most_common(1)[0]
                self._closed[old] = [counter.total(), top, top_key]

    @property
    def distinct(self) -> int:
        return len(self._distinct)

    def personalized(self) -> int:
        """Successes whose list is not its hour's most common list (if served twice or more)."""
        summaries = [(c.total(), max(c.values())) for c in self._open.values()]
        summaries += [(n, top) for n, top, _ in self._closed.values()]
        return sum(n - (top if top > 1 else 0) for n, top in summaries)


class GradeAccumulator:
    """Counts what the course grades; feed it with ``add_line`` or ``add``, then ``report``.

    ``deadline_ms``: a 200 answer slower than this is late. ``server`` (``host:port``),
    ``start`` (inclusive) and ``end`` (exclusive) select requests; others are counted in
    ``filtered_out``. A minute is down when its success share is below ``down_threshold``.
    """

    def __init__(
        self,
        *,
        deadline_ms: int = DEFAULT_DEADLINE_MS,
        server: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        down_threshold: float = DEFAULT_DOWN_THRESHOLD,
        reservoir_size: int = RESERVOIR_SIZE,
        seed: int = 0,
        parser: LineParser | None = None,
    ) -> None:
        self.deadline_ms = deadline_ms
        self.server = server
        self.start = start
        self.end = end
        self.down_threshold = down_threshold
        self.other_lines = 0
        self.filtered_out = 0
        self._parser = parser or LineParser()
        self._outcomes: Counter[str] = Counter()
        self._answered_in_time = 0
        self._minutes: dict[datetime, list[int]] = {}  # minute -> [requests, successes]
        self._lists = _HourLists()
        self._latency = _Reservoir(reservoir_size, seed)
        self._first: datetime | None = None
        self._last: datetime | None = None

    def add_line(self, raw: bytes | str) -> None:
        """One log line. A 200 line whose result is not a list of ids counts as a malformed
        answer; lines of other kinds and other rejected lines count in ``other_lines``."""
        parsed = self._parser.parse(raw)
        if isinstance(parsed, Rejection) and parsed.reason is Reason.BAD_RESULT:
            parsed = self._as_failure(raw) or parsed
        if isinstance(parsed, Recommendation):
            self.add(parsed)
        else:
            self.other_lines += 1

    def _as_failure(self, raw: bytes | str) -> Recommendation | None:
        """Re-read a 200 line with a bad result as the status-0 line "malformed answer: ...",
        so the shared parser still gives its time, user, server and response time."""
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
        text = text.rstrip("\r\n")
        if _RECO_MARK not in text or _STATUS_200 not in text:
            return None
        text = "".join(c if c.isprintable() else "?" for c in text)
        again = self._parser.parse(text.replace(_STATUS_200, _AS_FAILURE, 1))
        return again if isinstance(again, Recommendation) else None

    def add(self, event: Recommendation) -> None:
        """One recommendation request, as the course's client logged it."""
        when = event.time
        if (
            (self.server is not None and event.server != self.server)
            or (self.start is not None and when < self.start)
            or (self.end is not None and when >= self.end)
        ):
            self.filtered_out += 1
            return
        outcome = classify(event, self.deadline_ms)
        success = outcome == "success"
        self._outcomes[outcome] += 1
        in_time = event.response_time_ms <= self.deadline_ms
        if in_time and (event.status == 200 or outcome == "malformed"):
            self._answered_in_time += 1
        bucket = self._minutes.setdefault(when.replace(second=0, microsecond=0), [0, 0])
        bucket[0] += 1
        bucket[1] += success
        if success:
            self._lists.add(when.replace(minute=0, second=0, microsecond=0), event.items)
        self._latency.add(event.response_time_ms)
        if self._first is None or when < self._first:
            self._first = when
        if self._last is None or when > self._last:
            self._last = when

    def report(self, notes: list[str] | None = None) -> GradeReport:
        """The numbers so far (the accumulator stays usable)."""
        total = sum(self._outcomes.values())
        successes = self._outcomes["success"]
        down = [m for m, (n, ok) in self._minutes.items()
                if minute_down(n, ok, self.down_threshold)]
        ordered = sorted(self._latency.samples)
        first, last = self._first, self._last
        span_h = (last - first).total_seconds() / 3600 if first and last else 0.0
        return GradeReport(
            deadline_ms=self.deadline_ms,
            down_threshold=self.down_threshold,
            server=self.server,
            window_start=self._first,
            window_end=self._last,
            window_hours=span_h,
            total_requests=total,
            successful=successes,
            failed={c: self._outcomes[c] for c in CATEGORIES},
            success_share=_share(successes, total),
            answered_within_deadline=self._answered_in_time,
            within_deadline_share=_share(self._answered_in_time, total),
            personalized=self._lists.personalized(),
            personalized_share=_share(self._lists.personalized(), total),
            distinct_lists=self._lists.distinct,
            distinct_lists_capped=self._lists.distinct_capped,
            latency_ms={
                "p50": nearest_rank(ordered, 50),
                "p95": nearest_rank(ordered, 95),
                "p99": nearest_rank(ordered, 99),
                "max": self._latency.max,
            },
            latency_samples=len(ordered),
            observed_minutes=len(self._minutes),
            down_minutes=len(down),
            availability=_share(len(self._minutes) - len(down), len(self._minutes)),
            request_availability=_share(successes, total),
            downtime=downtime_intervals(down),
            successes_last_24h=self._successes_last_24h(),
            successes_per_24h=successes / span_h * 24 if span_h > 0 else None,
            other_lines=self.other_lines,
            filtered_out=self.filtered_out,
            notes=list(notes or []),
        )

    def _successes_last_24h(self) -> int:
        """Successes in the 1,440 minutes that end with the last event's minute."""
        if self._last is None:
            return 0
        cutoff = self._last.replace(second=0, microsecond=0) - timedelta(minutes=1439)
        return sum(ok for minute, (_, ok) in self._minutes.items() if minute >= cutoff)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


