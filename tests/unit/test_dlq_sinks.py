"""Dead-letter sinks without a broker: the file sink's durability and format, and the
auto sink's switch to the file when the broker refuses the topic or its records.

The producer here is a stand-in with kafka-python's reporting shape (``send`` returns a
future whose ``get`` raises the record's error; ``flush`` may raise while records are
still undecided); tests/integration/test_consumer_dlq.py runs the real broker."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
from kafka.errors import (
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumberError,
    TopicAuthorizationFailedError,
    UnknownError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)

from movierec.settings import SettingsError, load
from stream_consumer.consumer_metrics import ConsumerMetrics
from stream_consumer.dlq import dead_letter, read_dead_letters
from stream_consumer.dlq_sinks import (
    DeadLetterRefused,
    DeadLetterSendError,
    FallbackSink,
    FileSink,
    KafkaSink,
    is_refusal,
    open_sink,
)
from stream_consumer.settings import ConsumerSettings

RAWS = [b"2025-03-01T12:00:00,7,GET /data/m/x/abc.mpg", "caf\u00e9 \u2028 line".encode(),
        b"\xff\xfe not utf-8", b"x" * (70 * 1024)]


def _letters(raws: list[bytes] = RAWS) -> list[bytes]:
    return [dead_letter(raw, reason="malformed", detail="test", topic="movielog", partition=1,
                        offset=100 + i, timestamp_ms=1_700_000_000_000 + i)
            for i, raw in enumerate(raws)]


def _settings(tmp_path: Path, sink: str) -> ConsumerSettings:
    return load(ConsumerSettings, {}, kafka_topic="movielog", dlq_sink=sink, dlq_dir=tmp_path / "dlq")


class Future:
    """``done``: already decided when ``send`` returns, as kafka-python's future is when
    the topic's metadata request was refused."""

    def __init__(self, error: Exception | None, *, done: bool = False) -> None:
        self.error = error
        self.is_done = done
        self.exception = error

    def failed(self) -> bool:
        return self.is_done and self.error is not None

    def get(self, timeout: float | None = None) -> object:
        if self.error is not None:
            raise self.error
        return "metadata"


class Producer:
    """``errors(value)`` decides each record's fate: None (acknowledged) or an error."""

    def __init__(self, errors=lambda value: None, *, send_raises: Exception | None = None,
                 flush_raises: Exception | None = None, decided: bool = False) -> None:
        self.errors, self.send_raises, self.flush_raises = errors, send_raises, flush_raises
        self.decided = decided
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, topic: str, value: bytes) -> Future:
        if self.send_raises is not None:
            self.sent.append(value)
            raise self.send_raises
        self.sent.append(value)
        return Future(self.errors(value), done=self.decided)

    def flush(self, timeout: float | None = None) -> None:
        if self.flush_raises is not None:
            raise self.flush_raises

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def _counted(metrics: ConsumerMetrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value("movierec_consumer_dlq_fallback_total", {"reason": reason})


# -- the file sink -----------------------------------------------------------------------


def test_the_file_sink_round_trips_dead_letters_through_read_dead_letter(tmp_path: Path) -> None:
    path = tmp_path / "dlq" / "movielog.dlq.jsonl"
    sink = FileSink(path)
    letters = _letters()
    for value in letters[:2]:
        sink.send(value)
    sink.flush()
    sink.close()
    again = FileSink(path)  # a restarted consumer appends
    for value in letters[2:]:
        again.send(value)
    again.flush()
    again.close()
    records = list(read_dead_letters(path))
    assert [r["raw"] for r in records] == [raw[:64 * 1024] for raw in RAWS]
    assert [r["offset"] for r in records] == [100, 101, 102, 103]
    assert {r["reason"] for r in records} == {"malformed"}
    assert records[3]["truncated"] and records[3]["bytes"] == 70 * 1024
    assert path.read_bytes().count(b"\n") == 4  # U+2028 stays inside its line


def test_the_file_sink_writes_nothing_before_flush_and_fsyncs_on_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    sink = FileSink(path)
    sink.send(_letters()[0])
    assert not path.exists() and synced == []
    sink.flush()
    assert len(list(read_dead_letters(path))) == 1
    assert sink._fd in synced  # the file itself, once its bytes are written
    synced.clear()
    sink.flush()  # nothing new: nothing to sync
    assert synced == []
    sink.close()


def test_a_torn_last_line_from_a_crash_is_cut_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    first, second = _letters()[:2]
    path.write_bytes(first + b"\n" + second[:20])  # a crash in the middle of a flush
    sink = FileSink(path)
    sink.send(second)
    sink.flush()
    sink.close()
    assert [r["offset"] for r in read_dead_letters(path)] == [100, 101]


def test_a_failed_write_leaves_no_partial_line_and_forgets_the_letters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.jsonl"
    letters = _letters()[:2]
    sink = FileSink(path)
    sink.send(letters[0])
    sink.flush()
    real_write = os.write
    calls: list[int] = []

    def disk_fills(fd: int, data) -> int:  # 10 bytes go, then the disk is full
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:10]))

    monkeypatch.setattr(os, "write", disk_fills)
    sink.send(letters[1])
    with pytest.raises(OSError):
        sink.flush()
    assert len(calls) == 2  # the short write was followed up, then failed
    assert [r["offset"] for r in read_dead_letters(path)] == [100]
    monkeypatch.setattr(os, "write", real_write)
    sink.flush()  # forgotten: the consumer loop sends the batch's letters again
    assert [r["offset"] for r in read_dead_letters(path)] == [100]
    sink.send(letters[1])
    sink.flush()
    assert [r["offset"] for r in read_dead_letters(path)] == [100, 101]
    sink.close()


