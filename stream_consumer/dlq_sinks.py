"""Where dead letters go: the Kafka dead-letter topic, a local file, or Kafka with the file
as a fallback for a broker that refuses the topic (issue #4: the consumer works unchanged
against the course's broker, and never drops a rejected line silently).

Every sink has the contract the consumer loop relies on (``StreamConsumer.process``):
``send(value)`` takes one ``dlq.dead_letter()`` record and never blocks for long;
``flush()`` returns only once every letter sent since the last flush is durable, else
raises (a ``KafkaError`` or ``OSError``, which the loop retries; ``DeadLetterRefused``
in strict Kafka mode, which stops it) having forgotten those letters: the loop sends the
whole batch's letters again before the next flush, and commits the batch's offsets only
after a flush returned (at-least-once; a retry may write a letter twice, never zero
times).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidRecordError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from movierec.errors import MovierecError

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from kafka.producer.future import FutureRecordMetadata

    from stream_consumer.settings import ConsumerSettings

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 30.0
"""How long a Kafka flush waits for the broker's acknowledgements, s: above the
producer's ``DELIVERY_TIMEOUT_MS``, so every record's fate is known within a flush."""
REQUEST_TIMEOUT_MS = 15_000
DELIVERY_TIMEOUT_MS = 25_000
"""kafka-python's default (120 s) outlasts a flush, which would then only ever see a
timeout, never the broker's answer (``UnknownTopicOrPartitionError`` for a deleted topic
comes only once delivery gave up). It must be >= linger_ms + request_timeout_ms."""

REFUSALS = (TopicAuthorizationFailedError, ClusterAuthorizationFailedError, InvalidTopicError,
            PolicyViolationError, MessageSizeTooLargeError, RecordListTooLargeError,
            InvalidRecordError, UnknownTopicOrPartitionError)
"""The broker's answers that mean "not these letters, not here, not ever": rights, the
topic's name or policy, the records' size or form, a topic that is gone (a future fails
with it only after delivery gave up, see ``DELIVERY_TIMEOUT_MS``). An allow-list: a
glitch such as UNKNOWN_SERVER_ERROR or the idempotent producer's sequence errors is
passing, and must not split the letters between the topic and the file for good."""


class DeadLetterSink(Protocol):
    @property
    def where(self) -> str: ...
    def send(self, value: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def is_refusal(exc: BaseException) -> bool:
    """True when the broker (or kafka-python's check of the topic name) said no for good:
    not authorised, invalid or colliding topic name, policy, record too large, ... .
    False for what passes (timeouts, a broker that is down): those are retried."""
    if isinstance(exc, ValueError):  # kafka.util.ensure_valid_topic_name, before any request
        return True
    return isinstance(exc, REFUSALS)


class DeadLetterSendError(MovierecError, KafkaError):
    """Some dead letters of a flush were not acknowledged; ``failed`` holds each with its
    error. Retriable (the loop tries the batch again) unless the broker refused them."""

    def __init__(self, failed: list[tuple[bytes, BaseException]], total: int) -> None:
        self.failed = failed
        first = next((e for _, e in failed if is_refusal(e)), failed[0][1])
        self.refused = is_refusal(first)
        self.retriable = not self.refused
        self.reason = type(first).__name__
        super().__init__(f"{len(failed)} of {total} dead letters not acknowledged: {first}")

    @property
    def unacked(self) -> list[bytes]:
        return [value for value, _ in self.failed]


class DeadLetterRefused(MovierecError):
    """``MOVIEREC_DLQ_SINK=kafka`` and the broker refused dead letters for good: not a
    ``KafkaError``, so the consumer loop does not retry it; the process stops with the
    batch uncommitted (it comes again once the topic takes the letters)."""


class KafkaSink:
    """The dead-letter topic through a kafka-python ``KafkaProducer``. ``strict``: a
    refusal raises ``DeadLetterRefused`` (the process stops) instead of a retriable
    ``DeadLetterSendError`` (``FallbackSink`` needs the latter, to switch)."""

    def __init__(self, producer: KafkaProducer, topic: str, *, flush_timeout_s: float = FLUSH_TIMEOUT_S,
                 strict: bool = False) -> None:
        self.producer, self.topic, self.flush_timeout_s = producer, topic, flush_timeout_s
        self.strict = strict
        # (value, record future or error)
        self._pending: list[tuple[bytes, FutureRecordMetadata | BaseException]] = []
        self._failed: BaseException | None = None

    @property
    def where(self) -> str:
        return f"topic {self.topic}"

    def send(self, value: bytes) -> None:
        if self._failed is not None:  # one refused or timed-out send fails the batch: do
            self._pending.append((value, self._failed))  # not wait max_block_ms per letter
            return
        try:
            future = self.producer.send(self.topic, value=value)
        except (KafkaError, ValueError) as exc:  # metadata timeout, bad name
            self._failed = exc
            self._pending.append((value, exc))
            return
        self._pending.append((value, future))
        # kafka-python 3.0.12 returns an already failed future when the metadata request
        # was refused (not authorised: KafkaProducer.send catches it): stop asking too
        if getattr(future, "is_done", False) and future.failed() and is_refusal(future.exception):
            self._failed = future.exception

    def flush(self) -> None:
        pending, self._pending, self._failed = self._pending, [], None
        if not pending:
            return
        deadline = time.monotonic() + self.flush_timeout_s
        # The record futures below are the authority: flush() raises UnknownError
        # ("Future not done") while a batch the broker found too large is being split
        # (kafka-python 3.0.12, RecordAccumulator.await_flush_completion), and it
        # never reports a record that failed.
        with contextlib.suppress(KafkaError):
            self.producer.flush(timeout=self.flush_timeout_s)
        failed = []
        for value, outcome in pending:
            if isinstance(outcome, BaseException):
                failed.append((value, outcome))
                continue
            try:  # FutureRecordMetadata.get follows a split batch to its new futures
                outcome.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaError as exc:
                failed.append((value, exc))
        if failed:
            error = DeadLetterSendError(failed, len(pending))
            if self.strict and error.refused:
                raise DeadLetterRefused(
                    f"the broker refused dead letters for topic {self.topic} and "
                    f"MOVIEREC_DLQ_SINK=kafka: {error}") from error
            raise error

    def close(self) -> None:
        self.producer.close(timeout=10)


class FileSink:
    """Dead letters appended to a local JSON-lines file, one ``dead_letter()`` record a
    line (``dlq.read_dead_letters`` reads it back). ``flush`` writes the buffered letters
    with one append and fsyncs the file, so they survive a crash before the commit."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._buffer: list[bytes] = []
        self._fd: int | None = None

    @property
    def where(self) -> str:
        return f"file {self.path}"

    def send(self, value: bytes) -> None:
        if b"\n" in value:  # json.dumps escapes control characters: a dead letter has none
            raise ValueError("a dead letter must be one line")
        self._buffer.append(value)

    def flush(self) -> None:
        if not self._buffer:
            return
        data = b"".join(value + b"\n" for value in self._buffer)
        self._buffer = []
        fd = self._fd if self._fd is not None else self._open()
        # Consumers of one group on one host share the file: the lock keeps another's
        # committed letters out of reach of this one's truncate (flock(2), advisory).
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            _trim_torn_tail(fd, self.path)  # another member may have died mid-write
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:  # os.write may write less than asked (a full disk, a signal)
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # No torn line: the loop writes the whole batch again. If the truncate
                # fails too, _trim_torn_tail cuts the line when the file is opened next.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        """Open (create) the file and make a new name durable; only then is the descriptor
        kept, so a failure here is retried whole on the next flush."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if created:  # a new file's name is durable once its folder is synced (fsync(2))
                folder = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _trim_torn_tail(fd: int, path: Path) -> None:
    """Cut a last line without its newline: a crash in the middle of a flush, so its batch
    was never committed and comes again. Appending after it would spoil the next record.
    Call it holding the file's lock. Costs one 1-byte read when the tail is whole."""
    end = pos = os.lseek(fd, 0, os.SEEK_END)
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return
    while pos > 0:
        step = min(pos, 64 * 1024)
        chunk = os.pread(fd, step, pos - step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            pos = pos - step + cut + 1
            break
        pos -= step
    if pos < end:
        log.warning("cut a torn last dead letter (%d bytes) from %s", end - pos, path)
        os.ftruncate(fd, pos)
        os.fsync(fd)


class FallbackSink:
    """Kafka until the broker refuses the dead letters, then the file for good. A refusal
    is logged once and reported to ``on_fallback(reason)``; the letters Kafka did not
    acknowledge are written to the file in the same flush, so none is lost."""

    def __init__(self, kafka: KafkaSink | None, file: FileSink,
                 on_fallback: Callable[[str], None]) -> None:
        self.kafka, self.file, self.on_fallback = kafka, file, on_fallback

    @property
    def where(self) -> str:
        if self.kafka is None:
            return self.file.where
        return f"{self.kafka.where} (or {self.file.where} if the broker refuses it)"

    def switch(self, reason: str, detail: str) -> None:
        """From now on, the file. ``reason`` (an error's class name) labels the metric."""
        log.warning("dead letters go to %s from now on: %s", self.file.where, detail)
        self.on_fallback(reason)
        kafka, self.kafka = self.kafka, None
        if kafka is not None:
            kafka.close()

    def send(self, value: bytes) -> None:
        (self.kafka or self.file).send(value)

    def flush(self) -> None:
        if self.kafka is not None:
            try:
                self.kafka.flush()
                return
            except DeadLetterSendError as exc:
                if not exc.refused:
                    raise  # the broker may come back: the loop retries the batch
                self.switch(exc.reason, f"the broker refused topic {self.kafka.topic}: {exc}")
                for value in exc.unacked:
                    self.file.send(value)
        self.file.flush()

    def close(self) -> None:
        if self.kafka is not None:
            self.kafka.close()
        self.file.close()


def open_sink(settings: ConsumerSettings, on_fallback: Callable[[str], None], *,
              ensure: Callable[[], object] | None = None,
              producer: Callable[[], KafkaProducer] | None = None) -> DeadLetterSink:
    """The sink ``settings.dlq_sink`` asks for. ``kafka`` and ``auto`` first ensure the
    topic exists: a refusal stops ``kafka`` (it raises) and sends ``auto`` to the file; a
    broker that does not answer stops both, as the consumer could not read either.
    ``ensure`` and ``producer`` stand in for the real broker in unit tests."""
    file = FileSink(settings.dlq_file)
    if settings.dlq_sink == "file":
        return file
    if ensure is None:
        from movierec.kafka_admin import ensure_topic

        def ensure() -> object:
            return ensure_topic(settings.kafka_bootstrap, settings.dlq, 1)
    if producer is None:
        def producer() -> KafkaProducer:
            from kafka import KafkaProducer
            # max_block_ms: a send waits this long for the topic's metadata (default 60 s)
            return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                 client_id="movierec-consumer-dlq", linger_ms=5,
                                 max_block_ms=10_000, request_timeout_ms=REQUEST_TIMEOUT_MS,
                                 delivery_timeout_ms=DELIVERY_TIMEOUT_MS)
    try:
        ensure()
    except (KafkaError, ValueError) as exc:
        if settings.dlq_sink == "kafka" or not is_refusal(exc):
            raise
        sink = FallbackSink(None, file, on_fallback)
        sink.switch(type(exc).__name__, f"the broker refused to create topic {settings.dlq}: {exc}")
        return sink
    if settings.dlq_sink == "kafka":
        return KafkaSink(producer(), settings.dlq, strict=True)
    return FallbackSink(KafkaSink(producer(), settings.dlq), file, on_fallback)
