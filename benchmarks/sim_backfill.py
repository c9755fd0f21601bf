"""Benchmark: simulator backfill into the real Kafka broker, at full scale.

Target (issue #3): at least 50,000 lines/s into Kafka at full scale (1M users, 27k
movies). Each repeat measures, in the same run and against the same broker:

- ``backfill``: the whole path (sessions -> lines -> confluent-kafka producer), for
  ``--hours`` simulated hours starting at 18:00 (the evening peak);
- ``raw_confluent``: producing the same, already generated lines with confluent-kafka
  (the ceiling the generator could reach);
- ``raw_kafka_python``: the same lines with kafka-python (why the bulk path does not use
  it), on the first ``--kp-lines`` lines.

Needs the stack: ``movierec infra up``. Every repeat writes to fresh topics.

    python benchmarks/sim_backfill.py [--hours 1.0] [--repeats 3] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

from movierec.kafka_admin import ensure_topic
from movierec.settings import KafkaSettings, load
from simulator.backfill import backfill
from simulator.history import HistoryGenerator
from simulator.producer import open_sink
from simulator.world import World, WorldSpec

from report import add_output_args, emit  # benchmarks/report.py: scripts run from this folder


def raw_rate(client: str, bootstrap: str, lines: list[tuple[bytes, bytes]]) -> float:
    topic = f"bench-raw-{client}-{time.time_ns()}"
    ensure_topic(bootstrap, topic, 4)
    sink = open_sink(client, bootstrap=bootstrap, topic=topic)
    started = time.perf_counter()
    for line, key in lines:
        sink.send(line, key)
    sink.flush()
    seconds = time.perf_counter() - started
    sink.close()
    return len(lines) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kp-lines", type=int, default=200_000)
    add_output_args(ap)
    args = ap.parse_args()
    bootstrap = load(KafkaSettings).kafka_bootstrap

    started = time.perf_counter()
    world = World.build(WorldSpec())
    build_s = time.perf_counter() - started
    rows = []
    for rep in range(args.repeats):
        start = datetime(2025, 3, 1 + rep, 18)
        topic = f"bench-backfill-{time.time_ns()}"
        ensure_topic(bootstrap, topic, 4)
        generator = HistoryGenerator(world, start=start, days=args.hours / 24, seed=rep)
        sink = open_sink("confluent", bootstrap=bootstrap, topic=topic)
        result = backfill(generator, sink, progress=False)
        sink.close()
        lines = list(HistoryGenerator(world, start=start, days=args.hours / 24, seed=rep).lines())
        row = {
            "lines": result.lines,
            "backfill": result.lines_per_s,
            "raw_confluent": raw_rate("confluent", bootstrap, lines),
            "raw_kafka_python": raw_rate("kafka-python", bootstrap, lines[: args.kp_lines]),
        }
        rows.append(row)
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in row.items()), flush=True)
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    summary = {
        "world_build_s": round(build_s, 2), "hours": args.hours, "repeats": rows,
        "median_lines_per_s": {k: round(v) for k, v in median.items()},
        "ratio_backfill_to_raw_confluent": round(median["backfill"] / median["raw_confluent"], 3),
        "ratio_backfill_to_target_50k": round(median["backfill"] / 50_000, 2),
    }
    emit(summary, args)


if __name__ == "__main__":
    main()
