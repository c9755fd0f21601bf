"""Benchmark: the event store's hot path (EventColumns) and its write/read/compact speed.

The mix mirrors a real stream: 90% per-minute watch lines, 5% ratings, 3.5% successful
recommendations with 20 ids, 1% failed ones, 0.5% account creations, over 4 partitions.

Figures (median of --repeats runs, interleaved so noise hits all alike):

* EventColumns: ``add`` for every event, then one ``to_table`` (ns/row, rows/s).
* Baseline, same run, same table: one row dict per event (``event_row``) then
  ``pa.Table.from_pylist``; also ``from_pylist`` alone on dicts built beforehand.
* append: ``EventStore.append`` of ``--batch``-row tables (the consumer's batch size)
  into a fresh directory, zstd Parquet + fsync per file (rows/s).
* read and compact of the store that the append runs built (rows/s).

    python benchmarks/event_store.py [--events 100000] [--batch 5000] [--repeats 7] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from movierec.wire import Account, Rate, Recommendation, Watch
from stores.event_store import SCHEMA, EventColumns, EventStore, event_row

from report import add_output_args, emit  # benchmarks/report.py: scripts run from this folder


def make_log(n: int, seed: int = 7) -> list[tuple]:
    """(event, partition, offset) in arrival order, one line every 37 ms."""
    rnd = random.Random(seed)
    movies = [f"movie+{i}+{rnd.randint(1930, 2024)}" for i in range(27_000)]
    weights = [1.0 / (rank + 1) for rank in range(len(movies))]
    picks = rnd.choices(movies, weights=weights, k=n)
    start = datetime(2025, 10, 17, 1, 33, 45, 122692)
    offsets = [0, 0, 0, 0]
    log = []
    for i in range(n):
        when = start + timedelta(milliseconds=37 * i)
        user = rnd.randrange(1_000_000)
        roll = rnd.random()
        if roll < 0.90:
            event = Watch(when, user, picks[i], rnd.randrange(120))
        elif roll < 0.95:
            event = Rate(when, user, picks[i], rnd.randint(1, 5))
        elif roll < 0.985:
            items = tuple(rnd.choices(movies[:2000], k=20))
            event = Recommendation(when, user, "team15.isri.cmu.edu:8082", 200, items, "",
                                   rnd.randint(5, 400))
        elif roll < 0.995:
            event = Recommendation(when, user, "team15.isri.cmu.edu:8082", 0, (),
                                   "Read timed out after 600 ms", 600)
        else:
            event = Account(when, user)
        p = user % 4
        log.append((event, p, offsets[p]))
        offsets[p] += 1
    return log


def run_columns(log: list[tuple]) -> tuple[float, pa.Table]:
    t0 = time.perf_counter()
    columns = EventColumns()
    add = columns.add
    for event, partition, offset in log:
        add(event, partition, offset)
    table = columns.to_table()
    return time.perf_counter() - t0, table


def run_baseline(log: list[tuple]) -> tuple[float, pa.Table]:
    t0 = time.perf_counter()
    table = pa.Table.from_pylist([event_row(e, p, o) for e, p, o in log], schema=SCHEMA)
    return time.perf_counter() - t0, table


def run_from_pylist_only(rows: list[dict]) -> float:
    t0 = time.perf_counter()
    pa.Table.from_pylist(rows, schema=SCHEMA)
    return time.perf_counter() - t0


def run_append(table: pa.Table, root: Path, batch: int) -> float:
    store = EventStore(root, "movielog")
    batches = [table.slice(at, batch) for at in range(0, table.num_rows, batch)]
    t0 = time.perf_counter()
    for piece in batches:
        store.append(piece)
    return time.perf_counter() - t0


def timed(action) -> float:
    t0 = time.perf_counter()
    action()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000, help="rows per append (the consumer's batch_max)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dir", help="where to write stores (default: a temporary directory)")
    add_output_args(ap)
    args = ap.parse_args()

    log = make_log(args.events)
    rows = [event_row(e, p, o) for e, p, o in log]
    n = args.events
    cols_s, base_s, pylist_s, append_s, read_s, compact_s = [], [], [], [], [], []
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="movierec-bench-"))
    try:
        for r in range(args.repeats):
            seconds, table = run_columns(log)
            cols_s.append(seconds)
            seconds, reference = run_baseline(log)
            base_s.append(seconds)
            assert table.to_pylist()[:1000] == reference.to_pylist()[:1000]
            pylist_s.append(run_from_pylist_only(rows))
            root = work / f"store{r}"
            append_s.append(run_append(table, root, args.batch))
            store = EventStore(root, "movielog")
            read_s.append(timed(store.read))
            compact_s.append(timed(lambda: store.compact(min_files=2)))  # noqa: B023 (called at once)
            shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    result = {
        "events": n,
        "repeats": args.repeats,
        "batch_rows": args.batch,
        "columns_ns_per_row": round(med(cols_s) / n * 1e9),
        "columns_rows_per_s": round(n / med(cols_s)),
        "baseline_row_dicts_from_pylist_ns_per_row": round(med(base_s) / n * 1e9),
        "baseline_from_pylist_only_ns_per_row": round(med(pylist_s) / n * 1e9),
        "speedup_vs_baseline": round(med(base_s) / med(cols_s), 1),
        "append_rows_per_s": round(n / med(append_s)),
        "append_ms_per_batch": round(med(append_s) / -(-n // args.batch) * 1e3, 2),
        "read_rows_per_s": round(n / med(read_s)),
        "compact_rows_per_s": round(n / med(compact_s)),
    }
    emit(result, args)


if __name__ == "__main__":
    main()
