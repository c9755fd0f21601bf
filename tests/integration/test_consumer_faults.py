"""Fault tests of the consumer against the real broker and Redis: kills and restarts."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import redis

from movierec.wire import LineParser, Rejection
from simulator.history import HistoryGenerator
from simulator.inject import InjectionPlan, Injector
from simulator.producer import open_sink
from simulator.world import World, WorldSpec
from stream_consumer.dlq import read_dead_letter
from stream_consumer.event_store import EventStore
from stream_consumer.keys import Keys, day_of
from stream_consumer.redis_store import RedisFeatureStore
from tests.integration.conftest import LocalStack
from tests.integration.test_consumer import _read_topic
from tests.integration.test_feature_store import _apply, dump

LINES = int(os.environ.get("MOVIEREC_FAULT_LINES", "1000000"))
START = datetime(2025, 3, 1)


def _produce(bootstrap: str, topic: str, n: int) -> None:
    from movierec.kafka_admin import ensure_topic

    ensure_topic(bootstrap, topic, 4)
    world = World.build(WorldSpec(seed=21, n_users=60_000, n_movies=3000))
    generator = HistoryGenerator(world, start=START, days=2, seed=21)
    injector = Injector(InjectionPlan(malformed=0.01, seed=21), io.StringIO(), START)
    sink = open_sink("confluent", bootstrap=bootstrap, topic=topic)
    timed = (item for batch in generator.events() for item in generator.timed(batch))
    for i, (line, key) in enumerate(injector.run(timed)):
        if i == n:
            break
        sink.send(line, key)
    sink.flush()
    sink.close()


def test_sigkill_five_times_loses_nothing_and_counts_nothing_twice(
        stack: LocalStack, unique: str, tmp_path: Path, redis_client: redis.Redis) -> None:
    topic = f"kill-{unique}"
    _produce(stack.bootstrap, topic, LINES)
    env = {**os.environ, "MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap, "MOVIEREC_KAFKA_TOPIC": topic,
           "MOVIEREC_CONSUMER_GROUP": f"g-{unique}", "MOVIEREC_REDIS_URL": stack.redis_url,
           "MOVIEREC_REDIS_PREFIX": unique, "MOVIEREC_STORE_DIR": str(tmp_path / "store"),
           "MOVIEREC_METRICS_PORT": "0", "MOVIEREC_ENRICH": "0"}
    cmd = [sys.executable, "-m", "movierec", "--log-level", "WARNING", "consume"]
    rnd = random.Random(5)
    log = (tmp_path / "consumer.log").open("ab")
    for kill in range(5):
        proc = subprocess.Popen(cmd + ["--idle-exit", "60"], env=env, stdout=log, stderr=log)
        time.sleep(rnd.uniform(3.0, 8.0))  # somewhere mid-batch, mid-write or mid-commit
        assert proc.poll() is None, f"the consumer ended before kill {kill + 1}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd + ["--idle-exit", "8"], env=env, stdout=log, stderr=log, timeout=600)
    log.close()
    assert done.returncode == 0, (tmp_path / "consumer.log").read_text()[-3000:]

    records = _read_topic(stack.bootstrap, topic)
    assert len(records) == LINES
    parser = LineParser()
    rejected = {(r.partition, r.offset) for r in records if isinstance(parser.parse(r.value), Rejection)}
    accepted = [r for r in records if (r.partition, r.offset) not in rejected]

    # the event store: every accepted line exactly once (reads deduplicate redeliveries)
    frame = EventStore(tmp_path / "store", topic).read(columns=["partition", "offset"])
    assert len(frame) == len(accepted)
    assert set(zip(frame["partition"], frame["offset"])) == {(r.partition, r.offset) for r in accepted}

    # the dead-letter topic: every rejected line (a redelivered batch may send one again)
    dead = {(d["partition"], d["offset"]) for d in
            (read_dead_letter(r.value) for r in _read_topic(stack.bootstrap, f"{topic}.dlq"))}
    assert dead == rejected

    # Redis: equal to a from-scratch recomputation
    reference = Keys(f"{unique}-ref")
    recomputed = RedisFeatureStore(redis_client, reference)
    _apply(recomputed, [r.value for r in accepted], 5000)
    clock = max(parser.parse(r.value).time for r in accepted[-2000:])
    recomputed.refresh_popularity([day_of(clock - timedelta(days=age)) for age in range(14)])
    strip = lambda state: {k.decode().split(":", 1)[1]: v for k, v in state.items()}  # noqa: E731
    mine = strip(dump(redis_client, unique))
    theirs = strip(dump(redis_client, reference.prefix))
    mine = {k: v for k, v in mine.items() if not k.startswith("pop:")}  # derived, refreshed later
    theirs = {k: v for k, v in theirs.items() if not k.startswith("pop:")}
    assert mine == theirs
    for prefix in (unique, reference.prefix):
        for key in redis_client.scan_iter(f"{prefix}:*", count=5000):
            redis_client.delete(key)
