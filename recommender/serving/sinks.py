"""The sinks served records go to (``telemetry.Telemetry`` hands each batch to every one):
Kafka, the record of what was served for online evaluation and grading, and Redis, the
index behind ``/provenance`` (``provenance_lookup.ProvenanceLookup`` reads it).

Both run on the telemetry thread only, never on a request thread; a sink's exception is
counted by ``Telemetry`` and the batch is not retried.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from movierec.kafka_admin import ensure_topic, unreachable
from recommender.serving.telemetry import ServedRecord, TelemetryError, encode_served
from stores.online import OnlineStore, OnlineStoreError, ServedLine

log = logging.getLogger(__name__)


def partition_values(records: Sequence[ServedRecord], partitions: Sequence[int],
                     max_bytes: int) -> list[tuple[int, bytes]]:
    """``records`` as (partition, value) messages: a user's records always go to the same
    partition of ``partitions`` (``user_id`` modulo their number), in their order, as many
    to a value (``encode_served``) as fit in ``max_bytes`` (a record longer than that
    alone). Pure."""
    if not partitions:
        raise ValueError("no partitions to send to")
    groups: dict[int, list[ServedRecord]] = {}
    for r in records:
        groups.setdefault(partitions[r.user_id % len(partitions)], []).append(r)
    out = []
    for partition, group in groups.items():
        chunk: list[ServedRecord] = []
        size = 0
        for r in group:
            n = len(r.to_json()) + 1
            if chunk and size + n > max_bytes:
                out.append((partition, encode_served(chunk)))
                chunk, size = [], 0
            chunk.append(r)
            size += n
        out.append((partition, encode_served(chunk)))
    return out


class KafkaSink:
    """Served records to a Kafka topic (kafka-python): each batch as one message per
    partition it touches (``partition_values``: a user's records stay in order within
    one partition, as with the user id for a key), the value ``encode_served``'s lines.

    The producer is created on the publisher thread at the first batch (never at import
    or construction), and again on the next batch after a failure, unless records of the
    failed batch are still in flight: kafka-python's ``close`` then raises before it stops
    its sender thread, so the producer is kept (it reconnects on its own) rather than
    leaking a thread per failure. A plain TCP connect to the first bootstrap address comes
    before each creation: a down broker is reported in milliseconds and kafka-python never
    sees the refused connection (``movierec.kafka_admin.unreachable``).
    Each batch is flushed and every send checked, so a batch that raises did not (all)
    get there.
    """

    CONNECT_TIMEOUT_S = 1.0
    MAX_BLOCK_MS = 500        # longest send() waits for metadata or buffer space
    FLUSH_TIMEOUT_S = 10.0    # longest wait for a batch's acks

    PARTITIONS = 4  # of the served topic when this sink creates it
    MAX_VALUE_BYTES = 256 * 1024  # a value's most bytes, well under the broker's 1 MiB

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self._topic_checked = False
        self._producer: Any = None
        self._pid: int | None = None
        self._inherited: Any = None  # a forked child's copy of its parent's producer

    def _connect(self) -> Any:
        if self._producer is not None and self._pid == os.getpid():
            return self._producer
        from kafka import KafkaProducer

        if self._producer is not None:
            # forked: the copy's sockets and thread are the parent's. Keep a reference, or
            # its __del__ would close it (and flush, and close the parent's sockets).
            self._inherited, self._producer = self._producer, None
        if down := unreachable(self.bootstrap, timeout_s=self.CONNECT_TIMEOUT_S):
            raise TelemetryError(f"no Kafka broker ({down})")
        if not self._topic_checked:
            self._ensure_topic()
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, client_id="movierec-serve-telemetry",
                acks=1, linger_ms=20, compression_type="lz4", max_block_ms=self.MAX_BLOCK_MS,
                bootstrap_timeout_ms=2000, request_timeout_ms=5000, delivery_timeout_ms=8000,
            )
        except Exception as exc:
            raise TelemetryError(f"Kafka producer for {self.bootstrap} failed: {exc}") from None
        self._pid = os.getpid()
        return self._producer

    def _ensure_topic(self) -> None:
        """Create the served topic once (brokers often refuse auto-creation). A refusal
        (no rights on a shared broker) is logged, not fatal: the topic may exist."""
        try:
            ensure_topic(self.bootstrap, self.topic, self.PARTITIONS, timeout_ms=3000)
        except Exception as exc:
            log.warning("could not create or check topic %s: %s", self.topic, exc)
        self._topic_checked = True

    def publish(self, records: list[ServedRecord]) -> None:
        producer = self._connect()
        try:
            partitions = sorted(producer.partitions_for(self.topic) or ())  # metadata: cached
            futures = [producer.send(self.topic, value=value, partition=partition)
                       for partition, value in partition_values(records, partitions,
                                                                self.MAX_VALUE_BYTES)]
            producer.flush(timeout=self.FLUSH_TIMEOUT_S)  # afterwards every future is done
            error = next((f.exception for f in futures if f.failed()), None)
            if error is not None:
                raise error
        except Exception as exc:
            self._drop(producer)
            raise TelemetryError(
                f"Kafka send to {self.topic} failed: {type(exc).__name__}: {exc}") from None

    def _drop(self, producer: Any) -> None:
        """Close a failed producer so the next batch makes a new one; keep it if records
        are still in flight (see the class docstring)."""
        try:
            producer.close(timeout=0)
        except Exception as exc:
            log.debug("failed Kafka producer kept, records in flight: %s", exc)
            return
        self._producer = None

    def close(self, timeout: float = 5.0) -> None:
        """Flush and close the producer (shutdown)."""
        if self._producer is not None and self._pid == os.getpid():
            self._producer.close(timeout=timeout)
        self._producer = None


class RedisProvenanceSink:
    """Served records to the online store, for /provenance (``provenance_lookup``): the
    store keeps each under its request id and in a per-user index, both expiring after
    the store's provenance TTL (``RedisOnlineStore.write_served``, one script call per
    ``PROVENANCE_CHUNK`` records: four plain commands a record cost this thread ~58 us of
    CPU per record, and the thread shares the GIL with the requests; the script's
    arguments cost ~12 us, measured with hiredis, batches of 500)."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store

    def publish(self, records: list[ServedRecord]) -> None:
        lines = [ServedLine(r.request_id, r.user_id, r.time_ms, r.to_json()) for r in records]
        try:
            self.store.write_served(lines)
        except OnlineStoreError as exc:
            raise TelemetryError(f"provenance write failed: {exc}") from None
