"""Benchmark: decoding Kafka record batches, kafka-python's way against movierec's bulk way.

No services. Builds ``--lines`` lines of the simulated log into v2 record batches of
``--batch`` records with kafka-python's own builder (lz4, keyed by user, about the size of
the simulator producer's batches here; each batch's base offset set in its header as the
broker sets it), concatenated into fetch responses of about 1 MiB a partition as the
consumer asks for, then drains every response through kafka-python's
``Fetcher.PartitionRecords`` and through ``movierec.kafka_records``' bulk subclass, taking
``--take`` records at a time as ``poll`` does. Reports CPU µs a record (process time,
median of ``--repeats`` alternating runs) and checks both give the same records.

    python benchmarks/record_decode.py [--lines 200000] [--batch 1100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import time

from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.record import MemoryRecords
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import TopicPartition

from movierec.kafka_records import partition_records_class
from simulator.world import WorldSpec

from log_lines import log_lines  # benchmarks/log_lines.py
from report import add_output_args, emit  # benchmarks/report.py: scripts run from this folder

FETCH_BYTES = 1024 * 1024
LZ4 = 3


def responses(n: int, per_batch: int) -> list[bytes]:
    """Fetch responses (concatenated lz4 batches, about 1 MiB each) holding ``n`` lines."""
    lines = list(log_lines(n, spec=WorldSpec(seed=3, n_users=100_000, n_movies=5_000), days=2))
    out, response = [], b""
    for start in range(0, len(lines), per_batch):
        builder = MemoryRecordsBuilder(magic=2, compression_type=LZ4, batch_size=1 << 30)
        for i, (line, key) in enumerate(lines[start:start + per_batch]):
            builder.append(1_740_787_200_000 + i, key, line, [])
        builder.close()
        raw = bytearray(builder.records()._buffer)
        struct.pack_into(">q", raw, 0, start)  # the base offset: outside the CRC, set by the broker
        response += bytes(raw)
        if len(response) >= FETCH_BYTES:
            out.append(response)
            response = b""
    return out + ([response] if response else [])


def drain(cls, fetches: list[bytes], take: int) -> tuple[float, list]:
    tp = TopicPartition("movielog", 0)
    got = []
    started = time.process_time()
    for raw in fetches:
        part = cls(0, tp, MemoryRecords(raw))
        while part:
            got.extend(part.take(take))
    return time.process_time() - started, got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1100, help="Records a batch (the simulator's here: ~1,100).")
    ap.add_argument("--take", type=int, default=20_000, help="Records a take (the consumer's batch).")
    ap.add_argument("--repeats", type=int, default=5)
    add_output_args(ap)
    args = ap.parse_args()
    fetches = responses(args.lines, args.batch)
    bulk = partition_records_class(Fetcher.PartitionRecords, ConsumerRecord, IsolationLevel)
    gc.freeze()  # as `movierec consume` runs (stream_consumer.cli.tune_gc)
    gc.set_threshold(50_000, 20, 100)
    times: dict[str, list[float]] = {"kafka_python": [], "bulk": []}
    for _ in range(args.repeats):
        stock_s, stock = drain(Fetcher.PartitionRecords, fetches, args.take)
        bulk_s, mine = drain(bulk, fetches, args.take)
        if mine != stock:
            raise SystemExit("the bulk decoder gave different records")
        times["kafka_python"].append(stock_s)
        times["bulk"].append(bulk_s)
        del stock, mine
    n = args.lines
    result = {"lines": n, "batch": args.batch, "fetches": len(fetches), "repeats": args.repeats,
              "kafka_python_us_per_record": round(1e6 * statistics.median(times["kafka_python"]) / n, 3),
              "bulk_us_per_record": round(1e6 * statistics.median(times["bulk"]) / n, 3)}
    result["speedup"] = round(result["kafka_python_us_per_record"] / result["bulk_us_per_record"], 2)
    emit(result, args)


if __name__ == "__main__":
    main()
