"""A real local stack (Kafka, Redis, Prometheus) for the integration tests.

It runs on ports of its own in a temporary folder, so it never disturbs a stack a
developer has running, and it stops exactly what it started.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from movierec.settings import load
from ops import stack as stack_mod
from ops.stack.settings import StackSettings
from tests.conftest import free_ports


@dataclass(frozen=True)
class LocalStack:
    settings: StackSettings
    metrics_port: int  # a port Prometheus scrapes as job "testjob"

    @property
    def bootstrap(self) -> str:
        return self.settings.local_bootstrap

    @property
    def redis_url(self) -> str:
        return self.settings.local_redis_url

    @property
    def prometheus_url(self) -> str:
        return self.settings.local_prometheus_url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    kafka, controller, redis_port, prom, metrics, alertmanager, receiver = free_ports(7)
    settings = load(
        StackSettings,
        var_dir=tmp_path_factory.mktemp("stack"),
        kafka_port=kafka,
        kafka_controller_port=controller,
        redis_port=redis_port,
        prometheus_port=prom,
        prometheus_scrape_s=1,
        alertmanager_port=alertmanager,
        alert_receiver_port=receiver,
        alert_group_wait_s=1,
        scrape_targets=f"testjob=127.0.0.1:{metrics}",
        kafka_topic="movielog-it",
    )
    try:
        stack_mod.up(settings)
        yield LocalStack(settings, metrics)
    finally:
        stack_mod.down(settings)


@pytest.fixture
def unique() -> str:
    """A fresh name for topics, groups and key prefixes."""
    return "it-" + uuid.uuid4().hex[:10]


@pytest.fixture
def redis_client(stack: LocalStack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    yield client
    client.close()
