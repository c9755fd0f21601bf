"""Reading a Kafka topic once, to the end it had when reading began (kafka-python).

The grader (``simulator.grade_probe``) and the online evaluation (``online_eval``) both
read a topic this way: no consumer group, nothing committed, optionally only what was
written since a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from movierec.errors import MovierecError


class _Consumer(Protocol):
    """The part of kafka-python's KafkaConsumer that ``drain`` uses."""

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[Any]]: ...

    def position(self, partition: Any, timeout_ms: int | None = None) -> int: ...


def drain(
    consumer: _Consumer,
    ends: dict[Any, int],
    feed: Callable[[bytes, int], None],
    *,
    timeout_s: float,
    idle_s: float,
) -> list[str]:
    """Poll until every partition reaches its end offset in ``ends``; feed each value with
    its record's timestamp (epoch ms; -1 when the record has none).

    Records at or past the end offset (written after the start) are skipped. Stops early
    after ``timeout_s`` in all or ``idle_s`` without a record; returns notes saying so.
    """
    give_up = time.monotonic() + timeout_s

    def behind(tp: Any) -> bool:  # position() waits forever unless told otherwise
        left_ms = max(1, int((give_up - time.monotonic()) * 1000))
        return consumer.position(tp, timeout_ms=left_ms) < ends[tp]

    remaining = {tp for tp in ends if behind(tp)}
    last_record = time.monotonic()
    while remaining:
        now = time.monotonic()
        if now >= give_up or now - last_record >= idle_s:
            why = f"{timeout_s:g} s in all" if now >= give_up else f"{idle_s:g} s without a record"
            left = ", ".join(str(getattr(tp, "partition", tp)) for tp in sorted(remaining, key=str))
            return [f"incomplete: stopped after {why}; partitions not read to the end: {left}"]
        batch = consumer.poll(timeout_ms=500)
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends.get(tp, 0):
                    feed(record.value, record.timestamp)
            last_record = time.monotonic()
        remaining = {tp for tp in remaining if behind(tp)}
    return []


def seek_since(consumer: Any, partitions: Sequence[Any], since_ms: int | None) -> None:
    """Position each assigned partition at its first record written at or after
    ``since_ms`` (epoch ms of Kafka's record timestamps), at its end when there is none;
    at its beginning when ``since_ms`` is None."""
    consumer.seek_to_beginning(*partitions)
    if since_ms is None:
        return
    for tp, found in consumer.offsets_for_times({tp: since_ms for tp in partitions}).items():
        if found is None:  # nothing written since
            consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, found.offset)


class TopicReadError(MovierecError):
    """A topic could not be read: no such topic, or the broker failed mid-read."""


def read_once(bootstrap: str, topic: str, feed: Callable[[bytes, int], None], *, client_id: str,
              timeout_s: float, idle_s: float, since_ms: int | None = None,
              fetch_bytes: int = 1024 * 1024) -> list[str]:
    """Feed every value of ``topic``, with its record's timestamp (epoch ms), from its
    beginning (or from ``since_ms``, see ``seek_since``) to the end offsets of now, then
    stop; returns ``drain``'s notes.

    No consumer group, nothing committed, no topic created (safe on the course's broker).
    ``fetch_bytes`` bounds one partition's fetch: small fetches keep partitions close in
    time while they interleave. ``TopicReadError`` when the topic does not exist or the
    broker fails mid-read (a clear error, not a hang).
    """
    # imported here: kafka-python is slow to import and only readers need it
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from movierec.kafka_records import install as install_bulk_decoding

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, client_id=client_id, group_id=None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        allow_auto_create_topics=False, consumer_timeout_ms=int(idle_s * 1000),
        max_poll_records=5000, max_partition_fetch_bytes=fetch_bytes)
    install_bulk_decoding(consumer)  # a whole topic: records decoded in bulk, ~4x less CPU (always)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise TopicReadError(f"topic {topic!r} not found at {bootstrap}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        seek_since(consumer, tps, since_ms)
        return drain(consumer, consumer.end_offsets(tps), feed, timeout_s=timeout_s,
                     idle_s=idle_s)
    except KafkaError as exc:
        raise TopicReadError(f"reading {topic!r} at {bootstrap} failed: {exc}") from None
    finally:
        consumer.close()
