"""Small Kafka admin adapter over kafka-python: is the broker up, ensure topics exist."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from kafka import KafkaAdminClient
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


def admin_client(bootstrap: str, *, timeout_ms: int = 3000) -> KafkaAdminClient:
    """An admin client that gives up after ``timeout_ms`` instead of retrying for a minute."""
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="movierec-admin",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
        reconnect_backoff_max_ms=500,
    )


@contextmanager
def _client_logs_muted() -> Iterator[None]:
    """kafka-python logs every refused connection at ERROR; a probe expects refusals."""
    logger = logging.getLogger("kafka")
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def unreachable(bootstrap: str, *, timeout_s: float) -> str | None:
    """None if the first bootstrap address accepts a TCP connection, else why not.

    Call it before creating a kafka-python client: it answers "down" in milliseconds, and
    it spares kafka-python refused connections, whose sockets it leaks (ResourceWarning
    in 3.0.12)."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        return f"no broker answered at {bootstrap}: {exc}"
    return None


def broker_probe(bootstrap: str, *, timeout_ms: int = 3000) -> str | None:
    """None if the cluster answers a metadata request, else why not.

    Costs ~0.1 s against a live broker; ``unreachable`` goes first."""
    if down := unreachable(bootstrap, timeout_s=timeout_ms / 1000):
        return down
    with _client_logs_muted():
        try:
            client = admin_client(bootstrap, timeout_ms=timeout_ms)
        except KafkaError as exc:
            return f"no broker answered at {bootstrap}: {type(exc).__name__}"
        try:
            client.describe_cluster()
            return None
        except KafkaError as exc:
            return f"metadata request failed: {type(exc).__name__}: {exc}"
        finally:
            client.close()


def ensure_topic(bootstrap: str, name: str, partitions: int, *, timeout_ms: int = 10000) -> int:
    """Create ``name`` with ``partitions`` partitions, or grow it to that many.

    Returns the partition count afterwards. Never shrinks a topic (Kafka cannot).
    """
    client = admin_client(bootstrap, timeout_ms=timeout_ms)
    try:
        try:
            client.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
            log.info("created topic %s with %d partitions", name, partitions)
            return partitions
        except TopicAlreadyExistsError:
            pass
        described = client.describe_topics([name])
        have = len(described[0]["partitions"])
        if have < partitions:
            client.create_partitions({name: NewPartitions(total_count=partitions)})
            log.info("grew topic %s from %d to %d partitions", name, have, partitions)
            return partitions
        return have
    finally:
        client.close()


def _extent(bootstrap: str, topic: str) -> tuple[list, dict, dict] | None:
    """(partitions, beginning offsets, end offsets) of ``topic``; None when it does not
    exist. A consumer without a group: reading offsets commits nothing."""
    from kafka import KafkaConsumer, TopicPartition  # slow to import: only when asked

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             client_id="movierec-offsets", enable_auto_commit=False,
                             allow_auto_create_topics=False)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        return tps, consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    finally:
        consumer.close()


def topic_lines(bootstrap: str, topic: str) -> int:
    """Records ``topic`` holds now (0 when it does not exist)."""
    extent = _extent(bootstrap, topic)
    if extent is None:
        return 0
    tps, starts, ends = extent
    return sum(ends[tp] - starts[tp] for tp in tps)


def group_lag(bootstrap: str, group: str, topic: str, *, timeout_ms: int = 5000) -> int | None:
    """Lines of ``topic`` that consumer ``group`` has not committed yet, summed over
    partitions; None while the topic does not exist. A partition the group never
    committed counts from its beginning offset. Retriable broker errors (no group
    coordinator yet, on a broker that has never had a group) are retried for
    ``timeout_ms``."""
    extent = _extent(bootstrap, topic)
    if extent is None:
        return None
    tps, starts, ends = extent
    client = admin_client(bootstrap, timeout_ms=timeout_ms)
    try:
        committed = _retrying(lambda: client.list_group_offsets({group: tps}).get(group, {}),
                              timeout_ms)
    finally:
        client.close()
    lag = 0
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        lag += max(0, ends[tp] - done)
    return lag


T = TypeVar("T")


def _retrying(call: Callable[[], T], timeout_ms: int) -> T:
    """``call()``, again after a retriable ``KafkaError`` until ``timeout_ms`` has passed."""
    give_up = time.monotonic() + timeout_ms / 1000
    while True:
        try:
            return call()
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > give_up:
                raise
            time.sleep(0.2)


def delete_topics(bootstrap: str, names: list[str], *, timeout_ms: int = 10000) -> list[str]:
    """Delete those of ``names`` that exist and wait until the broker no longer lists
    them (deletion is asynchronous: creating one again too early fails); returns the ones
    deleted."""
    client = admin_client(bootstrap, timeout_ms=timeout_ms)
    try:
        present = [n for n in names if n in set(client.list_topics())]
        if present:
            client.delete_topics(present, timeout_ms=timeout_ms)
            give_up = time.monotonic() + timeout_ms / 1000
            while set(present) & set(client.list_topics()):
                if time.monotonic() > give_up:
                    raise KafkaError(f"topics {present} still listed {timeout_ms} ms after deletion")
                time.sleep(0.2)
            log.info("deleted topics %s", ", ".join(present))
        return present
    finally:
        client.close()
