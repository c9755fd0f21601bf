"""The consumer loop: Kafka batch -> parse, check -> Redis, event store, DLQ -> commit.

At-least-once: offsets are committed only once a batch's effects are durable in Redis,
in the event store and (for rejected lines) in the dead-letter sink. A crash before
the commit means the batch comes again; every effect is idempotent (features merge,
the event store deduplicates by offset), so nothing is lost and nothing counts twice.

Nothing a line contains can stop the loop: the parser never raises, the checks only
reject. A dead dependency stops progress, not the process: a failed Redis write, event
store write or DLQ send is retried with backoff and the batch is not committed until it
succeeds (or the process is told to stop, and the batch comes again later).

Writing overlaps reading: while a writer thread makes batch N durable, the main thread
polls and folds batch N+1 (kafka-python's decoding and the fold are CPU; the writes are
mostly waiting on Redis and the disk). One batch at most is in flight: batch N's offsets
are committed (explicitly, not "the current positions", which are past N+1 by then)
once N is durable and before N+1 is handed over, so at-least-once holds as before. If a
rebalance moved a partition meanwhile, its new owner starts from the previous commit and
folds batch N again: a duplicate, which every effect absorbs, never a loss (the offsets
committed are always of durable lines). No rebalance listener: kafka-python 3 runs a
synchronous listener inside its event loop, where a commit cannot run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING

from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

from movierec.wire import LineParser
from stores.event_store import EventStore, EventStoreError
from stores.keys import day_of
from stores.online import OnlineStore, OnlineStoreError
from stream_consumer.batch import BatchFolder, Folded
from stream_consumer.consumer_metrics import ConsumerMetrics
from stream_consumer.dlq_sinks import DeadLetterSink
from stream_consumer.drift_monitor import DriftMonitor
from stream_consumer.drift_report import metric_values
from stream_consumer.validate import Validator

if TYPE_CHECKING:
    from kafka import KafkaConsumer

log = logging.getLogger(__name__)

TRANSIENT = (OnlineStoreError, EventStoreError, KafkaError, OSError)
"""Failures of a dependency (Redis, disk, Kafka): retried until they pass."""

REFUSED_COMMIT = (CommitFailedError, RebalanceInProgressError, IllegalGenerationError,
                  UnknownMemberIdError)
"""The group would not take a commit (it is rebalancing or moved on): the durable batch is
not committed and comes again, which every effect absorbs."""


class Stopped(Exception):
    """The process was told to stop while a batch was not yet durable."""


class StreamConsumer:
    """One member of the consumer group. ``consumer`` is a kafka-python KafkaConsumer
    already subscribed; ``dlq`` a dead-letter sink (``dlq_sinks``: send, then flush)."""

    def __init__(self, consumer: KafkaConsumer, features: OnlineStore, events: EventStore | None, *,
                 dlq: DeadLetterSink, metrics: ConsumerMetrics, topic: str, rating_scale: int = 5,
                 batch_max: int = 20_000, poll_ms: int = 500, runtime_slack_min: int = 10,
                 future_tolerance_h: float = 6.0, log_utc_offset_h: float = 14.0,
                 runtime_of: Callable[[str], int | None] | None = None,
                 known_user: Callable[[int], bool] | None = None,
                 known_movie: Callable[[str], bool] | None = None,
                 drift: DriftMonitor | None = None, columnar: bool = True) -> None:
        self.consumer = consumer
        self.features = features
        self.events = events
        self.dlq = dlq
        self.metrics = metrics
        self.topic = topic
        self.batch_max, self.poll_ms = batch_max, poll_ms
        self.parser = LineParser(rating_scale)
        self.validator = Validator(runtime_of=runtime_of or (lambda movie: None),
                                   runtime_slack_min=runtime_slack_min,
                                   ahead=timedelta(hours=log_utc_offset_h + future_tolerance_h))
        self.folder = BatchFolder(self.parser, self.validator, columnar=columnar)
        self.known_user = known_user or (lambda user: True)
        self.known_movie = known_movie or (lambda movie: True)
        self.drift = drift
        self.stop = threading.Event()
        self.lines = 0
        self._writer: ThreadPoolExecutor | None = None  # while run() runs
        self._pending: tuple[Future, dict, float] | None = None  # (write, offsets, started)

    # -- one batch -----------------------------------------------------------------------

    def _write(self, folded: Folded) -> None:
        """Make one folded batch durable (the writer thread); the caller commits after."""
        delta, dead, oldest_ms = folded.delta, folded.dead, folded.oldest_ms
        pending_users = [u for u in delta.users if not self.known_user(u)]
        pending_movies = [m for m in delta.movies if not self.known_movie(m)]
        self._durably("redis", lambda: self.features.write(
            delta, pending_users=pending_users, pending_movies=pending_movies))
        if oldest_ms is not None:
            self.metrics.freshness.observe(max(0.0, time.time() - oldest_ms / 1000))
        events, table = self.events, folded.table
        if events is not None and table is not None:
            self._durably("event store", lambda: events.append(table))
            self.metrics.store_rows.inc(table.num_rows)
        if dead:
            def send_dead() -> None:
                for value in dead:
                    self.dlq.send(value)
                self.dlq.flush()
            self._durably("dead-letter topic", send_dead)
        if self.drift is not None:  # only once the batch is durable: never counted twice
            self.drift.observe_batch(folded.accepted, folded.rejected, written_ms=folded.newest_ms)
        for kind, n in folded.kinds.items():
            self.metrics.events.labels(kind).inc(n)
        for reason, n in folded.rejected.items():
            self.metrics.rejects.labels(reason).inc(n)

    def _durably(self, what: str, action: Callable[[], object]) -> None:
        """Run ``action`` until it succeeds; back off between tries; give up only on stop."""
        delay = 0.1
        while True:
            try:
                action()
                return
            except TRANSIENT as exc:  # a bug (TypeError, ...) is not retried: it surfaces
                if self.stop.is_set():
                    raise Stopped(f"{what} not written: {exc}") from exc
                if what == "redis":
                    self.metrics.redis_retries.inc()
                log.warning("%s failed (%s); retrying in %.1fs, batch not committed", what, exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 5.0)

    # -- the loop ------------------------------------------------------------------------

    def step(self) -> int:
        """Poll and fold one batch, then hand it to the writer once the batch before it
        is durable and committed; the number of lines polled. Runs inside ``run``."""
        batch = self.consumer.poll(timeout_ms=self.poll_ms, max_records=self.batch_max)
        if not batch:
            self._settle()
            return 0
        started = time.perf_counter()
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
                   for tp, records in batch.items() if records}
        folded = self.folder.fold([record for records in batch.values() for record in records])
        self._settle()
        if self._writer is None:
            raise RuntimeError("StreamConsumer.step runs inside run()")
        self._pending = (self._writer.submit(self._write, folded), offsets, started)
        self.lines += folded.lines
        return folded.lines

    def _settle(self) -> None:
        """Wait for the batch in flight, then commit its offsets. Raises what the write
        raised (Stopped: the batch stays uncommitted and comes again)."""
        if self._pending is None:
            return
        write, offsets, started = self._pending
        self._pending = None
        write.result()
        try:
            self.consumer.commit(offsets)
        except REFUSED_COMMIT as exc:
            self.metrics.commit_failures.inc()
            log.warning("commit failed, the batch will be redelivered: %s", exc)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def update_lag(self) -> None:
        """Set the lag gauges from the partitions' ends. A broker that does not answer
        leaves them as they were: the loop goes on polling until it is back (``movierec
        drill kafka-down`` found the consumer exiting here on a KafkaTimeoutError)."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return
        try:
            ends = self.consumer.end_offsets(assigned)
            lags = {tp: max(0, ends[tp] - self.consumer.position(tp)) for tp in assigned}
        except KafkaError as exc:
            log.warning("lag not updated, the broker does not answer: %s", exc)
            return
        for tp, lag in lags.items():
            self.metrics.lag.labels(str(tp.partition)).set(lag)

    def refresh_popularity(self, days: int = 14) -> int:
        clock = self.validator.clock
        if clock is None:
            return 0
        names = [day_of(clock - timedelta(days=age)) for age in range(days)]
        return self.features.refresh_popularity(names)

    def update_drift(self) -> None:
        if self.drift is not None:
            self.metrics.show_drift(metric_values(self.drift.report()))

    def run(self, *, max_lines: int | None = None, idle_exit_s: float | None = None,
            lag_every_s: float = 5.0, popularity_every_s: float = 60.0) -> int:
        """Consume until stopped, ``max_lines`` polled, or ``idle_exit_s`` without lines;
        the number of lines polled (all committed, unless a stop cut a write short)."""
        last_lines = last_lag = last_pop = time.monotonic()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consumer-writer")
        try:
            while not self.stop.is_set():
                got = self.step()
                self.metrics.heartbeat.set(time.time())  # MovierecConsumerStalled reads it
                now = time.monotonic()
                if got:
                    last_lines = now
                if max_lines is not None and self.lines >= max_lines:
                    break
                if idle_exit_s is not None and now - last_lines >= idle_exit_s:
                    break
                if now - last_lag >= lag_every_s:
                    self.update_lag()
                    self.update_drift()
                    last_lag = now
                if now - last_pop >= popularity_every_s:
                    self._refresh_quietly()
                    last_pop = now
            self._settle()
        except Stopped as exc:
            log.warning("stopping with a batch not committed (it will come again): %s", exc)
        except BaseException:
            self.stop.set()  # a write still retrying gives up (Stopped) instead of hanging us
            raise
        finally:
            self._abandon()
            self._writer.shutdown(wait=True)
            self._writer = None
        self._refresh_quietly()
        return self.lines

    def _abandon(self) -> None:
        """Leaving with a write in flight (an error elsewhere): wait for it, log how it
        ended, commit nothing."""
        if self._pending is None:
            return
        write = self._pending[0]
        self._pending = None
        exc = write.exception()
        if exc is not None:
            log.warning("leaving with a batch not committed (it will come again): %s", exc)

    def _refresh_quietly(self) -> None:
        try:
            self.refresh_popularity()
        except OnlineStoreError as exc:  # a derived view: the next refresh catches up
            log.warning("popularity refresh skipped: %s", exc)
