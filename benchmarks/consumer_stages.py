"""Benchmark: the consumer's own CPU a line, columnar batch path against line by line.

Both paths of ``stream_consumer.batch.BatchFolder`` fold the same batches of the
full-scale benchmark stream (the world and history of benchmarks/consumer.py), then the
drift monitor observes them, as ``movierec consume`` does between kafka-python's decoding
and the writes. No services: this isolates the Python work the consumer adds per line,
which decides how close it can come to the raw kafka-python rate (issue #4 item 7).

Batches are formed like kafka-python's polls: the stream is split into 4 partitions by
key, and each batch takes up to ``--batch`` lines from one partition after another.
Reports the median CPU µs a line over ``--repeats`` alternating runs of each path.

    python benchmarks/consumer_stages.py [--lines 400000] [--batch 20000] [--repeats 5] \
        [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib
from collections import namedtuple

from movierec.wire import LineParser
from stream_consumer.batch import BatchFolder
from stream_consumer.drift_monitor import DriftMonitor
from stream_consumer.validate import Validator

from log_lines import log_lines  # benchmarks/log_lines.py
from report import add_output_args, emit  # benchmarks/report.py: scripts run from this folder

Record = namedtuple("Record", "topic partition offset timestamp value")


def batches(n: int, size: int) -> list[list[Record]]:
    parts: list[list[Record]] = [[] for _ in range(4)]
    for line, key in log_lines(n):
        p = zlib.crc32(key) % 4
        parts[p].append(Record("bench", p, len(parts[p]), 0, line))
    out, cursors = [], [0] * 4
    while any(c < len(part) for c, part in zip(cursors, parts, strict=True)):
        for p, part in enumerate(parts):
            if cursors[p] < len(part):
                out.append(part[cursors[p]:cursors[p] + size])
                cursors[p] += size
    return out


def run(polls: list[list[Record]], columnar: bool) -> dict[str, float]:
    """CPU seconds of folding and of drift over all polls, with fresh state."""
    folder = BatchFolder(LineParser(), Validator(runtime_of=lambda movie: None), columnar=columnar)
    drift = DriftMonitor(grace_buckets=1)
    fold_s = drift_s = 0.0
    for records in polls:
        started = time.process_time()
        folded = folder.fold(records)
        middle = time.process_time()
        drift.observe_batch(folded.accepted, folded.rejected)
        fold_s += middle - started
        drift_s += time.process_time() - middle
    return {"fold_s": fold_s, "drift_s": drift_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=400_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    add_output_args(ap)
    args = ap.parse_args()
    polls = batches(args.lines, args.batch)
    lines = sum(len(p) for p in polls)
    runs: dict[str, list[dict]] = {"columnar": [], "line_by_line": []}
    run(polls[:2], True)  # warm-up: first calls import and compile lazily
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(run(polls, name == "columnar"))
    result: dict[str, object] = {"lines": lines, "batch": args.batch, "repeats": args.repeats}
    for name, got in runs.items():
        for part in ("fold_s", "drift_s"):
            result[f"{name}_{part[:-2]}_us_per_line"] = round(
                statistics.median(r[part] for r in got) / lines * 1e6, 2)
        result[f"{name}_total_us_per_line"] = round(
            statistics.median(r["fold_s"] + r["drift_s"] for r in got) / lines * 1e6, 2)
    result["speedup"] = round(
        result["line_by_line_total_us_per_line"] / result["columnar_total_us_per_line"], 2)
    emit(result, args)


if __name__ == "__main__":
    main()
