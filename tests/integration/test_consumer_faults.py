"""Fault tests of the consumer against the real broker and Redis: kills and restarts."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import redis
from kafka import KafkaConsumer, TopicPartition

from movierec.wire import LineParser, Rejection
from simulator.history import HistoryGenerator
from simulator.inject import InjectionPlan, Injector
from simulator.producer import open_sink
from simulator.world import World, WorldSpec
from stores.event_store import EventStore
from stores.keys import Keys, day_of
from stores.redis_online import RedisOnlineStore
from stream_consumer.cli import build
from stream_consumer.dlq import read_dead_letter
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
    assert set(zip(frame["partition"], frame["offset"], strict=True)) == {
        (r.partition, r.offset) for r in accepted}

    # the dead-letter topic: every rejected line (a redelivered batch may send one again)
    dead = {(d["partition"], d["offset"]) for d in
            (read_dead_letter(r.value) for r in _read_topic(stack.bootstrap, f"{topic}.dlq"))}
    assert dead == rejected

    # Redis: equal to a from-scratch recomputation
    reference = Keys(f"{unique}-ref")
    recomputed = RedisOnlineStore(redis_client, reference)
    _apply(recomputed, [r.value for r in accepted], 5000)
    clock = max(parser.parse(r.value).time for r in accepted[-2000:])
    recomputed.refresh_popularity([day_of(clock - timedelta(days=age)) for age in range(14)])

    def strip(state: dict) -> dict:
        return {k.decode().split(":", 1)[1]: v for k, v in state.items()}

    mine = strip(dump(redis_client, unique))
    theirs = strip(dump(redis_client, reference.prefix))
    mine = {k: v for k, v in mine.items() if not k.startswith("pop:")}  # derived, refreshed later
    theirs = {k: v for k, v in theirs.items() if not k.startswith("pop:")}
    assert mine == theirs
    for prefix in (unique, reference.prefix):
        for key in redis_client.scan_iter(f"{prefix}:*", count=5000):
            redis_client.delete(key)


def _consumer_settings(stack: LocalStack, unique: str, tmp_path: Path, topic: str):
    from movierec.settings import load
    from stream_consumer.settings import ConsumerSettings

    return load(ConsumerSettings, {}, kafka_bootstrap=stack.bootstrap, kafka_topic=topic,
                consumer_group=f"g-{unique}", redis_url=stack.redis_url, redis_prefix=unique,
                store_dir=tmp_path / "store", metrics_port=0, enrich=False,
                consumer_batch_max=2000, redis_timeout_s=0.5)


def _assert_recomputable(stack: LocalStack, redis_client: redis.Redis, unique: str,
                         topic: str, store_dir: Path) -> None:
    records = _read_topic(stack.bootstrap, topic)
    parser = LineParser()
    accepted = [r for r in records if not isinstance(parser.parse(r.value), Rejection)]
    frame = EventStore(store_dir, topic).read(columns=["partition", "offset"])
    assert set(zip(frame["partition"], frame["offset"], strict=True)) == {
        (r.partition, r.offset) for r in accepted}
    assert len(frame) == len(accepted)
    reference = Keys(f"{unique}-ref")
    _apply(RedisOnlineStore(redis_client, reference), [r.value for r in accepted], 5000)

    def strip(state: dict) -> dict:
        return {k.decode().split(":", 1)[1]: v for k, v in state.items()
                if not k.decode().split(":", 1)[1].startswith("pop:")}

    assert strip(dump(redis_client, unique)) == strip(dump(redis_client, reference.prefix))
    for prefix in (unique, reference.prefix):
        for key in redis_client.scan_iter(f"{prefix}:*", count=5000):
            redis_client.delete(key)


def test_redis_down_for_30s_retries_without_committing(stack: LocalStack, unique: str,
                                                       tmp_path: Path, redis_client: redis.Redis) -> None:
    from ops.stack.redis_server import RedisServer

    topic = f"redis-down-{unique}"
    _produce(stack.bootstrap, topic, 150_000)
    settings = _consumer_settings(stack, unique, tmp_path, topic)
    runner, _, close = build(settings)
    worker = threading.Thread(target=runner.run, kwargs={"idle_exit_s": 10}, daemon=True)
    parts = [TopicPartition(topic, p) for p in range(4)]
    watcher = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=f"g-{unique}",
                            enable_auto_commit=False)
    redis_part = RedisServer(stack.settings)
    try:
        worker.start()
        while runner.lines < 20_000:
            time.sleep(0.1)
        redis_part.down()
        time.sleep(3)  # batches in hand fail and start retrying
        before = sum(watcher.committed(tp) or 0 for tp in parts)
        time.sleep(27)
        during = sum(watcher.committed(tp) or 0 for tp in parts)
        assert worker.is_alive()  # no crash
        assert during == before  # nothing committed while Redis is down
        assert runner.metrics.registry.get_sample_value("movierec_consumer_redis_retries_total") > 0
        redis_part.up()
        worker.join(timeout=300)
        assert not worker.is_alive()
        assert sum(watcher.committed(tp) or 0 for tp in parts) == 150_000
    finally:
        if redis_part.status().state != "up":
            redis_part.up()
        runner.stop.set()
        worker.join(timeout=30)
        watcher.close()
        close()
    _assert_recomputable(stack, redis_client, unique, topic, settings.store_dir)


def test_a_member_joins_mid_stream_and_one_leaves(stack: LocalStack, unique: str,
                                                 tmp_path: Path, redis_client: redis.Redis) -> None:
    topic = f"rebalance-{unique}"
    _produce(stack.bootstrap, topic, 200_000)
    settings = _consumer_settings(stack, unique, tmp_path, topic)
    first, _, close_first = build(settings)
    second, _, close_second = build(settings)
    errors: list[BaseException] = []

    def member(runner, idle_exit_s: float) -> None:
        try:
            runner.run(idle_exit_s=idle_exit_s)
        except BaseException as exc:  # a member must survive the rebalances
            errors.append(exc)

    a = threading.Thread(target=member, args=(first, 60), daemon=True)
    b = threading.Thread(target=member, args=(second, 10), daemon=True)
    try:
        a.start()
        while first.lines < 30_000:
            time.sleep(0.05)
        b.start()  # joins: the group rebalances mid-stream
        while second.lines < 20_000:
            time.sleep(0.05)
        first.stop.set()  # leaves after committing the batch in hand
        a.join(timeout=60)
        close_first()
        b.join(timeout=300)
        assert not b.is_alive()
    finally:
        first.stop.set()
        second.stop.set()
        a.join(timeout=30)
        b.join(timeout=30)
        close_second()
    assert errors == []
    assert first.lines > 30_000 and second.lines > 20_000
    _assert_recomputable(stack, redis_client, unique, topic, settings.store_dir)


def test_ten_percent_duplicated_and_reordered_gives_the_clean_state(
        stack: LocalStack, unique: str, tmp_path: Path, redis_client: redis.Redis) -> None:
    from movierec.kafka_admin import ensure_topic

    world = World.build(WorldSpec(seed=23, n_users=20_000, n_movies=1500))
    states = []
    for name, plan in (("clean", InjectionPlan(seed=23)),
                       ("messy", InjectionPlan(duplicate=0.1, reorder=0.1, window=20, seed=23))):
        topic = f"{name}-{unique}"
        ensure_topic(stack.bootstrap, topic, 4)
        generator = HistoryGenerator(world, start=START, days=0.3, seed=23)
        timed = (item for batch in generator.events() for item in generator.timed(batch))
        sink = open_sink("confluent", bootstrap=stack.bootstrap, topic=topic)
        for line, key in Injector(plan, io.StringIO(), START).run(timed):
            sink.send(line, key)
        sink.flush()
        sink.close()
        settings = _consumer_settings(stack, f"{unique}-{name}", tmp_path / name, topic)
        runner, _, close = build(settings)
        try:
            runner.run(idle_exit_s=8)
        finally:
            close()
        state = {k.decode().split(":", 1)[1]: v for k, v in dump(redis_client, settings.redis_prefix).items()}
        states.append({k: v for k, v in state.items() if not k.startswith("pop:")})
        for key in redis_client.scan_iter(f"{settings.redis_prefix}:*", count=5000):
            redis_client.delete(key)
    assert len(states[0]) > 1000 and states[1] == states[0]


def test_a_one_megabyte_line_is_dead_lettered_not_fatal(stack: LocalStack, unique: str,
                                                       tmp_path: Path, redis_client: redis.Redis) -> None:
    from kafka import KafkaProducer

    from movierec.kafka_admin import ensure_topic

    topic = f"huge-{unique}"
    ensure_topic(stack.bootstrap, topic, 1)
    huge = b"2025-03-01T10:00:00,1,GET /data/m/" + b"x" * 1_000_000 + b"/1.mpg"
    lines = [b"2025-03-01T10:00:00,1,GET /create_account", huge,
             b"2025-03-01T10:00:01,1,GET /data/m/the+matrix+1999/0.mpg"]
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, max_request_size=2 * 1024 * 1024)
    for line in lines:
        producer.send(topic, value=line)
    producer.flush()
    producer.close()
    settings = _consumer_settings(stack, unique, tmp_path, topic)
    runner, _, close = build(settings)
    try:
        assert runner.run(idle_exit_s=8) == 3  # the line after the huge one is handled too
    finally:
        close()
    dead = [read_dead_letter(r.value) for r in _read_topic(stack.bootstrap, f"{topic}.dlq")]
    assert [(d["reason"], d["offset"], d["bytes"], d["truncated"]) for d in dead] == [
        ("too_long", 1, len(huge), True)]
    assert dead[0]["raw"] == huge[:64 * 1024]
    assert RedisOnlineStore(redis_client, Keys(unique)).user_state(1)["progress"] == {"the+matrix+1999": 0}
    for key in redis_client.scan_iter(f"{unique}:*"):
        redis_client.delete(key)
