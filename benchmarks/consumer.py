"""Benchmark: the consumer group draining a backfilled topic, against raw consumption.

Target (issue #4): >= 50,000 lines/s (one or two processes) draining >= 5M lines, and
>= 80% of the raw kafka-python consume rate of the same topic, measured in the same run.

Each run: backfill ``--lines`` lines (full-scale world) into a fresh 4-partition topic;
measure raw kafka-python consumption (poll loop, no processing) as the baseline, timed
from its first batch, and the same with movierec's bulk record decoding (the members use
it unless ``MOVIEREC_CONSUMER_BULK_DECODE=0``), so the consumer's own cost shows apart
from kafka-python's; then for each process count, start that many `movierec consume`
members in a fresh group and time from the group's first commit until its committed
offsets reach the end of every partition (start-up and group join are reported apart).
``--repeats`` alternates the runs and reports medians; each run's Redis keys and event
store are deleted afterwards. ``MOVIEREC_CONSUMER_BATCH_MAX`` reaches the members.

Needs `movierec infra up`. Writes Redis keys under a bench prefix and a temporary store.

    python benchmarks/consumer.py [--lines 5000000] [--processes 1,2] [--repeats 3] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import redis
from kafka import KafkaConsumer, TopicPartition

from movierec.kafka_admin import ensure_topic
from movierec.kafka_records import install as install_bulk_decoding
from movierec.settings import KafkaSettings, RedisSettings, load
from simulator.producer import open_sink

from log_lines import log_lines  # benchmarks/log_lines.py
from report import add_output_args, emit  # benchmarks/report.py: scripts run from this folder


def produce(bootstrap: str, topic: str, n: int) -> None:
    ensure_topic(bootstrap, topic, 4)
    sink = open_sink("confluent", bootstrap=bootstrap, topic=topic)
    for line, key in log_lines(n):
        sink.send(line, key)
    sink.flush()
    sink.close()


def raw_rate(bootstrap: str, topic: str, n: int, *, bulk: bool = False) -> float:
    """Lines/s of one kafka-python consumer polling the topic and doing nothing else,
    timed from its first batch; ``bulk``: with movierec's bulk record decoding."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, max_poll_records=5000,
                             max_partition_fetch_bytes=1024 * 1024)
    if bulk and not install_bulk_decoding(consumer):
        raise SystemExit("bulk decoding does not fit this kafka-python")
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


def group_rate(bootstrap: str, topic: str, n: int, processes: int, redis_url: str) -> dict:
    """Drain the topic with a fresh group of ``processes`` members. ``lines_per_s`` is
    the steady rate, timed like the raw baseline: from the first committed batch to the
    last (lines committed meanwhile); ``start_s`` is the time to that first commit
    (interpreter start, imports, group join), reported apart."""
    group = f"bench-{time.time_ns()}"
    store = tempfile.mkdtemp(prefix="bench-store-")
    started = time.perf_counter()
    members = [member(bootstrap, topic, group, redis_url, store, "--idle-exit", "5")
               for _ in range(processes)]
    watcher = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in range(4)]
    first_at = first_lines = None
    try:
        while True:
            done = sum(watcher.committed(tp) or 0 for tp in parts)
            now = time.perf_counter()
            if first_at is None and done:
                first_at, first_lines = now, done
            if done >= n:
                break
            time.sleep(0.1)
    finally:
        watcher.close()
        for process in members:
            process.wait(timeout=120)
        clean_run(redis_url, group, store)
    return {"lines_per_s": (n - first_lines) / (now - first_at), "start_s": first_at - started,
            "total_s": now - started}


