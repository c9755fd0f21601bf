"""The consumer loop with fake adapters: what is committed, when, and what is not.

The writer thread makes batch N durable while batch N+1 is polled and folded; these
tests pin the ordering that keeps delivery at-least-once: N's offsets are committed
only after N's writes returned, before N+1's writes start, and never when a write did
not happen.
"""

from __future__ import annotations

import threading
import time
from collections import namedtuple

import pytest
from kafka.errors import CommitFailedError, RebalanceInProgressError
from kafka.structs import TopicPartition

from stores.online import OnlineStoreError
from stream_consumer.consumer import StreamConsumer
from stream_consumer.consumer_metrics import ConsumerMetrics

Record = namedtuple("Record", "topic partition offset timestamp value")
TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


def _batch(tp: TopicPartition, first: int, n: int) -> dict:
    written = 1_740_830_400_000  # 2025-03-01T12:00:00 UTC: lines written as they happened
    return {tp: [Record("t", tp.partition, first + i, written + 1000 * (i % 60) + 50,
                        f"2025-03-01T12:00:{i % 60:02d},{i},GET /data/m/up+2009/{i}.mpg".encode())
                 for i in range(n)]}


class FakeKafka:
    def __init__(self, batches: list[dict], log: list, refuse: type[Exception] | None = None,
                 poll_error_after: int | None = None) -> None:
        self.batches, self.log, self.refuse = list(batches), log, refuse
        self.poll_error_after, self.polls = poll_error_after, 0

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.log.append(("poll", len(self.batches)))
        self.polls += 1
        if self.poll_error_after is not None and self.polls > self.poll_error_after:
            raise RuntimeError("the broker connection broke in a way we do not retry")
        return self.batches.pop(0) if self.batches else {}

    def commit(self, offsets: dict) -> None:
        self.log.append(("commit", {tp.partition: meta.offset for tp, meta in offsets.items()}))
        if self.refuse is not None:
            raise self.refuse("the group is rebalancing")


class FakeStore:
    """Records each batch's write; fails the first ``failures`` writes."""

    def __init__(self, log: list, failures: int = 0) -> None:
        self.log, self.failures = log, failures

    def write(self, delta, *, pending_users=(), pending_movies=()) -> None:
        if self.failures:
            self.failures -= 1
            raise OnlineStoreError("redis is down")
        self.log.append(("write", delta.events))

    def refresh_popularity(self, days: list[str]) -> int:
        return 0


class NoDLQ:
    where = "nowhere"

    def send(self, value: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def _runner(batches: list[dict], log: list, store: FakeStore, **kafka: object) -> StreamConsumer:
    return StreamConsumer(FakeKafka(batches, log, **kafka), store, None, dlq=NoDLQ(),
                          metrics=ConsumerMetrics.create(), topic="t")


def test_each_batch_is_committed_after_its_write_and_before_the_next_write() -> None:
    log: list = []
    runner = _runner([_batch(TP0, 0, 5), _batch(TP1, 100, 3), _batch(TP0, 5, 2)], log, FakeStore(log))
    assert runner.run(idle_exit_s=0.2) == 10
    writes_and_commits = [entry for entry in log if entry[0] != "poll"]
    assert writes_and_commits == [("write", 5), ("commit", {0: 5}), ("write", 3), ("commit", {1: 103}),
                                  ("write", 2), ("commit", {0: 7})]
    # the next batch was polled while the previous one was in flight
    assert log.index(("poll", 2)) < log.index(("commit", {0: 5}))


def test_a_write_that_never_succeeds_is_never_committed() -> None:
    log: list = []
    runner = _runner([_batch(TP0, 0, 4)], log, FakeStore(log, failures=10**9))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (runner.run(), done.set()))
    thread.start()
    deadline = time.monotonic() + 10
    while runner.metrics.redis_retries._value.get() < 2:  # retried, uncommitted
        assert time.monotonic() < deadline
        thread.join(0.05)
    runner.stop.set()
    thread.join(10)
    assert done.is_set()
    assert not [entry for entry in log if entry[0] == "commit"]


def test_a_write_retried_until_redis_is_back_is_committed_once() -> None:
    log: list = []
    runner = _runner([_batch(TP0, 0, 4)], log, FakeStore(log, failures=2))
    runner.run(idle_exit_s=0.5)
    assert [entry for entry in log if entry[0] != "poll"] == [("write", 4), ("commit", {0: 4})]
    assert runner.metrics.redis_retries._value.get() == 2


