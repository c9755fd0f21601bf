"""Where simulated log lines go: one small adapter over Kafka clients (and a file).

kafka-python is the project's Kafka client. For the bulk path (backfill) it is the
bottleneck: on this box it produces 24k lines/s (29k with lz4), where confluent-kafka
produces 475k (829k with lz4) - see docs/benchmarks.md. So a sink is chosen by name,
and the backfill asks for ``confluent``; everything else uses ``kafka-python``.

Lines are keyed by user id, so one user's events stay in order within a partition.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from movierec.errors import MovierecError

if TYPE_CHECKING:  # an optional extra (movierec[sim]), imported where used
    from confluent_kafka import KafkaError, Message


class SinkError(MovierecError):
    """The sink could not deliver lines (broker down, disk full, ...)."""


class LineSink(Protocol):
    def send(self, line: bytes, key: bytes) -> None: ...
    def flush(self, timeout_s: float = 60.0) -> None: ...
    def close(self) -> None: ...


class KafkaPythonSink:
    """kafka-python producer, batched and lz4-compressed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1,
            compression_type="lz4", client_id="movierec-sim",
        )

    def send(self, line: bytes, key: bytes) -> None:
        self._producer.send(self.topic, key=key, value=line)

    def flush(self, timeout_s: float = 60.0) -> None:
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise SinkError(f"kafka-python flush failed: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=10)


class ConfluentSink:
    """confluent-kafka (librdkafka) producer for bulk writes; delivery errors are counted."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        try:
            from confluent_kafka import Producer
        except ImportError:  # an extra: pip install 'movierec[sim]' (make setup installs it)
            raise SinkError("the bulk producer needs confluent-kafka, which comes with the "
                            "simulator's extra: pip install 'movierec[sim]'") from None

        self.topic = topic
        self.failed = 0
        self._error: str | None = None
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "client.id": "movierec-sim",
            "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
            "acks": 1, "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": False,
        })

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            self._error = str(err)

    def send(self, line: bytes, key: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, line, key, on_delivery=self._delivered)
                self._producer.poll(0)  # serve delivery reports as they come, not 1M at once
                return
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)

    def flush(self, timeout_s: float = 60.0) -> None:
        left = self._producer.flush(timeout_s)
        if left or self.failed:
            raise SinkError(f"{left} lines undelivered, {self.failed} failed: {self._error}")

    def close(self) -> None:
        self._producer.flush(10)
        # Drop the producer now: its delivery callback refers back to this sink, and until
        # the cycle is collected librdkafka's threads keep reconnecting (and logging).
        self._producer = None  # type: ignore[assignment]  # closed: never used again


class FileSink:
    """Lines to a file, one per line: for inspection and offline tests."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("wb")  # a new history replaces the old: time never goes back

    def send(self, line: bytes, key: bytes) -> None:
        self._fh.write(line + b"\n")

    def flush(self, timeout_s: float = 60.0) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def open_sink(kind: str, *, bootstrap: str = "", topic: str = "", path: Path | None = None) -> LineSink:
    """``kafka-python``, ``confluent`` or ``file``."""
    if kind == "kafka-python":
        return KafkaPythonSink(bootstrap, topic)
    if kind == "confluent":
        return ConfluentSink(bootstrap, topic)
    if kind == "file":
        if path is None:
            raise ValueError("the file sink needs a path")
        return FileSink(path)
    raise ValueError(f"unknown sink {kind!r}: kafka-python, confluent or file")