def member(bootstrap: str, topic: str, group: str, redis_url: str, store: str,
           *args: str) -> subprocess.Popen:
    """A `movierec consume` process in ``group`` (keys under the group's name as prefix, the
    store in ``store``, no metrics port, no enrichment); ``args`` go to `consume`."""
    env = {**os.environ, "MOVIEREC_KAFKA_BOOTSTRAP": bootstrap, "MOVIEREC_KAFKA_TOPIC": topic,
           "MOVIEREC_CONSUMER_GROUP": group, "MOVIEREC_REDIS_URL": redis_url,
           "MOVIEREC_REDIS_PREFIX": group, "MOVIEREC_STORE_DIR": store,
           "MOVIEREC_METRICS_PORT": "0", "MOVIEREC_ENRICH": "0"}
    cmd = [sys.executable, "-m", "movierec", "--log-level", "WARNING", "consume", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)


def clean_run(redis_url: str, prefix: str, store: str) -> None:
    """Drop the run's Redis keys and event store (not timed)."""
    client = redis.Redis.from_url(redis_url)
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
    client.close()
    shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--repeats", type=int, default=1, help="Runs of raw and each group, alternated.")
    add_output_args(ap)
    args = ap.parse_args()
    bootstrap = load(KafkaSettings).kafka_bootstrap
    redis_url = load(RedisSettings).redis_url
    topic = f"bench-consumer-{time.time_ns()}"
    produce(bootstrap, topic, args.lines)
    counts = [int(p) for p in args.processes.split(",")]
    raw: list[float] = []
    raw_bulk: list[float] = []
    runs: dict[int, list[dict]] = {p: [] for p in counts}
    for repeat in range(args.repeats):
        tag = f"[{repeat + 1}/{args.repeats}]"
        raw.append(raw_rate(bootstrap, topic, args.lines))
        raw_bulk.append(raw_rate(bootstrap, topic, args.lines, bulk=True))
        print(f"{tag} raw kafka-python: {raw[-1]:,.0f} lines/s; with bulk decoding: {raw_bulk[-1]:,.0f}",
              flush=True)
        for p in counts:
            run = group_rate(bootstrap, topic, args.lines, p, redis_url)
            runs[p].append({**run, "ratio": run["lines_per_s"] / raw[-1],
                            "ratio_bulk": run["lines_per_s"] / raw_bulk[-1]})
            print(f"{tag} {p} process(es): {run['lines_per_s']:,.0f} lines/s ({runs[p][-1]['ratio']:.2f} of "
                  f"raw, {runs[p][-1]['ratio_bulk']:.2f} of raw with bulk decoding; first commit after "
                  f"{run['start_s']:.1f} s, all in {run['total_s']:.1f} s)", flush=True)
    result = {"lines": args.lines, "repeats": args.repeats,
              "batch_max": os.environ.get("MOVIEREC_CONSUMER_BATCH_MAX", "default"),
              "bulk_decode": os.environ.get("MOVIEREC_CONSUMER_BULK_DECODE", "default"),
              "raw_kafka_python_lines_per_s": round(statistics.median(raw)),
              "raw_runs": [round(r) for r in raw],
              "raw_bulk_lines_per_s": round(statistics.median(raw_bulk)),
              "raw_bulk_runs": [round(r) for r in raw_bulk]}
    for p in counts:
        result[f"consumer_{p}p_lines_per_s"] = round(statistics.median(r["lines_per_s"] for r in runs[p]))
        result[f"ratio_{p}p_to_raw"] = round(statistics.median(r["ratio"] for r in runs[p]), 3)
        result[f"ratio_{p}p_to_raw_bulk"] = round(statistics.median(r["ratio_bulk"] for r in runs[p]), 3)
        result[f"consumer_{p}p_runs"] = [{k: round(v, 3) for k, v in r.items()} for r in runs[p]]
        print(f"median {p} process(es): {result[f'consumer_{p}p_lines_per_s']:,} lines/s, "
              f"{result[f'ratio_{p}p_to_raw']:.2f} of raw, "
              f"{result[f'ratio_{p}p_to_raw_bulk']:.2f} of raw with bulk decoding", flush=True)
    emit(result, args)


if __name__ == "__main__":
    main()
