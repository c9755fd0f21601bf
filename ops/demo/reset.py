"""A clean slate for the demo: its topics, Redis keys, event store and registry.

The demo uses the default locations (topic ``movielog``, ``var/store``,
``var/registry``, the ``mr:`` Redis keys), so every command it prints works as written.
It wipes them only when they are empty, or when a previous demo made them: the marker
file ``var/demo/owned`` records exactly which locations the last demo used, and only
those same locations count as the demo's. Anything else needs ``movierec demo up
--reset``, so a developer's own data is never deleted by surprise.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from movierec.kafka_admin import admin_client, delete_topics, ensure_topic, topic_lines
from ops.demo.stages import DemoError
from ops.stack import procs

if TYPE_CHECKING:
    from ops.demo.flow import DemoPlan

SERVICES = ("loop", "dashboard", "online", "serve", "consume", "world")
"""The demo's background processes, in the order they are stopped."""


def marker(plan: DemoPlan) -> Path:
    return plan.demo_dir / "owned"


def locations(plan: DemoPlan) -> dict[str, str]:
    """Where the demo writes: what the marker records and a later demo compares."""
    c = plan.consumer
    return {"kafka": c.kafka_bootstrap, "topic": c.kafka_topic, "dlq": c.dlq,
            "served_topic": plan.serve.served_topic, "group": c.consumer_group,
            "redis": c.redis_url, "prefix": c.redis_prefix,
            "dlq_file": str(c.dlq_file.resolve()),
            "store": str(c.store_dir.resolve()), "registry": str(plan.train.registry_dir.resolve()),
            "experiments": str(plan.serve.serve_experiments_file.resolve())}


def owned_by_demo(plan: DemoPlan) -> bool:
    """True when the last demo used exactly these locations."""
    try:
        return json.loads(marker(plan).read_text()) == locations(plan)
    except (OSError, ValueError):
        return False


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _redis_keys(client: redis.Redis, prefix: str) -> Iterator[bytes]:
    yield from client.scan_iter(match=f"{prefix}:*", count=5000)


def stop_services(plan: DemoPlan) -> list[str]:
    """Stop the demo's background processes; the names of those that ran."""
    return [name for name in SERVICES if procs.terminate(plan.pid_file(name))]


def reset(plan: DemoPlan, *, force: bool) -> list[str]:
    """Wipe what a previous demo left (or, with ``force``, whatever is there); lines
    saying what was done. Raises DemoError rather than delete data of unknown origin."""
    notes = [f"stopped the previous demo's {name}" for name in stop_services(plan)]
    client = redis.Redis.from_url(plan.consumer.redis_url, socket_timeout=10)
    try:
        prefix = plan.consumer.redis_prefix
        topics = [plan.consumer.kafka_topic, plan.consumer.dlq, plan.serve.served_topic]
        found = {
            **{f"Kafka topic {t}": topic_lines(plan.consumer.kafka_bootstrap, t) > 0
               for t in topics},
            f"event store {plan.consumer.store_dir}": _has_files(plan.consumer.store_dir),
            f"dead-letter file {plan.consumer.dlq_file}": plan.consumer.dlq_file.exists(),
            f"model registry {plan.train.registry_dir}": _has_files(plan.train.registry_dir),
            f"experiment file {plan.serve.serve_experiments_file}":
                plan.serve.serve_experiments_file.exists(),
            f"Redis keys {prefix}:*": next(_redis_keys(client, prefix), None) is not None,
        }
        held = [what for what, present in found.items() if present]
        if held and not force and not owned_by_demo(plan):
            raise DemoError(
                "the demo starts from a clean slate, but these hold data a demo did not make: "
                + "; ".join(held) + ". Keep them by pointing the demo elsewhere "
                "(MOVIEREC_KAFKA_TOPIC, MOVIEREC_STORE_DIR, MOVIEREC_REGISTRY_DIR, "
                "MOVIEREC_REDIS_PREFIX), or wipe them with `movierec demo up --reset`.")
        bootstrap = plan.consumer.kafka_bootstrap
        for topic in delete_topics(bootstrap, topics):
            notes.append(f"deleted topic {topic}")
        _forget_group(bootstrap, plan.consumer.consumer_group)
        ensure_topic(bootstrap, plan.consumer.kafka_topic, plan.stack.kafka_partitions)
        removed = 0
        batch: list[bytes] = []
        for key in _redis_keys(client, prefix):
            batch.append(key)
            if len(batch) >= 5000:
                removed += client.unlink(*batch)
                batch.clear()
        if batch:
            removed += client.unlink(*batch)
        if removed:
            notes.append(f"removed {removed:,} Redis keys {prefix}:*")
    finally:
        client.close()
    loop_dir = Path(plan.environ["MOVIEREC_LOOP_DIR"])
    for folder in (plan.consumer.store_dir, plan.train.registry_dir, plan.demo_dir, loop_dir,
                   plan.online.online_state_dir):
        if folder.exists():
            shutil.rmtree(folder)
            notes.append(f"removed {folder}/")
    plan.serve.serve_experiments_file.unlink(missing_ok=True)
    if plan.consumer.dlq_file.exists():
        plan.consumer.dlq_file.unlink()
        notes.append(f"removed {plan.consumer.dlq_file}")
    marker(plan).parent.mkdir(parents=True, exist_ok=True)
    marker(plan).write_text(json.dumps(locations(plan), indent=2) + "\n")
    return notes


def _forget_group(bootstrap: str, group: str) -> None:
    """Drop the consumer group's committed offsets (it has no members: stopped above)."""
    from kafka.errors import KafkaError

    client = admin_client(bootstrap)
    try:
        client.delete_groups([group])  # a list of (group, error): none is fatal
    except KafkaError:
        pass  # no such group yet
    finally:
        client.close()
