"""Telemetry of served lists: the record's JSON, and a hand-off that never blocks a
request, counts every record once, survives failing sinks and restarts after a fork."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from recommender.serving.sinks import KafkaSink, partition_values
from recommender.serving.telemetry import (
    Lanes,
    ServedRecord,
    Telemetry,
    TelemetryError,
    decode_served,
    encode_served,
    new_request_id,
)
from tests.conftest import free_ports


def record(i: int, *, user: int = 7) -> ServedRecord:
    return ServedRecord(request_id=f"{i:032x}", time_ms=1_700_000_000_000 + i, user_id=user,
                        arm="default", model_version="als-20250301-abc", items=("up+2009", "heat+1995"),
                        path="model", fallback=None, latency_ms=1.25, status=200)


class Recorder:
    """A sink that keeps every batch; ``delay_s`` makes each call that slow."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[ServedRecord]] = []
        self.delay_s = delay_s
        self.arrived = threading.Event()

    def publish(self, records: list[ServedRecord]) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batches.append(list(records))
        self.arrived.set()

    @property
    def records(self) -> list[ServedRecord]:
        return [r for batch in self.batches for r in batch]


class Hanging:
    """A sink that blocks until released (a broker that stopped answering)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.got = 0

    def publish(self, records: list[ServedRecord]) -> None:
        self.release.wait()
        self.got += len(records)


class Raising:
    calls = 0

    def publish(self, records: list[ServedRecord]) -> None:
        self.calls += 1
        raise ConnectionError("broker down")


class Outcomes(Counter):
    """``on_outcome`` that tallies the counts (thread-safe enough: one writer per key)."""

    def __call__(self, outcome: str, n: int) -> None:
        self[outcome] += n


# -- the record ------------------------------------------------------------------------


def test_a_record_survives_its_json_round_trip() -> None:
    degraded = ServedRecord(request_id=new_request_id(), time_ms=1, user_id=0, arm="b",
                            model_version=None, items=(), path="popular", fallback="redis",
                            latency_ms=0.5, status=200)
    for r in (record(3), degraded):
        data = r.to_json()
        assert ServedRecord.from_json(data) == r
        assert b" " not in data  # compact: separators without spaces
        assert json.loads(data)["items"] == list(r.items)


def test_request_ids_are_32_lowercase_hex_and_fresh() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)


@pytest.mark.parametrize("change", [
    {"request_id": "A" * 32}, {"request_id": "0" * 31}, {"status": True}, {"time_ms": "1"},
    {"items": ["up+2009", 3]}, {"items": "up+2009"}, {"model_version": 3}, {"arm": None},
])
def test_from_json_rejects_what_to_json_never_writes(change: dict) -> None:
    fields = json.loads(record(1).to_json())
    with pytest.raises(ValueError):
        ServedRecord.from_json(json.dumps({**fields, **change}))


@pytest.mark.parametrize("data", [b"", b"[1,2]", b"\xff\xfe", b'{"request_id": "' + b"0" * 32 + b'"}'])
def test_from_json_rejects_junk(data: bytes) -> None:
    with pytest.raises(ValueError):
        ServedRecord.from_json(data)


def test_a_topic_value_holds_one_record_or_many_and_counts_bad_lines() -> None:
    odd = ServedRecord(**{**vars(record(3)), "items": ("a\u2028b+2001", "c\nd+2002", "e\x85+1999")})
    many = [record(1), record(2, user=8), odd]
    assert decode_served(encode_served(many)) == (many, 0)
    assert decode_served(encode_served(many).decode()) == (many, 0)  # str alike
    assert decode_served(record(1).to_json()) == ([record(1)], 0)   # the one-record value
    assert decode_served(encode_served(many[:2]) + b"\nnot json\n") == (many[:2], 2)
    assert decode_served(None) == ([], 1)  # a tombstone
    assert decode_served(b"") == ([], 1)
    assert decode_served(b"\xff\xfe") == ([], 1)


def test_partition_values_keep_a_users_records_together_in_order_and_bounded() -> None:
    records = [record(i, user=u) for i, u in enumerate([1, 2, 3, 1, 4, 2, 1, 5])]
    values = partition_values(records, [0, 1], max_bytes=10**6)
    assert len(values) == 2  # one message per partition touched
    back = {p: decode_served(v)[0] for p, v in values}
    assert back[1] == [r for r in records if r.user_id % 2 == 1]
    assert back[0] == [r for r in records if r.user_id % 2 == 0]
    one = len(record(0).to_json()) + 1
    small = partition_values(records, [7], max_bytes=2 * one)  # two records a value at most
    assert [p for p, _ in small] == [7] * 4
    assert [r for _, v in small for r in decode_served(v)[0]] == records
    assert partition_values(records[:1], [0], max_bytes=1)[0][1] == records[0].to_json()
    with pytest.raises(ValueError):
        partition_values(records, [], max_bytes=10**6)


# -- the hand-off ------------------------------------------------------------------------


def test_every_record_arrives_once_in_order_in_bounded_batches() -> None:
    sink, outcomes = Recorder(), Outcomes()
    telemetry = Telemetry(sink, capacity=10_000, batch_size=100, flush_s=0.01, on_outcome=outcomes)
    sent = [record(i) for i in range(1234)]
    assert all(telemetry.submit(r) for r in sent)
    telemetry.close(timeout=5)
    assert sink.records == sent
    assert max(len(b) for b in sink.batches) <= 100
    assert outcomes == {"published": 1234}


def test_a_lone_record_is_sent_after_about_flush_s_without_close() -> None:
    sink = Recorder()
    telemetry = Telemetry(sink, capacity=100, batch_size=100, flush_s=0.02)
    t0 = time.perf_counter()
    telemetry.submit(record(1))
    assert sink.arrived.wait(2.0)
    assert time.perf_counter() - t0 < 1.0 and sink.records == [record(1)]
    telemetry.close()


def test_a_slow_sink_never_blocks_submit_and_every_drop_is_counted() -> None:
    sink, outcomes = Recorder(delay_s=0.05), Outcomes()
    telemetry = Telemetry(sink, capacity=1000, batch_size=100, flush_s=0.01, on_outcome=outcomes)
    t0 = time.perf_counter()
    accepted = sum(telemetry.submit(record(i)) for i in range(10_000))
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5
    assert 1000 <= accepted < 10_000  # the buffer filled: drops happened
    assert outcomes["dropped"] == 10_000 - accepted
    telemetry.close(timeout=10)
    assert len(sink.records) == outcomes["published"] == accepted
    assert outcomes["published"] + outcomes["dropped"] + outcomes["failed"] == 10_000


def test_a_hanging_sink_costs_records_not_time() -> None:
    sink, outcomes = Hanging(), Outcomes()
    telemetry = Telemetry(sink, capacity=100, batch_size=10, flush_s=0.01, on_outcome=outcomes)
    t0 = time.perf_counter()
    accepted = sum(telemetry.submit(record(i)) for i in range(500))
    t_close = time.perf_counter()
    telemetry.close(timeout=0.2)  # gives up on the stuck sink
    assert time.perf_counter() - t_close < 1.0 and t_close - t0 < 0.5
    assert accepted <= 110  # the buffer (and the one batch in the sink's hands)
    sink.release.set()
    deadline = time.monotonic() + 5
    while sum(outcomes.values()) < 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outcomes["published"] == sink.got  # the batch it held, counted when it returned
    assert outcomes["published"] + outcomes["dropped"] == 500


def test_a_raising_sink_is_counted_and_the_other_sink_still_gets_every_batch(
        caplog: pytest.LogCaptureFixture) -> None:
    bad, good, bad_outcomes, good_outcomes = Raising(), Recorder(), Outcomes(), Outcomes()
    telemetry = Lanes([
        Telemetry(bad, capacity=1000, batch_size=50, flush_s=0.01, on_outcome=bad_outcomes),
        Telemetry(good, capacity=1000, batch_size=50, flush_s=0.01, on_outcome=good_outcomes)])
    sent = [record(i) for i in range(300)]
    with caplog.at_level(logging.WARNING, logger="recommender.serving.telemetry"):
        for r in sent:
            telemetry.submit(r)
        telemetry.close(timeout=5)
    assert good.records == sent
    assert bad_outcomes == {"failed": 300} and good_outcomes == {"published": 300}
    assert bad.calls >= 6
    warnings = [r for r in caplog.records if "broker down" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one warning for a burst of failing batches


def test_a_broken_on_outcome_never_fails_submit() -> None:
    def broken(outcome: str, n: int) -> None:
        raise RuntimeError("counter down")

    sink = Recorder()
    telemetry = Telemetry(sink, capacity=1, batch_size=10, flush_s=60, on_outcome=broken)
    assert telemetry.submit(record(1)) is True
    assert telemetry.submit(record(2)) is False  # full: dropped, and the counter raised
    telemetry.close(timeout=5)
    assert sink.records == [record(1)]


def test_after_close_records_are_dropped_and_counted() -> None:
    outcomes = Outcomes()
    telemetry = Telemetry(Recorder(), capacity=10, on_outcome=outcomes)
    telemetry.submit(record(1))
    telemetry.close(timeout=5)
    assert telemetry.submit(record(2)) is False
    assert outcomes == {"published": 1, "dropped": 1}


def run_in_child(child: Callable[[], bool]) -> bool:
    """Fork; the child runs ``child`` and exits with its verdict (it never returns to
    pytest). The parent waits at most 20 s and returns the verdict."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if child() else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child did not finish")
    return os.waitstatus_to_exitcode(done[1]) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_publishes_with_a_thread_of_its_own() -> None:
    # The parent's records wait (long flush_s, big batches) while it forks: the child must
    # start its own publisher (threads do not survive fork), and must neither send nor
    # count the parent's records.
    sink, outcomes = Recorder(), Outcomes()
    telemetry = Telemetry(sink, capacity=1000, batch_size=1000, flush_s=60, on_outcome=outcomes)
    parents = [record(i) for i in range(5)]
    for r in parents:
        telemetry.submit(r)

    def submits_then_closes() -> bool:
        children = [record(100 + i, user=8) for i in range(20)]
        accepted = all(telemetry.submit(r) for r in children)
        telemetry.close(timeout=5)
        return accepted and sink.records == children and outcomes == {"published": 20}

    def only_closes() -> bool:  # a worker that served nothing, shutting down
        telemetry.close(timeout=5)
        return sink.records == [] and outcomes == {} and telemetry.submit(record(1)) is False

    assert run_in_child(submits_then_closes)
    assert run_in_child(only_closes)
    telemetry.close(timeout=5)
    assert sink.records == parents and outcomes == {"published": 5}


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"capacity": 1, "batch_size": 0},
                                    {"capacity": 1, "flush_s": 0}])
