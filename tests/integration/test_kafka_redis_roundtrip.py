"""10,000 MLiP lines through the real broker and Redis: produce, consume in a group,
parse, write features, read them back."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from movierec.kafka_admin import ensure_topic
from movierec.wire import Account, LineParser, Rate, Rejection, Watch, format_event
from tests.integration.conftest import LocalStack

N_LINES = 10_000
PARTITIONS = 4


def make_stream(n: int, seed: int = 11) -> tuple[list[bytes], Counter[str], Counter[int]]:
    """Lines with known content: 2% malformed; returns lines, kinds and watches per user."""
    rnd = random.Random(seed)
    start = datetime(2025, 3, 1, 12, 0)
    movies = [f"movie+{i}+{1990 + i % 30}" for i in range(200)]
    lines, kinds, watches = [], Counter(), Counter()
    for i in range(n):
        when = start + timedelta(seconds=i)
        user = rnd.randrange(500)
        roll = rnd.random()
        if roll < 0.02:
            lines.append(f"{when.isoformat()},{user},GET /rate/{rnd.choice(movies)}=banana".encode())
            kinds["rejection"] += 1
            continue
        if roll < 0.85:
            event = Watch(when, user, rnd.choice(movies), rnd.randrange(120))
            watches[user] += 1
        elif roll < 0.97:
            event = Rate(when, user, rnd.choice(movies), rnd.randint(1, 5))
        else:
            event = Account(when, user)
        kinds[event.kind] += 1
        lines.append(format_event(event).encode())
    return lines, kinds, watches


def test_lines_survive_kafka_and_land_in_redis(stack: LocalStack, unique: str,
                                              redis_client: redis.Redis) -> None:
    topic = f"movielog-{unique}"
    assert ensure_topic(stack.bootstrap, topic, PARTITIONS) == PARTITIONS
    lines, kinds, watches = make_stream(N_LINES)

    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5, acks="all")
    for line in lines:
        # key by user, as the real stream would be partitioned, so order holds per user
        producer.send(topic, key=line.split(b",", 2)[1], value=line)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        topic, bootstrap_servers=stack.bootstrap, group_id=f"group-{unique}",
        auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=10_000,
        max_poll_records=2000,
    )
    parser = LineParser()
    seen: set[tuple[int, int]] = set()
    got_kinds: Counter[str] = Counter()
    prefix = f"{unique}:"
    try:
        while len(seen) < N_LINES:
            batch = consumer.poll(timeout_ms=5000)
            if not batch:
                break
            pipe = redis_client.pipeline(transaction=False)
            for records in batch.values():
                for record in records:
                    seen.add((record.partition, record.offset))
                    event = parser.parse(record.value)
                    got_kinds[event.kind] += 1
                    if isinstance(event, Watch):
                        pipe.hincrby(f"{prefix}watch_lines", str(event.user_id), 1)
                    elif isinstance(event, Rejection):
                        pipe.hincrby(f"{prefix}rejects", event.reason.value, 1)
            pipe.execute()
            consumer.commit()  # after the effects are in Redis: at-least-once
        committed = {
            p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)
        }
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        consumer.close()

    assert len(seen) == N_LINES  # every line exactly once, no duplicates
    assert got_kinds == kinds
    assert sum(committed.values()) == N_LINES
    assert all(committed[tp.partition] == end for tp, end in ends.items())
    assert sum(1 for tp, end in ends.items() if end > 0) == PARTITIONS  # keys spread out

    stored = {int(k): int(v) for k, v in redis_client.hgetall(f"{prefix}watch_lines").items()}
    assert stored == dict(watches)
    assert redis_client.hgetall(f"{prefix}rejects") == {b"bad_rating": str(kinds["rejection"]).encode()}
    redis_client.delete(f"{prefix}watch_lines", f"{prefix}rejects")


def test_redis_runs_with_aof_fsync_every_second(redis_client: redis.Redis) -> None:
    assert redis_client.config_get("appendonly") == {"appendonly": "yes"}
    assert redis_client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert redis_client.info("persistence")["aof_enabled"] == 1


def test_event_log_topic_has_configured_partitions(stack: LocalStack) -> None:
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap)
    try:
        parts = consumer.partitions_for_topic(stack.settings.kafka_topic)
    finally:
        consumer.close()
    assert parts == set(range(stack.settings.kafka_partitions))