def test_the_file_is_named_after_the_dlq_topic_safely(tmp_path: Path) -> None:
    settings = load(ConsumerSettings, {}, kafka_topic="movielog7", dlq_dir=tmp_path)
    assert settings.dlq_file == tmp_path / "movielog7.dlq.jsonl"
    odd = load(ConsumerSettings, {}, dlq_topic="../a b/c", dlq_dir=tmp_path)
    assert odd.dlq_file.parent == tmp_path and odd.dlq_file.name == ".._a_b_c.jsonl"
    with pytest.raises(SettingsError, match="MOVIEREC_DLQ_SINK"):
        load(ConsumerSettings, {"MOVIEREC_DLQ_SINK": "s3"})


# -- choosing the sink at start ----------------------------------------------------------


def _refuse(exc: Exception):
    def ensure() -> None:
        raise exc
    return ensure


def test_auto_switches_to_the_file_when_the_broker_refuses_the_topic(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    metrics = ConsumerMetrics.create()
    settings = _settings(tmp_path, "auto")
    with caplog.at_level(logging.WARNING, logger="stream_consumer.dlq_sinks"):
        sink = open_sink(settings, lambda r: metrics.dlq_fallbacks.labels(r).inc(),
                         ensure=_refuse(InvalidTopicError("collides with an existing topic")),
                         producer=lambda: pytest.fail("no producer for a refused topic"))
    assert isinstance(sink, FallbackSink) and sink.kafka is None
    assert sink.where == f"file {settings.dlq_file}"
    assert _counted(metrics, "InvalidTopicError") == 1.0
    assert [r.getMessage() for r in caplog.records if "from now on" in r.getMessage()] == [
        f"dead letters go to file {settings.dlq_file} from now on: the broker refused to "
        f"create topic movielog.dlq: [Error 17] InvalidTopicError: collides with an existing topic"]
    sink.send(_letters()[0])
    sink.flush()
    sink.close()
    assert [r["offset"] for r in read_dead_letters(settings.dlq_file)] == [100]


def test_kafka_mode_stops_on_a_refused_topic_and_auto_on_a_silent_broker(tmp_path: Path) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        open_sink(_settings(tmp_path, "kafka"), lambda r: None,
                  ensure=_refuse(TopicAuthorizationFailedError()), producer=Producer)
    with pytest.raises(KafkaTimeoutError):  # the consumer could not read either
        open_sink(_settings(tmp_path, "auto"), lambda r: None,
                  ensure=_refuse(KafkaTimeoutError("Unable to bootstrap")), producer=Producer)


def test_each_mode_picks_its_sink(tmp_path: Path) -> None:
    file = open_sink(_settings(tmp_path, "file"), lambda r: None,
                     ensure=lambda: pytest.fail("file mode never asks the broker"), producer=Producer)
    kafka = open_sink(_settings(tmp_path, "kafka"), lambda r: None, ensure=lambda: 1, producer=Producer)
    auto = open_sink(_settings(tmp_path, "auto"), lambda r: None, ensure=lambda: 1, producer=Producer)
    assert isinstance(file, FileSink) and isinstance(kafka, KafkaSink)
    assert isinstance(auto, FallbackSink) and auto.kafka is not None
    assert auto.where.startswith("topic movielog.dlq (or file ")


# -- switching at run time ---------------------------------------------------------------


def _auto(tmp_path: Path, producer: Producer, metrics: ConsumerMetrics) -> FallbackSink:
    return FallbackSink(KafkaSink(producer, "movielog.dlq"), FileSink(tmp_path / "d.jsonl"),
                        lambda r: metrics.dlq_fallbacks.labels(r).inc())


def test_a_refused_flush_rewrites_the_unacknowledged_letters_to_the_file(tmp_path: Path) -> None:
    letters = _letters()
    too_large = {letters[1], letters[3]}
    # flush() raising while a too-large batch is split is kafka-python 3.0.12's behaviour
    producer = Producer(lambda v: MessageSizeTooLargeError() if v in too_large else None,
                        flush_raises=UnknownError("Future not done"))
    metrics = ConsumerMetrics.create()
    sink = _auto(tmp_path, producer, metrics)
    for value in letters:
        sink.send(value)
    sink.flush()  # returns: every letter is durable somewhere
    assert [r["offset"] for r in read_dead_letters(tmp_path / "d.jsonl")] == [101, 103]
    assert _counted(metrics, "MessageSizeTooLargeError") == 1.0
    assert sink.kafka is None and producer.closed
    sink.send(letters[0])  # from now on, the file only
    sink.flush()
    assert len(producer.sent) == 4
    assert [r["offset"] for r in read_dead_letters(tmp_path / "d.jsonl")] == [101, 103, 100]
    sink.close()


def test_a_refused_send_fails_the_batch_without_asking_again_and_switches(tmp_path: Path) -> None:
    producer = Producer(send_raises=TopicAuthorizationFailedError({"movielog.dlq"}))
    metrics = ConsumerMetrics.create()
    sink = _auto(tmp_path, producer, metrics)
    letters = _letters()
    for value in letters:
        sink.send(value)
    assert len(producer.sent) == 1  # not one max_block_ms wait per letter
    sink.flush()
    assert [r["offset"] for r in read_dead_letters(tmp_path / "d.jsonl")] == [100, 101, 102, 103]
    assert _counted(metrics, "TopicAuthorizationFailedError") == 1.0


def test_a_passing_failure_is_retried_on_kafka_not_sent_to_the_file(tmp_path: Path) -> None:
    failing = [True]
    producer = Producer(lambda v: KafkaTimeoutError("broker away") if failing[0] else None)
    metrics = ConsumerMetrics.create()
    sink = _auto(tmp_path, producer, metrics)
    letters = _letters()[:2]
    for value in letters:
        sink.send(value)
    with pytest.raises(DeadLetterSendError) as raised:
        sink.flush()
    assert raised.value.retriable and not raised.value.refused and raised.value.unacked == letters
    assert sink.kafka is not None and not (tmp_path / "d.jsonl").exists()
    assert _counted(metrics, "KafkaTimeoutError") is None
    failing[0] = False  # the loop sends the batch again; the broker is back
    for value in letters:
        sink.send(value)
    sink.flush()
    assert producer.sent == letters + letters and not (tmp_path / "d.jsonl").exists()


def test_kafka_mode_never_falls_back_and_reports_refused_records_to_the_loop(tmp_path: Path) -> None:
    """Before the sinks, a record the broker refused was dropped silently (flush() does not
    report it); now the loop sees a KafkaError and retries without committing."""
    sink = KafkaSink(Producer(lambda v: MessageSizeTooLargeError()), "movielog.dlq")
    sink.send(_letters()[0])
    with pytest.raises(DeadLetterSendError) as raised:
        sink.flush()
    assert raised.value.refused and raised.value.reason == "MessageSizeTooLargeError"
    sink.flush()  # the failed letters were handed back, not kept


def test_a_refused_metadata_request_short_cuts_the_batch(tmp_path: Path) -> None:
    """kafka-python returns a failed future (it does not raise) when the topic's metadata
    is refused: the rest of the batch is not sent, and the auto sink switches."""
    producer = Producer(lambda v: TopicAuthorizationFailedError({"movielog.dlq"}), decided=True)
    metrics = ConsumerMetrics.create()
    sink = _auto(tmp_path, producer, metrics)
    for value in _letters():
        sink.send(value)
    assert len(producer.sent) == 1
    sink.flush()
    assert [r["offset"] for r in read_dead_letters(tmp_path / "d.jsonl")] == [100, 101, 102, 103]
    assert _counted(metrics, "TopicAuthorizationFailedError") == 1.0


def test_kafka_mode_stops_on_refused_records_and_retries_passing_failures() -> None:
    """MOVIEREC_DLQ_SINK=kafka: a refusal is not a KafkaError (the loop does not retry it,
    the process stops uncommitted); a timeout stays a retriable DeadLetterSendError."""
    sink = KafkaSink(Producer(lambda v: MessageSizeTooLargeError()), "movielog.dlq", strict=True)
    sink.send(_letters()[0])
    with pytest.raises(DeadLetterRefused, match="MOVIEREC_DLQ_SINK=kafka") as raised:
        sink.flush()
    assert not isinstance(raised.value, KafkaError)  # so the loop does not retry it
    sink = KafkaSink(Producer(lambda v: KafkaTimeoutError("away")), "movielog.dlq", strict=True)
    sink.send(_letters()[0])
    with pytest.raises(DeadLetterSendError):
        sink.flush()


def test_only_definite_answers_are_refusals() -> None:
    for refusal in (TopicAuthorizationFailedError(), InvalidTopicError(), MessageSizeTooLargeError(),
                    UnknownTopicOrPartitionError(), ValueError("bad topic name")):
        assert is_refusal(refusal), refusal
    # a broker glitch and the idempotent producer's sequence errors pass: retried on Kafka
    for passing in (UnknownError(), OutOfOrderSequenceNumberError(), UnknownProducerIdError(),
                    KafkaTimeoutError()):
        assert not is_refusal(passing), passing


def test_a_tail_torn_by_another_member_is_cut_before_the_next_append(tmp_path: Path) -> None:
    """Two consumers of a group on one host share the file; one dies mid-write. The other,
    whose file is already open, cuts the torn line under the lock before appending."""
    letters = _letters()
    sink = FileSink(tmp_path / "d.jsonl")
    sink.send(letters[0])
    sink.flush()
    with open(tmp_path / "d.jsonl", "ab") as other:  # a member killed mid-write
        other.write(letters[1][:25])
    sink.send(letters[2])
    sink.flush()
    assert [r["offset"] for r in read_dead_letters(tmp_path / "d.jsonl")] == [100, 102]


def test_a_failed_first_open_is_retried_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's fsync fails on the first flush: nothing is kept half-open, and the next
    flush opens again and writes the letters the loop sends again."""
    real_fsync, calls = os.fsync, []

    def fails_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fails_once)
    sink = FileSink(tmp_path / "new" / "d.jsonl")
    sink.send(_letters()[0])
    with pytest.raises(OSError):
        sink.flush()
    assert sink._fd is None
    sink.send(_letters()[0])
    sink.flush()
    assert [r["offset"] for r in read_dead_letters(tmp_path / "new" / "d.jsonl")] == [100]