def test_rejects_nonsense_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Telemetry(Recorder(), **kwargs)


def test_the_kafka_sink_reports_a_missing_broker_fast() -> None:
    (port,) = free_ports(1)  # nothing listens there
    sink = KafkaSink(f"127.0.0.1:{port}", "served")
    t0 = time.perf_counter()
    with pytest.raises(TelemetryError, match="no Kafka broker"):
        sink.publish([record(1)])
    assert time.perf_counter() - t0 < 1.0


def test_a_stuck_sink_in_one_lane_does_not_hold_up_the_other():
    stuck, quick = Hanging(), Recorder()
    lanes = Lanes([Telemetry(stuck, capacity=100, flush_s=0.01),
                   Telemetry(quick, capacity=100, flush_s=0.01)])
    try:
        assert lanes.submit(record(1)) is True
        assert quick.arrived.wait(1.0), "the healthy lane waited for the stuck one"
        assert [r.request_id for r in quick.records] == [record(1).request_id]
        assert lanes.sinks == [stuck, quick]
    finally:
        stuck.release.set()
        lanes.close(timeout=2)



def test_lanes_encode_a_record_once_for_every_sink() -> None:
    r = record(5)
    fresh = r.to_json()
    assert r.to_json() is not r.to_json()  # not kept until asked
    seen: list[list[bytes]] = [[], []]

    class Encoder:
        def __init__(self, out: list[bytes]) -> None:
            self.out = out

        def publish(self, records: list[ServedRecord]) -> None:
            self.out.extend(x.to_json() for x in records)

    lanes = Lanes([Telemetry(Encoder(seen[0]), capacity=10), Telemetry(Encoder(seen[1]), capacity=10)])
    assert lanes.submit(r)
    lanes.close()
    assert seen[0] == seen[1] == [fresh] and seen[0][0] is seen[1][0]  # the same bytes object
    assert r == record(5) and repr(r) == repr(record(5))  # the kept bytes are no field
    assert ServedRecord.from_json(r.to_json()) == r
