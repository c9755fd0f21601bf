"""Small Kafka admin adapter over kafka-python: is the broker up, ensure topics exist."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

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
