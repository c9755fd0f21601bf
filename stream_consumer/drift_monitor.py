"""The live drift monitor: event-time buckets, a reference, a rolling current window.

The consumer calls ``observe_batch`` with each durable batch's accepted events and its
rejection counts; ``report`` compares the current window with the reference using the
statistics of ``stream_consumer.drift`` and the rows of ``stream_consumer.drift_report``.
See ``drift``'s module docstring for the features and the design.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from movierec.wire import Account, Event, Rate, Recommendation, Watch
from stream_consumer.drift import (
    _M64,
    _MS,
    DEFAULT_BUCKET,
    DEFAULT_SAMPLE,
    EPOCH,
    Basis,
    BucketCounts,
    Thresholds,
    WindowStats,
    _mix64,
    apportion,
    merge_all,
    reference_window,
)
from stream_consumer.drift_report import DriftReport, compare

WatchRow: TypeAlias = tuple[datetime, int, str, int]
"""A watch as the consumer's columnar path passes it: ``(time, user_id, movie_id, minute)``."""

Accepted: TypeAlias = Event | WatchRow
"""An accepted event as ``observe_batch`` takes it."""


class _Session:
    __slots__ = ("movie", "minutes", "bucket")

    def __init__(self, movie: str, bucket: int) -> None:
        self.movie, self.minutes, self.bucket = movie, 1, bucket


class _Bucket:
    """One held time bucket: raw counts and a bottom-k sample of the sessions it started
    (live records, so their length grows as later lines arrive)."""

    __slots__ = ("index", "counts", "sample", "_heap", "_k")

    def __init__(self, index: int, k: int) -> None:
        self.index, self.counts, self._k = index, BucketCounts(), k
        self.sample: dict[int, _Session] = {}
        self._heap: list[int] = []  # negated priorities: the largest kept is on top

    def offer(self, priority: int, session: _Session) -> None:
        if len(self.sample) < self._k:
            self.sample[priority] = session
            heapq.heappush(self._heap, -priority)
        elif priority < -self._heap[0]:
            del self.sample[-heapq.heapreplace(self._heap, -priority)]
            self.sample[priority] = session

    def sessions(self) -> dict[int, int]:
        return {p: s.minutes for p, s in self.sample.items()}


