"""The consumer against a real broker that refuses its dead-letter topic (issue #4: it works
unchanged against the course's broker and never drops a rejected line silently).

Two real refusals, no stand-ins: at start, the broker refuses to create a dead-letter topic
whose name collides with the consumed topic ('.' and '_' collide in Kafka's topic names);
at run time, it refuses every dead letter because the topic only takes 64-byte records
(max.message.bytes). Either way the rejected lines land in the local file with their
reason and origin offset, the good lines in Redis, and the offsets are committed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from kafka import KafkaProducer, TopicPartition

from movierec.kafka_admin import admin_client, ensure_topic
from movierec.settings import load
from movierec.wire import LineParser, Rejection
from stores.keys import Keys
from stream_consumer.cli import build, consume
from stream_consumer.dlq import read_dead_letters
from stream_consumer.settings import ConsumerSettings
from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration

GOOD = [f"2025-03-01T12:{i:02d}:00,{100 + i},GET /data/m/the+matrix+1999/{i}.mpg".encode()
        for i in range(12)]
BAD = [b"not a line at all", b"2025-03-01T12:00:00,notanumber,GET /data/m/x+2000/1.mpg",
       b"\xff\xfe\x00binary", b"2025-03-01T12:00:00,5,GET /rate/the+matrix+1999=9", b""]


def _produce(bootstrap: str, topic: str) -> dict[tuple[int, int], bytes]:
    """GOOD and BAD, interleaved over two partitions; (partition, offset) -> line."""
    ensure_topic(bootstrap, topic, 2)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        lines = [GOOD[i] for i in range(len(GOOD))]
        for i, raw in enumerate(BAD):
            lines.insert(2 * i + 1, raw)
        futures = [(producer.send(topic, value=raw, partition=i % 2), raw) for i, raw in enumerate(lines)]
        producer.flush()
        return {(f.get(10).partition, f.get(10).offset): raw for f, raw in futures}
    finally:
        producer.close()


def _refuse_records(bootstrap: str, topic: str) -> None:
    """The dead-letter topic exists (ensure passes) but takes no dead letter (~300 bytes)."""
    client = admin_client(bootstrap)
    try:
        client.create_topics({topic: {"num_partitions": 1, "replication_factor": 1,
                                      "configs": {"max.message.bytes": "64"}}})
    finally:
        client.close()


@pytest.mark.parametrize("refused", ["at start", "at run time"])
def test_a_refused_dead_letter_topic_sends_rejects_to_the_file_and_loses_nothing(
        stack: LocalStack, unique: str, tmp_path: Path, redis_client: redis.Redis,
        refused: str) -> None:
    topic = f"log.{unique}"
    if refused == "at start":
        dlq, reason = f"log_{unique}", "InvalidTopicError"  # collides with the consumed topic
    else:
        dlq, reason = f"{topic}.dlq", "MessageSizeTooLargeError"
        _refuse_records(stack.bootstrap, dlq)
    lines = _produce(stack.bootstrap, topic)
    settings = load(ConsumerSettings, {}, kafka_bootstrap=stack.bootstrap, kafka_topic=topic,
                    dlq_topic=dlq, dlq_dir=tmp_path / "dlq", consumer_group=f"g-{unique}",
                    redis_url=stack.redis_url, redis_prefix=unique, store_dir=tmp_path / "store",
                    metrics_port=0, enrich=False, consumer_batch_max=6)  # several batches
    runner, _, close = build(settings)
    try:
        assert runner.run(max_lines=len(lines), idle_exit_s=15) == len(lines)
        tps = [TopicPartition(topic, p) for p in range(2)]
        committed = {tp: runner.consumer.committed(tp) for tp in tps}
        ends = runner.consumer.end_offsets(tps)
    finally:
        close()
    sample = runner.metrics.registry.get_sample_value

    assert committed == ends
    dead = list(read_dead_letters(settings.dlq_file))
    expected = {origin: raw for origin, raw in lines.items() if raw in BAD}
    assert {(d["partition"], d["offset"]): d["raw"] for d in dead} == expected
    assert len(dead) == len(BAD)  # each once: a fallback writes only what Kafka did not take
    parser = LineParser()
    reasons = Counter(parser.parse(raw).reason.value for raw in BAD)
    assert Counter(d["reason"] for d in dead) == reasons
    assert all(d["topic"] == topic for d in dead)
    assert {r: sample("movierec_consumer_rejects_total", {"reason": r}) for r in reasons} == reasons
    assert sample("movierec_consumer_dlq_fallback_total", {"reason": reason}) == 1.0

    keys = Keys(unique)
    for raw in GOOD:
        event = parser.parse(raw)
        assert not isinstance(event, Rejection)
        assert redis_client.hget(keys.user_progress(event.user_id), event.movie_id) is not None

    if refused == "at start":  # the CLI says where rejects go, and carries on the same way
        result = CliRunner().invoke(consume, ["--max-lines", str(len(lines)), "--idle-exit", "10",
                                              "--metrics-port", "0"],
                                    env={"MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap,
                                         "MOVIEREC_KAFKA_TOPIC": topic, "MOVIEREC_DLQ_TOPIC": dlq,
                                         "MOVIEREC_DLQ_DIR": str(tmp_path / "dlq"),
                                         "MOVIEREC_CONSUMER_GROUP": f"g2-{unique}",
                                         "MOVIEREC_REDIS_URL": stack.redis_url,
                                         "MOVIEREC_REDIS_PREFIX": unique,
                                         "MOVIEREC_STORE_DIR": str(tmp_path / "store"),
                                         "MOVIEREC_ENRICH": "0"})
        assert result.exit_code == 0, result.output
        assert f"rejects to file {settings.dlq_file}" in result.stderr
        assert len(list(read_dead_letters(settings.dlq_file))) == 2 * len(BAD)

    for key in redis_client.scan_iter(f"{unique}:*"):
        redis_client.delete(key)