@pytest.mark.parametrize("refusal", [CommitFailedError, RebalanceInProgressError])
def test_a_refused_commit_is_counted_and_the_loop_goes_on(refusal: type[Exception]) -> None:
    log: list = []
    runner = _runner([_batch(TP0, 0, 2), _batch(TP0, 2, 3)], log, FakeStore(log), refuse=refusal)
    assert runner.run(idle_exit_s=0.2) == 5
    assert runner.metrics.commit_failures._value.get() == 2
    assert [entry for entry in log if entry[0] == "write"] == [("write", 2), ("write", 3)]


def test_an_error_in_the_main_thread_during_a_retried_write_ends_run_without_a_commit() -> None:
    """Redis is down (the write retries) when polling fails: run() raises the error
    promptly instead of waiting forever for the write, and commits nothing."""
    log: list = []
    runner = StreamConsumer(FakeKafka([_batch(TP0, 0, 4)], log, poll_error_after=1),
                            FakeStore(log, failures=10**9), None, dlq=NoDLQ(),
                            metrics=ConsumerMetrics.create(), topic="t")
    raised: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:  # the test inspects it
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    hung = thread.is_alive()
    runner.stop.set()  # lets a hung run() end, so a failure does not hang the test session
    assert not hung
    assert len(raised) == 1 and isinstance(raised[0], RuntimeError)
    assert not [entry for entry in log if entry[0] in ("commit", "write")]


def test_a_bug_in_a_write_surfaces_instead_of_being_retried() -> None:
    class Broken(FakeStore):
        def write(self, delta, **kwargs) -> None:
            raise TypeError("a bug")

    log: list = []
    runner = _runner([_batch(TP0, 0, 2)], log, Broken(log))
    with pytest.raises(TypeError):
        runner.run(idle_exit_s=0.2)
    assert not [entry for entry in log if entry[0] == "commit"]


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    import gc

    from stream_consumer.cli import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:  # the rest of the test session keeps the interpreter's defaults
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_event_store_disk_is_read_at_every_scrape(tmp_path) -> None:
    """The alert on a filling disk needs the free and total bytes of the store's filesystem."""
    import shutil as _shutil

    from stream_consumer.consumer_metrics import ConsumerMetrics

    metrics = ConsumerMetrics.create()
    metrics.watch_disk(tmp_path / "store")
    free = metrics.registry.get_sample_value("movierec_event_store_free_bytes")
    size = metrics.registry.get_sample_value("movierec_event_store_filesystem_bytes")
    usage = _shutil.disk_usage(tmp_path)
    assert size == usage.total and 0 < free <= size
    assert abs(free - usage.free) < 0.05 * size  # read now, not a stale copy


def _heartbeat(runner: StreamConsumer) -> float:
    return runner.metrics.registry.get_sample_value("movierec_consumer_heartbeat_timestamp_seconds")


def test_the_heartbeat_beats_on_every_turn_and_freezes_while_a_write_hangs() -> None:
    """MovierecConsumerStalled reads the heartbeat: it moves on quiet turns (no lines) and
    stops while the loop waits on a write that does not succeed."""
    log: list = []
    runner = _runner([_batch(TP0, 0, 3)], log, FakeStore(log))
    before = time.time()
    runner.run(idle_exit_s=0.2)
    assert before <= _heartbeat(runner) <= time.time()

    stuck = _runner([_batch(TP0, 0, 4), _batch(TP0, 4, 1)], log, FakeStore(log, failures=10**9))
    thread = threading.Thread(target=stuck.run)
    thread.start()
    deadline = time.monotonic() + 10
    while stuck.metrics.redis_retries._value.get() < 2:
        assert time.monotonic() < deadline
        thread.join(0.05)
    frozen = _heartbeat(stuck)
    assert frozen >= before  # the first turn beat
    while stuck.metrics.redis_retries._value.get() < 4:
        assert time.monotonic() < deadline
        thread.join(0.05)
    assert _heartbeat(stuck) == frozen  # retrying batch 1 blocks the turn that commits it
    stuck.stop.set()
    thread.join(10)


def test_a_broker_that_stops_answering_leaves_the_lag_as_it_was_and_the_loop_goes_on() -> None:
    from kafka.errors import KafkaTimeoutError

    class NoEnds(FakeKafka):
        def assignment(self) -> set:
            return {TP0}

        def end_offsets(self, partitions: list) -> dict:
            raise KafkaTimeoutError("Failed to get offsets by timestamps in 5000.0 ms")

    log: list = []
    runner = StreamConsumer(NoEnds([_batch(TP0, 0, 3)], log), FakeStore(log), None, dlq=NoDLQ(),
                            metrics=ConsumerMetrics.create(), topic="t")
    assert runner.run(idle_exit_s=0.3, lag_every_s=0.0) == 3  # no exception, every line
    assert runner.metrics.registry.get_sample_value("movierec_consumer_lag_messages",
                                                    {"partition": "0"}) is None