class DriftMonitor:
    """Rolling drift statistics of the live stream, fed one consumer batch at a time.

    Time is event time, cut into buckets of ``bucket`` (default 10 min, counted from
    1970-01-01). The reference is the first ``reference_buckets`` buckets from the first
    event seen (frozen automatically when an event of a later bucket arrives), or, with
    ``reference_buckets=None``, whatever has been seen when ``freeze_reference()`` is
    called. The current window is the last ``window_buckets`` buckets up to the newest
    bucket seen (the head). Events older than the held buckets are dropped and counted
    (``late_lines``). An event more than ``max_jump_buckets`` ahead of the head is dropped
    too (``ahead_lines``: one bad timestamp must not flush the window), unless the stream
    really moved on: either the wall clock says so (the batch's Kafka timestamp,
    ``written_ms``, is at least the jump limit past that of the last batch that filed an
    event: the stream was quiet that long, a night or an outage), or ``jump_after`` such
    events come with nothing in range in between (a replay racing through a gap). Then
    the head follows. Without the wall clock, a quiet stream (tens of lines an hour) would
    never reach ``jump_after`` and its drift statistics would stop at its first gap.

    Unknown users and movies: by default, those the basis (first half of the reference)
    never saw in an action. That suits small worlds; at the course's scale a 30-minute
    basis sees a few percent of a million users, so pass ``known_user``/``known_movie``
    (what the system knows, e.g. the enricher's or the feature store's), called once per
    action at observe time: an action is unknown when they answer False then.

    Memory: raw counts per held bucket (distinct users and movies of the bucket), one
    record per user with a session in a held bucket, ``sample_size`` sessions per bucket.
    Thread-safe: ``observe_batch`` and ``report`` may run on different threads.
    """

    def __init__(self, *, bucket: timedelta = DEFAULT_BUCKET, reference_buckets: int | None = 6,
                 window_buckets: int = 6, thresholds: Thresholds | None = None,
                 sample_size: int = DEFAULT_SAMPLE, seed: int = 0,
                 known_user: Callable[[int], bool] | None = None,
                 known_movie: Callable[[str], bool] | None = None,
                 max_jump_buckets: int | None = None, jump_after: int = 1000,
                 grace_buckets: int = 0) -> None:
        if bucket <= timedelta(0) or bucket % _MS:
            raise ValueError("bucket must be a positive whole number of milliseconds")
        if reference_buckets is not None and reference_buckets < 2:
            raise ValueError("reference_buckets must be >= 2 (half defines what is known) or None")
        if window_buckets < 1 or sample_size < 1 or jump_after < 1:
            raise ValueError("window_buckets, sample_size and jump_after must be >= 1")
        self.bucket, self.reference_buckets, self.window_buckets = bucket, reference_buckets, window_buckets
        self.thresholds = thresholds or Thresholds()
        self.sample_size, self.seed = sample_size, seed
        self.known_user, self.known_movie = known_user, known_movie
        self.max_jump_buckets = window_buckets if max_jump_buckets is None else max_jump_buckets
        self.jump_after = jump_after
        # Allowed lateness: a consumer of several partitions sees event times interleave
        # (one partition runs ahead while others catch up), so the reference freezes and
        # old buckets leave only ``grace_buckets`` behind the newest bucket seen.
        self.grace = grace_buckets
        self.late_lines = self.ahead_lines = 0
        self._written_ms: int | None = None       # this batch's newest Kafka timestamp
        self._last_written_ms: int | None = None  # that of the last batch that filed an event
        self._lock = threading.Lock()
        self._seed_key = _mix64(seed & _M64)
        self._start_fresh()

    def _start_fresh(self) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._open: dict[int, _Session] = {}  # user -> the user's latest session
        self._first: int | None = None        # first reference bucket
        self._head: int | None = None         # newest bucket seen
        self._ref_end: int | None = None      # set once frozen
        self._reference: WindowStats | None = None
        self.basis: Basis | None = None
        self._ahead = 0
        self._pending_rejections: Counter[str] = Counter()

    # -- state ---------------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        return self._ref_end is not None

    @property
    def reference(self) -> WindowStats | None:
        return self._reference

    def _time(self, index: int) -> datetime:
        return EPOCH + index * self.bucket

    # -- feeding -------------------------------------------------------------------------

    def observe_batch(self, events: Iterable[Accepted], rejections: Mapping[str, int] | None = None,
                      *, written_ms: int | None = None) -> None:
        """Fold one consumer batch: its accepted events in arrival order (``movierec.wire``
        Watch, Rate, Recommendation, Account, or a watch as a plain ``(time, user_id,
        movie_id, minute)`` tuple, which the consumer's columnar path passes instead of
        building a ``Watch``) and its rejected lines as reason -> count
        (wire.Reason values or the consumer's own check names). Rejected lines carry no
        trusted time: they are spread over the buckets of the batch's accepted events in
        proportion to those events (all under the newest bucket if there are none).
        ``written_ms``: the batch's newest Kafka record timestamp (epoch ms), the wall
        clock that tells a quiet gap from a bad timestamp."""
        with self._lock:
            self._written_ms = written_ms if written_ms is not None and written_ms >= 0 else None
            weights = self._observe(events)
            if weights and self._written_ms is not None:
                self._last_written_ms = self._written_ms
            if rejections:
                self._file_rejections(rejections, weights)

    def _observe(self, events: Iterable[Accepted]) -> dict[int, int]:
        """The hot loop; returns bucket -> events of this batch filed there."""
        lo = hi = EPOCH  # the located bucket's [start, end)
        bucket: _Bucket | None = None
        opened = self._open
        known_user, known_movie = self.known_user, self.known_movie
        filed: dict[int, int] = {}
        run = 0  # events filed in ``bucket`` since it was located
        # Dispatched on ``kind`` (one type() call an event), which mypy cannot narrow through.
        e: Any
        session: _Session | None
        for e in events:
            kind = type(e)
            if kind is tuple:
                when = e[0]
            else:
                try:
                    when = e.time
                except AttributeError:
                    raise TypeError(f"not an accepted MLiP event: {e!r}") from None
            if bucket is None or not (lo <= when < hi):
                if bucket is not None and run:
                    filed[bucket.index] = filed.get(bucket.index, 0) + run
                run = 0
                bucket = self._locate(when)
                if bucket is None:
                    continue
                lo = self._time(bucket.index)
                hi = lo + self.bucket
            run += 1
            counts = bucket.counts
            if kind is tuple or kind is Watch:
                counts.lines["watch"] += 1
                if kind is tuple:
                    _, user, movie, minute = e
                else:
                    user, movie, minute = e.user_id, e.movie_id, e.minute
                if minute == 0:
                    counts.session_starts[movie] += 1
                    if known_user is None:
                        counts.user_actions[user] += 1
                    else:
                        counts.users_checked += 1
                        counts.users_unknown += not known_user(user)
                    if known_movie is not None:
                        counts.movies_checked += 1
                        counts.movies_unknown += not known_movie(movie)
                    session = opened[user] = _Session(movie, bucket.index)
                    start_ms = (when - EPOCH) // _MS
                    bucket.offer(_mix64(_mix64(self._seed_key ^ (user & _M64)) ^ (start_ms & _M64)), session)
                else:
                    session = opened.get(user)
                    if session is not None and session.movie == movie and minute >= session.minutes:
                        session.minutes = minute + 1
            elif kind is Rate:
                counts.lines["rate"] += 1
                counts.ratings[e.rating] += 1
            elif kind is Recommendation:
                counts.lines["recommendation"] += 1
                if known_user is None:
                    counts.user_actions[e.user_id] += 1
                else:
                    counts.users_checked += 1
                    counts.users_unknown += not known_user(e.user_id)
            elif kind is Account:
                counts.lines["account"] += 1
            else:
                raise TypeError(f"not an accepted MLiP event: {e!r}")
        if bucket is not None and run:
            filed[bucket.index] = filed.get(bucket.index, 0) + run
        if filed:
            self._ahead = 0
        return filed

    def _quiet_gap(self) -> bool:
        """Whether the wall clock has moved at least the jump limit since the last batch
        that filed an event (so a jump of event time is the stream's, not a bad clock)."""
        if self._written_ms is None or self._last_written_ms is None:
            return False
        limit_ms = self.max_jump_buckets * (self.bucket // _MS)
        return self._written_ms - self._last_written_ms >= limit_ms

    def _locate(self, when: datetime) -> _Bucket | None:
        """The held bucket of an event time, advancing the head (and freezing the
        reference when due); None, counted, when the event is too late or too far ahead."""
        index = (when - EPOCH) // self.bucket
        if self._head is None:
            self._first = self._head = index
        elif index > self._head:
            if index - self._head > self.max_jump_buckets and not self._quiet_gap():
                self._ahead += 1
                if self._ahead < self.jump_after:
                    self.ahead_lines += 1
                    return None
            self._ahead = 0
            self._advance(index)
        if index < self._lowest():
            self.late_lines += 1
            return None
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket(index, self.sample_size)
            if self._pending_rejections:
                bucket.counts.rejections.update(self._pending_rejections)
                self._pending_rejections.clear()
        return bucket

    def _lowest(self) -> int:
        assert self._first is not None and self._head is not None
        if self._ref_end is None:
            return self._first
        return max(self._ref_end, self._head - self.window_buckets - self.grace + 1)

    def _advance(self, index: int) -> None:
        assert self._first is not None
        if self._ref_end is None and self.reference_buckets is not None \
                and index >= self._first + self.reference_buckets + self.grace:
            self._freeze(self._first + self.reference_buckets)
        self._head = index
        if self._ref_end is not None:
            self._evict(self._lowest())

    def _evict(self, lowest: int) -> None:
        gone = [b for b in self._buckets if b < lowest]
        if not gone:
            return
        for b in gone:
            del self._buckets[b]
        self._forget_sessions_before(lowest)

    def _forget_sessions_before(self, index: int) -> None:
        """Drop open sessions that started before bucket ``index``; in place, because the
        hot loop holds the dict."""
        for user in [u for u, s in self._open.items() if s.bucket < index]:
            del self._open[user]

    def _file_rejections(self, rejections: Mapping[str, int], weights: Mapping[int, int]) -> None:
        for reason, n in rejections.items():
            if n <= 0:
                continue
            if not weights:
                target = self._head_bucket()
                if target is None:
                    self._pending_rejections[str(reason)] += int(n)
                else:
                    target.counts.rejections[str(reason)] += int(n)
                continue
            for b, share in apportion(int(n), weights).items():
                self._rejections_of(b)[str(reason)] += share

    def _rejections_of(self, index: int) -> Counter[str]:
        """Where rejections apportioned to bucket ``index`` go: the bucket if held, the
        reference if the batch froze it meanwhile, else the head (evicted meanwhile)."""
        bucket = self._buckets.get(index)
        if bucket is not None:
            return bucket.counts.rejections
        if self._reference is not None and self._ref_end is not None and index < self._ref_end:
            return self._reference.rejections
        head = self._head_bucket()
        return head.counts.rejections if head is not None else self._pending_rejections

    def _head_bucket(self) -> _Bucket | None:
        """The held bucket at the head (made if empty), or None before any or right after
        a manual freeze."""
        if self._head is None or self._head < self._lowest():
            return None
        bucket = self._buckets.get(self._head)
        if bucket is None:
            bucket = self._buckets[self._head] = _Bucket(self._head, self.sample_size)
        return bucket

    # -- the reference ---------------------------------------------------------------------

    def freeze_reference(self) -> None:
        """End the reference now: every bucket seen so far (up to the head) becomes it.

        Raises RuntimeError when nothing was seen or the reference is already frozen."""
        with self._lock:
            if self._ref_end is not None:
                raise RuntimeError("the reference is already frozen; reset_reference() first")
            if self._head is None:
                raise RuntimeError("no event seen yet: nothing to freeze")
            self._freeze(self._head + 1)

    def reset_reference(self) -> None:
        """Forget everything; the next events start a new reference (after an accepted
        drift, or after retraining on the new data)."""
        with self._lock:
            self._start_fresh()

    def _freeze(self, end: int) -> None:
        assert self._first is not None
        held = {b: (bk.counts, bk.sessions()) for b, bk in self._buckets.items() if b < end}
        self._reference, self.basis = reference_window(
            held, self._first, end, self.sample_size, classify_users=self.known_user is None,
            classify_movies=self.known_movie is None)
        self._ref_end = end
        for b in held:
            del self._buckets[b]
        self._forget_sessions_before(end)

    # -- reading -----------------------------------------------------------------------------

    def current(self) -> WindowStats:
        """The current window's statistics (empty before the reference is frozen)."""
        with self._lock:
            return self._current()

    def _current(self) -> WindowStats:
        if self._ref_end is None:
            return WindowStats(sample_size=self.sample_size)
        return merge_all((WindowStats.of(bk.counts, self.basis, bk.sessions(), self.sample_size)
                          for _, bk in sorted(self._buckets.items())), self.sample_size)

    def report(self) -> DriftReport:
        """The current window against the reference, one row per feature."""
        with self._lock:
            if self._ref_end is None or self._first is None or self._head is None:
                return DriftReport(compare(None, None, self.thresholds), late_lines=self.late_lines,
                                   ahead_lines=self.ahead_lines)
            reference_span = (self._time(self._first), self._time(self._ref_end))
            current_span = None
            if self._head >= self._ref_end:
                current_span = (self._time(self._lowest()), self._time(self._head + 1))
            return DriftReport(compare(self._reference, self._current(), self.thresholds),
                               reference_span, current_span, self.late_lines, self.ahead_lines)
