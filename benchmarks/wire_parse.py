"""Benchmark: MLiP line parsing speed on one core, for a realistic mix of lines.

The mix mirrors a real stream: mostly per-minute watch lines, some ratings,
recommendation lines with 20 ids, a few account creations, and 1% malformed lines.
Input is UTF-8 bytes, as the consumer receives it from Kafka.

The baseline, measured in the same run, is the least any parser must do: decode the
bytes and split off the three fields. The figure of merit is lines/s (median of
--repeats runs) and its ratio to that floor.

    python benchmarks/wire_parse.py [--lines 200000] [--repeats 7] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timedelta

from movierec.wire import LineParser

from report import add_output_args, emit  # benchmarks/report.py: scripts run from this folder

WORDS = "the of a star wars love night man dark city king lord rings kill bill".split()


def make_lines(n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    movies = []
    for i in range(27_000):
        words = rnd.sample(WORDS, rnd.randint(1, 5)) + [str(i)]
        movies.append("+".join(words) + f"+{rnd.randint(1930, 2024)}")
    # popularity long tail: Zipf-like weights
    weights = [1.0 / (rank + 1) for rank in range(len(movies))]
    start = datetime(2025, 10, 17, 1, 33, 45)
    lines: list[bytes] = []
    picks = rnd.choices(movies, weights=weights, k=n)
    for i in range(n):
        when = (start + timedelta(milliseconds=37 * i)).isoformat(timespec="milliseconds")
        user = rnd.randrange(1_000_000)
        roll = rnd.random()
        if roll < 0.90:
            line = f"{when},{user},GET /data/m/{picks[i]}/{rnd.randrange(120)}.mpg"
        elif roll < 0.95:
            line = f"{when},{user},GET /rate/{picks[i]}={rnd.randint(1, 5)}"
        elif roll < 0.985:
            items = ", ".join(rnd.choices(movies[:2000], k=20))
            line = (
                f"{when},{user},recommendation request 17645-team15.isri.cmu.edu:8082, "
                f"status 200, result: {items}, {rnd.randint(5, 400)} ms"
            )
        elif roll < 0.99:
            line = f"{when},{user},GET /create_account"
        else:
            line = f"{when},{user},GET /rate/{picks[i]}=banana"
        lines.append(line.encode())
    return lines


def run_baseline(lines: list[bytes]) -> float:
    t0 = time.perf_counter()
    for raw in lines:
        raw.decode("utf-8").split(",", 2)
    return time.perf_counter() - t0


def run_parser(lines: list[bytes], rating_scale: int = 5) -> float:
    parse = LineParser(rating_scale).parse
    t0 = time.perf_counter()
    for raw in lines:
        parse(raw)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=7)
    add_output_args(ap)
    args = ap.parse_args()

    lines = make_lines(args.lines)
    base, parsed = [], []
    for _ in range(args.repeats):  # interleave so noise hits both alike
        base.append(args.lines / run_baseline(lines))
        parsed.append(args.lines / run_parser(lines))
    result = {
        "lines": args.lines,
        "repeats": args.repeats,
        "baseline_lines_per_s_median": round(statistics.median(base)),
        "parser_lines_per_s_median": round(statistics.median(parsed)),
        "parser_lines_per_s_min": round(min(parsed)),
        "parser_lines_per_s_max": round(max(parsed)),
        "ratio_parser_to_baseline": round(statistics.median(parsed) / statistics.median(base), 3),
    }
    emit(result, args)


if __name__ == "__main__":
    main()
