"""A quiet, gappy stream and a replay through the real broker and consumer: no valid line
is lost, and a line stamped truly in the future is still rejected and counted.

The stream is what a real ratings log looks like when it is produced as it happens: tens
of lines an hour, overnight gaps, a day with nothing, each line written to Kafka when it
happened (the record's timestamp is set to the event time, as a live producer's would
be). Then an old period is replayed (written now, times months ago), and a few lines with
a bad clock arrive (stamped days after they were written). Before the record-timestamp
rule, the consumer dead-lettered every line between a gap longer than 6 h and the 1,000th
line after it: here, nearly all of them.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from kafka import KafkaConsumer, KafkaProducer

from movierec.kafka_admin import ensure_topic
from movierec.settings import load
from movierec.wire import LineParser, format_time, rate_line, watch_line
from stores.event_store import EventStore
from stores.feature_delta import epoch_ms
from stores.keys import Keys
from stream_consumer.cli import build
from stream_consumer.dlq import read_dead_letter
from stream_consumer.settings import ConsumerSettings
from tests.integration.conftest import LocalStack

MOVIES = ["the+matrix+1999", "up+2009", "heat+1995", "alien+1979"]


def quiet_days(start: datetime) -> list[tuple[datetime, bytes]]:
    """Ten days of a quiet log: a handful of lines an hour in the evening, nights and one
    whole day without a line, 20 minutes apart at most within an evening."""
    lines = []
    for day in range(10):
        if day == 4:
            continue  # a day with nothing (an outage)
        for i in range(12):  # 18:00 to 21:40, every 20 minutes
            when = start + timedelta(days=day, hours=18, minutes=20 * i)
            user = 100 + (day * 12 + i) % 17
            movie = MOVIES[(day + i) % len(MOVIES)]
            stamp = format_time(when)
            line = (rate_line(stamp, user, movie, 1 + i % 5) if i % 3 == 2
                    else watch_line(stamp, user, movie, i))
            lines.append((when, line.encode()))
    return lines


def test_a_quiet_gappy_stream_and_a_replay_lose_no_line_and_future_lines_are_caught(
        stack: LocalStack, unique: str, tmp_path: Path, redis_client: redis.Redis) -> None:
    topic = f"quiet-{unique}"
    ensure_topic(stack.bootstrap, topic, 2)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    live = quiet_days(now - timedelta(days=30))        # written as it happened
    replay = quiet_days(now - timedelta(days=400))     # an old period, written now
    bad_clock = [(now + timedelta(days=3, minutes=i), watch_line(
        format_time(now + timedelta(days=3, minutes=i)), 999, "up+2009", i).encode()) for i in range(3)]
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5)
    written_now = epoch_ms(now)
    for when, line in live:
        producer.send(topic, line, key=line.split(b",")[1], timestamp_ms=epoch_ms(when))
    for _, line in replay + bad_clock:
        producer.send(topic, line, key=line.split(b",")[1], timestamp_ms=written_now)
    producer.flush()
    producer.close()
    valid = [line for _, line in live + replay]

    settings = load(ConsumerSettings, {}, kafka_bootstrap=stack.bootstrap, kafka_topic=topic,
                    consumer_group=f"g-{unique}", redis_url=stack.redis_url, redis_prefix=unique,
                    store_dir=tmp_path / "store", metrics_port=0, enrich=False,
                    consumer_batch_max=50)  # small batches: gaps fall inside and across batches
    runner, _, close = build(settings)
    try:
        total = len(valid) + len(bad_clock)
        assert runner.run(max_lines=total, idle_exit_s=15) == total
        rejects = {s.labels["reason"]: s.value for m in runner.metrics.registry.collect()
                   if m.name == "movierec_consumer_rejects" for s in m.samples
                   if s.name.endswith("_total")}
    finally:
        close()

    # every valid line is in the event store, once; every future one is a dead letter
    frame = EventStore(settings.store_dir, topic).read()
    assert len(frame) == len(valid) == 2 * 9 * 12
    parser = LineParser()
    assert Counter(frame["kind"]) == Counter(parser.parse(v).kind for v in valid)
    consumer = KafkaConsumer(settings.dlq, bootstrap_servers=stack.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        dead = [read_dead_letter(r.value) for r in consumer]
    finally:
        consumer.close()
    assert sorted(d["raw"] for d in dead) == sorted(line for _, line in bad_clock)
    assert {d["reason"] for d in dead} == {"future_timestamp"}
    assert "h after its line was written" in dead[0]["detail"]
    assert rejects == {"future_timestamp": 3.0}

    # and the features hold the quiet days' lines: the last evening's progress is there
    keys = Keys(unique)
    last_watch = next(line for _, line in reversed(live) if b"/data/m/" in line)
    event = parser.parse(last_watch)
    assert redis_client.hget(keys.user_progress(event.user_id), event.movie_id) is not None
    assert runner.validator.clock is not None and runner.validator.clock >= live[-1][0]
    for key in redis_client.scan_iter(f"{unique}:*"):
        redis_client.delete(key)
