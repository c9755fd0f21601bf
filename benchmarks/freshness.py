"""Benchmark: how fresh the consumer's features are while the log streams live.

Target (issue #4): freshness p99 under 2 s at a live 5,000 lines/s.

One `movierec consume` member (Redis, event store, dead letters and drift on; enrichment
off) reads a fresh 4-partition topic while this script produces the full-scale world's
history at ``--rate`` lines/s, paced every 10 ms. Every ``--probe-every``-th line is a
probe: a watch line of a user id no other line has. A watcher asks Redis every 10 ms, in
one pipeline, whether each waiting probe's user has its activity hash ({p}:u:{u}:m). A
probe's freshness runs from its send to the first poll that sees the hash: producer
batching (librdkafka, linger 20 ms), the broker, the consumer's poll, fold and write, and
up to 10 ms of watching.

Baseline in the same run: a raw kafka-python reader (no group, no processing) of the same
topic notes when each probe reaches it, the transport's share of the freshness; each
probe's time from that arrival to Redis is the consumer's own share (its percentiles are
of those per-probe differences, not differences of percentiles).
The first ``--warmup`` s are not counted (group join, first fetches); ``--repeats``
runs, each on a fresh topic and group, give medians.

Needs `movierec infra up`. Writes Redis keys under a bench prefix and a temporary store.

    python benchmarks/freshness.py [--rate 5000] [--duration 60] [--repeats 3] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import threading
import time

import numpy as np
import redis
from kafka import KafkaConsumer, TopicPartition

from movierec.kafka_admin import ensure_topic
from movierec.settings import KafkaSettings, RedisSettings, load
from simulator.producer import open_sink
from stores.keys import Keys

from consumer import clean_run, member  # benchmarks/consumer.py
from log_lines import log_lines  # benchmarks/log_lines.py
from report import add_output_args, emit

TICK_S = 0.01
PROBE_BASE = 900_000_000  # probe user ids: far above the world's


def with_probes(lines: list[tuple[bytes, bytes]], every: int) -> list[tuple[bytes, bytes, int]]:
    """(line, key, probe user or 0): every ``every``-th line becomes a probe watch line,
    at the time of the line it replaces (the stream's clock never jumps)."""
    movie = next(m.group(1) for line, _ in lines if (m := re.search(rb"/data/m/([^/]+)/", line)))
    out = []
    for i, (line, key) in enumerate(lines):
        if i % every == every - 1:
            user = PROBE_BASE + i
            stamp = line.split(b",", 1)[0]
            out.append((b"%s,%d,GET /data/m/%s/0.mpg" % (stamp, user, movie), str(user).encode(), user))
        else:
            out.append((line, key, 0))
    return out


class RedisWatcher(threading.Thread):
    """Polls Redis every tick for the waiting probes' activity hashes; ``seen`` maps a probe
    user to the monotonic time its hash was first seen."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        super().__init__(daemon=True)
        self.client, self.keys = client, keys
        self.waiting: dict[int, None] = {}
        self.seen: dict[int, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def wait_for(self, user: int) -> None:
        with self.lock:
            self.waiting[user] = None

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                users = list(self.waiting)
            if users:
                pipe = self.client.pipeline(transaction=False)
                for user in users:
                    pipe.exists(self.keys.user_activity(user))
                found = pipe.execute()
                now = time.monotonic()
                with self.lock:
                    for user, there in zip(users, found, strict=True):
                        if there:
                            self.seen[user] = now
                            self.waiting.pop(user, None)
            time.sleep(TICK_S)


class RawReader(threading.Thread):
    """A kafka-python reader with no group and no processing: when each probe arrives."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                      auto_offset_reset="earliest", group_id=None)
        self.consumer.assign([TopicPartition(topic, p) for p in range(4)])
        self.seen: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for records in self.consumer.poll(timeout_ms=100).values():
                now = time.monotonic()
                for record in records:
                    user = int(record.value.split(b",", 2)[1])
                    if user >= PROBE_BASE:
                        self.seen[user] = now
        self.consumer.close()


def one_run(bootstrap: str, redis_url: str, lines: list, rate: int, duration: float, warmup: float) -> dict:
    topic = f"bench-fresh-{time.time_ns()}"
    group = topic
    ensure_topic(bootstrap, topic, 4)
    store = tempfile.mkdtemp(prefix="bench-store-")
    consumer = member(bootstrap, topic, group, redis_url, store)
    client = redis.Redis.from_url(redis_url)
    watcher = RedisWatcher(client, Keys(group))
    reader = RawReader(bootstrap, topic)
    sink = open_sink("confluent", bootstrap=bootstrap, topic=topic)
    sent: dict[int, float] = {}
    per_tick = rate * TICK_S
    total = int(rate * (warmup + duration))
    try:
        watcher.start()
        reader.start()
        started = time.monotonic()
        due = 0.0  # lines owed by now
        i = 0
        while i < total:
            now = time.monotonic()
            due = min(total, (now - started) / TICK_S * per_tick)
            while i < due:
                line, key, probe = lines[i % len(lines)]
                sink.send(line, key)
                if probe and now - started >= warmup:
                    sent[probe] = time.monotonic()
                    watcher.wait_for(probe)
                i += 1
            time.sleep(max(0.0, started + (i // per_tick + 1) * TICK_S - time.monotonic()))
        elapsed = time.monotonic() - started
        sink.flush()
        deadline = time.monotonic() + 60  # the last probes: seen, or lost
        while watcher.waiting and time.monotonic() < deadline:
            time.sleep(0.1)
        reader.done.set()
        reader.join(timeout=10)
    finally:
        watcher.stop.set()
        watcher.join(timeout=10)
        sink.close()
        consumer.terminate()
        consumer.wait(timeout=60)
        client.close()
        clean_run(redis_url, group, store)
    lost = [u for u in sent if u not in watcher.seen]
    if lost:
        raise SystemExit(f"{len(lost)} probes never became visible in Redis")
    fresh = np.array([watcher.seen[u] - sent[u] for u in sent])
    both = [u for u in sent if u in reader.seen]
    transport = np.array([reader.seen[u] - sent[u] for u in both])
    own = np.array([watcher.seen[u] - reader.seen[u] for u in both])
    return {"achieved_lines_per_s": total / elapsed, "probes": len(fresh),
            "p50_s": float(np.percentile(fresh, 50)), "p99_s": float(np.percentile(fresh, 99)),
            "max_s": float(fresh.max()),
            "transport_p50_s": float(np.percentile(transport, 50)),
            "transport_p99_s": float(np.percentile(transport, 99)),
            "consumer_p50_s": float(np.percentile(own, 50)), "consumer_p99_s": float(np.percentile(own, 99)),
            "reader_missed": len(sent) - len(both)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5000, help="Lines/s produced.")
    ap.add_argument("--duration", type=float, default=60.0, help="Seconds measured, after the warm-up.")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--probe-every", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    add_output_args(ap)
    args = ap.parse_args()
    bootstrap = load(KafkaSettings).kafka_bootstrap
    redis_url = load(RedisSettings).redis_url
    lines = with_probes(list(log_lines(int(args.rate * (args.warmup + args.duration)), seed=5)),
                        args.probe_every)
    runs = []
    for repeat in range(args.repeats):
        runs.append(one_run(bootstrap, redis_url, lines, args.rate, args.duration, args.warmup))
        r = runs[-1]
        print(f"[{repeat + 1}/{args.repeats}] {r['achieved_lines_per_s']:,.0f} lines/s, "
              f"{r['probes']} probes: "
              f"freshness p50 {r['p50_s']:.3f} s, p99 {r['p99_s']:.3f} s, max {r['max_s']:.3f} s; "
              f"transport alone p50 {r['transport_p50_s']:.3f} s, p99 {r['transport_p99_s']:.3f} s; "
              f"consumer's share p50 {r['consumer_p50_s']:.3f} s, p99 {r['consumer_p99_s']:.3f} s "
              f"({r['reader_missed']} probes the raw reader missed)", flush=True)
    result = {"rate": args.rate, "duration_s": args.duration, "repeats": args.repeats,
              "bulk_decode": os.environ.get("MOVIEREC_CONSUMER_BULK_DECODE", "default")}
    for name in runs[0]:
        result[name] = round(statistics.median(r[name] for r in runs), 4)
    result["runs"] = [{k: round(v, 4) for k, v in r.items()} for r in runs]
    emit(result, args)


if __name__ == "__main__":
    main()
