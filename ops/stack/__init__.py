"""The local stack as a whole: Kafka, Redis, Prometheus, Alertmanager and the alert
receiver on 127.0.0.1.

``up`` and ``down`` are idempotent; ``down`` stops only what movierec started.
"""

from __future__ import annotations

from collections.abc import Iterable

from ops.stack.alerting import AlertmanagerServer, AlertReceiver
from ops.stack.kafka_broker import KafkaBroker
from ops.stack.part import Part, PartStatus
from ops.stack.prometheus_server import PrometheusServer
from ops.stack.redis_server import RedisServer
from ops.stack.settings import StackSettings

PART_NAMES = ("kafka", "redis", "receiver", "alertmanager", "prometheus")


def parts(settings: StackSettings, names: Iterable[str] = PART_NAMES) -> list[Part]:
    """The parts named, in start order."""
    chosen = set(names)
    unknown = chosen - set(PART_NAMES)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; choose from {', '.join(PART_NAMES)}")
    every = [KafkaBroker(settings), RedisServer(settings), AlertReceiver(settings),
             AlertmanagerServer(settings), PrometheusServer(settings)]
    return [p for p in every if p.name in chosen]


def up(settings: StackSettings, names: Iterable[str] = PART_NAMES) -> list[PartStatus]:
    return [part.up() for part in parts(settings, names)]


def down(settings: StackSettings, names: Iterable[str] = PART_NAMES) -> list[str]:
    """Stop the named parts (reverse start order); the names of those stopped."""
    return [part.name for part in reversed(parts(settings, names)) if part.down()]


def status(settings: StackSettings, names: Iterable[str] = PART_NAMES) -> list[PartStatus]:
    return [part.status() for part in parts(settings, names)]
