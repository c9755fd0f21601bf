"""Benchmark: the consumer group draining a backfilled topic, against raw consumption.

Target (issue #4): >= 50,000 lines/s (one or two processes) draining >= 5M lines, and
>= 80% of the raw kafka-python consume rate of the same topic, measured in the same run.

Each run: backfill ``--lines`` lines (full-scale world) into a fresh 4-partition topic;
measure raw kafka-python consumption (poll loop, no processing) as the baseline; then
for each process count, start that many `movierec consume` members in a fresh group and
time until the group's committed offsets reach the end of every partition.

Needs `movierec infra up`. Writes Redis keys under a bench prefix and a temporary store.

    python benchmarks/consumer.py [--lines 5000000] [--processes 1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition

from movierec.kafka_admin import ensure_topic
from movierec.settings import KafkaSettings, RedisSettings, load
from simulator.history import HistoryGenerator
from simulator.producer import open_sink
from simulator.world import World, WorldSpec


def produce(bootstrap: str, topic: str, n: int) -> None:
    ensure_topic(bootstrap, topic, 4)
    world = World.build(WorldSpec())
    generator = HistoryGenerator(world, start=datetime(2025, 3, 1), days=3, seed=3)
    sink = open_sink("confluent", bootstrap=bootstrap, topic=topic)
    for i, (line, key) in enumerate(generator.lines()):
        if i == n:
            break
        sink.send(line, key)
    sink.flush()
    sink.close()


def raw_rate(bootstrap: str, topic: str, n: int) -> float:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, max_poll_records=5000,
                             max_partition_fetch_bytes=1024 * 1024)
    got, started = 0, None
    try:
        while got < n:
            batch = consumer.poll(timeout_ms=1000)
            if started is None and batch:
                started = time.perf_counter()
            got += sum(len(records) for records in batch.values())
    finally:
        consumer.close()
    return got / (time.perf_counter() - started)


def group_rate(bootstrap: str, topic: str, n: int, processes: int, redis_url: str) -> float:
    group = f"bench-{time.time_ns()}"
    store = tempfile.mkdtemp(prefix="bench-store-")
    env = {**os.environ, "MOVIEREC_KAFKA_BOOTSTRAP": bootstrap, "MOVIEREC_KAFKA_TOPIC": topic,
           "MOVIEREC_CONSUMER_GROUP": group, "MOVIEREC_REDIS_URL": redis_url,
           "MOVIEREC_REDIS_PREFIX": group, "MOVIEREC_STORE_DIR": store,
           "MOVIEREC_METRICS_PORT": "0", "MOVIEREC_ENRICH": "0"}
    cmd = [sys.executable, "-m", "movierec", "--log-level", "WARNING", "consume", "--idle-exit", "5"]
    started = time.perf_counter()
    members = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(processes)]
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in range(4)]
    try:
        while sum(watcher.committed(tp) or 0 for tp in parts) < n:
            time.sleep(0.2)
        seconds = time.perf_counter() - started
    finally:
        watcher.close()
        for member in members:
            member.wait(timeout=120)
    return n / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--json")
    args = ap.parse_args()
    bootstrap = load(KafkaSettings).kafka_bootstrap
    redis_url = load(RedisSettings).redis_url
    topic = f"bench-consumer-{time.time_ns()}"
    produce(bootstrap, topic, args.lines)
    result = {"lines": args.lines, "raw_kafka_python_lines_per_s": round(raw_rate(bootstrap, topic, args.lines))}
    print(f"raw kafka-python: {result['raw_kafka_python_lines_per_s']:,} lines/s", flush=True)
    for n in map(int, args.processes.split(",")):
        rate = group_rate(bootstrap, topic, args.lines, n, redis_url)
        result[f"consumer_{n}p_lines_per_s"] = round(rate)
        result[f"ratio_{n}p_to_raw"] = round(rate / result["raw_kafka_python_lines_per_s"], 3)
        print(f"{n} consumer process(es): {rate:,.0f} lines/s "
              f"({result[f'ratio_{n}p_to_raw']:.2f} of raw)", flush=True)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
