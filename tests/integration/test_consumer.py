"""The consumer on the real stack: injected faults in, recomputable state out."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from movierec.kafka_admin import ensure_topic
from movierec.settings import load
from movierec.wire import LineParser, Rejection
from simulator.backfill import backfill
from simulator.history import HistoryGenerator
from simulator.inject import InjectionPlan, Injector
from simulator.producer import open_sink
from simulator.world import World, WorldSpec
from stores.event_store import EventStore
from stores.keys import Keys, day_of
from stores.redis_online import RedisOnlineStore
from stream_consumer.cli import build
from stream_consumer.dlq import read_dead_letter
from stream_consumer.settings import ConsumerSettings
from tests.integration.conftest import LocalStack
from tests.integration.test_feature_store import _apply, dump

START = datetime(2025, 3, 1)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldSpec(seed=8, n_users=1500, n_movies=250, new_share=0.2, horizon_days=1))


def _settings(stack: LocalStack, unique: str, tmp: Path, **extra) -> ConsumerSettings:
    values = {"kafka_bootstrap": stack.bootstrap, "kafka_topic": f"log-{unique}",
              "consumer_group": f"g-{unique}", "redis_url": stack.redis_url, "redis_prefix": unique,
              "store_dir": tmp / "store", "metrics_port": 0, "enrich": False,
              "consumer_batch_max": 700}
    return load(ConsumerSettings, {}, **{**values, **extra})


def _produce(stack: LocalStack, topic: str, world: World, plan: InjectionPlan) -> tuple[int, list[dict]]:
    ensure_topic(stack.bootstrap, topic, 4)
    truth = io.StringIO()
    generator = HistoryGenerator(world, start=START, days=0.5, seed=8)
    sink = open_sink("confluent", bootstrap=stack.bootstrap, topic=topic)
    result = backfill(generator, sink, progress=False, injector=Injector(plan, truth, START))
    sink.close()
    return result.lines, [json.loads(line) for line in truth.getvalue().splitlines()]


def _read_topic(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_consumer_turns_a_faulty_stream_into_recomputable_state(
        stack: LocalStack, unique: str, tmp_path: Path, world: World, redis_client: redis.Redis) -> None:
    settings = _settings(stack, unique, tmp_path)
    sent, truth = _produce(stack, settings.kafka_topic, world,
                           InjectionPlan(malformed=0.02, duplicate=0.03, reorder=0.03, seed=8))
    runner, _, close = build(settings)
    # the stream is decoded in bulk (movierec.kafka_records); the reference below reads
    # it back with kafka-python's own decoding
    assert runner.consumer._fetcher.PartitionRecords.__name__ == "BulkPartitionRecords"
    try:
        handled = runner.run(max_lines=sent, idle_exit_s=15)
        committed = {p: runner.consumer.committed(TopicPartition(settings.kafka_topic, p))
                     for p in range(4)}
        ends = runner.consumer.end_offsets([TopicPartition(settings.kafka_topic, p) for p in range(4)])
    finally:
        close()
    assert handled == sent
    assert sum(committed.values()) == sent == sum(ends.values())  # every partition to its end

    # the dead-letter topic holds exactly the injected malformed lines, with their reasons
    dead = [read_dead_letter(r.value) for r in _read_topic(stack.bootstrap, settings.dlq)]
    malformed = [t for t in truth if t["kind"] == "malformed"]
    assert Counter(d["reason"] for d in dead) == Counter(t["reason"] for t in malformed)
    assert all(d["topic"] == settings.kafka_topic and d["offset"] >= 0 for d in dead)

    # Redis equals a one-pass recomputation from the accepted lines
    records = _read_topic(stack.bootstrap, settings.kafka_topic)
    parser = LineParser()
    accepted = [r.value for r in records if not isinstance(parser.parse(r.value), Rejection)]
    reference = Keys(f"{unique}-ref")
    recomputed = RedisOnlineStore(redis_client, reference, recent_history=settings.recent_history)
    _apply(recomputed, accepted, len(accepted))
    clock = runner.validator.clock  # popularity is refreshed for the stream's last 14 days
    recomputed.refresh_popularity([day_of(clock - timedelta(days=age)) for age in range(14)])

    def strip(state: dict) -> dict:
        return {k.decode().split(":", 1)[1]: v for k, v in state.items()}

    assert strip(dump(redis_client, unique)) == strip(dump(redis_client, reference.prefix))

    # the event store holds every accepted line once
    frame = EventStore(settings.store_dir, settings.kafka_topic).read()
    assert len(frame) == len(accepted)
    assert Counter(frame["kind"]) == Counter(parser.parse(v).kind for v in accepted)
    for prefix in (unique, reference.prefix):
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)


def test_a_popularity_shift_raises_the_drift_alarm(stack: LocalStack, unique: str,
                                                   tmp_path: Path, redis_client: redis.Redis) -> None:
    """Live monitor, its gauge, and `movierec drift report` on the event store agree."""
    from click.testing import CliRunner

    from ops.cli import main
    from stream_consumer.drift_monitor import DriftMonitor

    settings = _settings(stack, unique, tmp_path, consumer_batch_max=5000)
    topic = settings.kafka_topic
    ensure_topic(stack.bootstrap, topic, 4)
    world = World.build(WorldSpec(seed=12, n_users=20_000, n_movies=800))
    noon = datetime(2025, 3, 1, 12)  # daytime traffic: the reference sees most films
    generator = HistoryGenerator(world, start=noon, days=0.5, seed=12, shift_at_s=6 * 3600)
    sink = open_sink("confluent", bootstrap=stack.bootstrap, topic=topic)
    sent = backfill(generator, sink, progress=False).lines
    sink.close()
    runner, _, close = build(settings)
    # reference 12:00-18:00, the shift at 18:00, current 18:00-24:00 (window + grace)
    runner.drift = DriftMonitor(bucket=timedelta(hours=2), reference_buckets=3, window_buckets=2,
                                grace_buckets=1)
    try:
        assert runner.run(max_lines=sent, idle_exit_s=15) == sent
        report = runner.drift.report()
        runner.update_drift()
        alarm = runner.metrics.registry.get_sample_value("movierec_drift_alarm", {"feature": "popularity"})
    finally:
        close()
    assert report.row("popularity").alarm and alarm == 1.0
    result = CliRunner().invoke(main, ["drift", "report", "--json",
                                       "--reference", "2025-03-01T12:00:00", "2025-03-01T18:00:00",
                                       "--current", "2025-03-01T18:00:00", "2025-03-02T00:00:00"],
                                env={"MOVIEREC_STORE_DIR": str(settings.store_dir),
                                     "MOVIEREC_KAFKA_TOPIC": topic})
    assert result.exit_code == 0, result.output
    cli_report = json.loads(result.stdout)
    assert "popularity" in cli_report["alarms"]
    assert {r["feature"]: r["alarm"] for r in cli_report["features"]}["popularity"] is True
    for key in redis_client.scan_iter(f"{unique}:*"):
        redis_client.delete(key)
