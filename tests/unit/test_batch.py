"""The consumer's two batch paths (stream_consumer.batch) give the same effects: the
columnar one is the default, the line-by-line one is the reference."""

from __future__ import annotations

import contextlib
import random
from collections import namedtuple
from datetime import datetime, timedelta

import pytest

from movierec.wire import LineParser, Watch
from simulator.history import HistoryGenerator
from simulator.inject import InjectionPlan, Injector
from simulator.world import World, WorldSpec
from stores.feature_delta import epoch_ms
from stream_consumer.batch import BatchFolder
from stream_consumer.drift_monitor import DriftMonitor
from stream_consumer.validate import Validator

Record = namedtuple("Record", "topic partition offset timestamp value")
START = datetime(2025, 3, 1)


def _stream(seed: int) -> tuple[list[bytes | None], dict[str, int]]:
    """Simulated lines with injected faults, plus lines each special path must handle."""
    world = World.build(WorldSpec(seed=seed, n_users=2_000, n_movies=400, horizon_days=2))
    generator = HistoryGenerator(world, start=START, days=0.4, seed=seed)
    plan = InjectionPlan(malformed=0.02, duplicate=0.05, reorder=0.05, seed=seed)
    timed = ((0.0, line, key) for line, key in generator.lines())
    lines: list[bytes | None] = [line for line, _ in Injector(plan, None, START).run(timed)]
    rng = random.Random(seed)
    movies = sorted({line.split(b"/")[3].decode() for line in lines
                     if line and line.count(b",") == 2 and b"/data/m/" in line})
    runtimes = {movie: rng.choice([20, 60, 90]) for movie in movies[::3]}
    for _ in range(300):  # fractions, CRLF, minutes past the runtime, tombstones, bad lines
        at = rng.randrange(len(lines))
        line = lines[at] or b""
        stamp, _, rest = line.partition(b",")
        extra = rng.choice([b"." + b"7" * rng.randint(1, 9), b"\r\n", b"minute", None, b"x"])
        if extra is None:
            lines.insert(at, None)
        elif extra == b"\r\n":
            lines.insert(at, line + extra)
        elif extra == b"minute" and b"/data/m/" in rest:
            lines.insert(at, line.rsplit(b"/", 1)[0] + b"/95.mpg")
        elif extra == b"x":
            lines.insert(at, b"\xff" + line)
        elif len(stamp) == 19:
            lines.insert(at, stamp + extra + b"," + rest)
    return lines, runtimes


def _written(lines: list[bytes | None], seed: int) -> list[int]:
    """Each line's Kafka timestamp: its own time (when it parses) plus up to 2 s of
    delivery, else the previous line's; one in 50 has none (-1, an old message format)."""
    rng = random.Random(seed)
    out, last = [], epoch_ms(START)
    for line in lines:
        with contextlib.suppress(TypeError, ValueError, UnicodeDecodeError):  # no time: the last one
            last = epoch_ms(datetime.fromisoformat(line[:19].decode())) + rng.randrange(2000)  # type: ignore[index]
        out.append(-1 if rng.random() < 0.02 else last)
    return out


def _ahead(lines: list[bytes | None], every: int, burst: int, hours: float) -> list[bytes | None]:
    """``burst`` lines in a row out of every ``every`` stamped ``hours`` later than they
    were written (a bad clock; their Kafka timestamps stay)."""
    out = []
    for i, line in enumerate(lines):
        if line and 0 < i % every <= burst and line[:4] == b"2025" and line[19:20] == b",":
            when = datetime.fromisoformat(line[:19].decode()) + timedelta(hours=hours)
            line = when.isoformat().encode() + line[19:]
        out.append(line)
    return out


def _comparable(event) -> tuple:
    if isinstance(event, tuple):  # the columnar path's watch: (time, user, movie, minute)
        return ("watch", epoch_ms(event[0]), *event[1:])
    if isinstance(event, Watch):
        return ("watch", epoch_ms(event.time), event.user_id, event.movie_id, event.minute)
    return (event,)


def _run(lines: list[bytes | None], written: list[int], runtimes: dict[str, int], sizes: list[int],
         columnar: bool):
    validator = Validator(runtime_of=runtimes.get, ahead=timedelta(hours=6))
    folder = BatchFolder(LineParser(), validator, columnar=columnar)
    drift = DriftMonitor(grace_buckets=1, bucket=timedelta(minutes=30))
    records = [Record("t", i % 3, i, w, line) for i, (line, w) in enumerate(zip(lines, written, strict=True))]
    outs, clocks, at, k = [], [], 0, 0
    while at < len(records):
        size = sizes[k % len(sizes)]
        folded = folder.fold(records[at:at + size])
        drift.observe_batch(folded.accepted, folded.rejected, written_ms=folded.newest_ms)
        outs.append(folded)
        clocks.append(validator.clock)
        at, k = at + size, k + 1
    return outs, clocks, drift


@pytest.mark.parametrize("seed,every,burst,hours", [(1, 0, 0, 0), (2, 97, 1, 7.0), (3, 2_000, 8, 30.0)])
def test_columnar_batches_equal_line_by_line(seed: int, every: int, burst: int, hours: float) -> None:
    lines, runtimes = _stream(seed)
    written = _written(lines, seed)
    if every:
        lines = _ahead(lines, every, burst, hours)
    sizes = [1, 7, 500, 3_000, 64]
    fast, fast_clocks, fast_drift = _run(lines, written, runtimes, sizes, columnar=True)
    slow, slow_clocks, slow_drift = _run(lines, written, runtimes, sizes, columnar=False)
    assert fast_clocks == slow_clocks
    rejected = set()
    for a, b in zip(fast, slow, strict=True):
        assert ((a.lines, a.rejected, a.kinds, a.oldest_ms, a.newest_ms, a.dead)
                == (b.lines, b.rejected, b.kinds, b.oldest_ms, b.newest_ms, b.dead))
        assert [_comparable(e) for e in a.accepted] == [_comparable(e) for e in b.accepted]
        assert (a.table is None) == (b.table is None)
        if a.table is not None:
            assert a.table.equals(b.table)
        da, db = a.delta, b.delta
        for name in ("progress", "ratings", "recent", "first_seen", "last_seen", "viewers",
                     "new_users", "movies", "events"):
            assert getattr(da, name) == getattr(db, name), name
        assert {k: sorted(v) for k, v in da.identities.items()} == \
            {k: sorted(v) for k, v in db.identities.items()}
        rejected |= set(a.rejected)
    assert fast_drift.report().to_dict() == slow_drift.report().to_dict()
    assert (fast_drift.late_lines, fast_drift.ahead_lines) == (slow_drift.late_lines, slow_drift.ahead_lines)
    # the stream exercised what it should: bad lines, runtime checks, and the clock
    assert "minute_beyond_runtime" in rejected and "bad_encoding" in rejected
    if every:
        assert "future_timestamp" in rejected


def test_batches_the_fast_path_matches_but_the_checks_or_the_parser_reject_agree() -> None:
    """Canonical watches all past their film's runtime (no row accepted), and a canonical
    line with 9,000 newlines after it (too long for the parser): both paths agree."""
    lines = [f"2025-03-01T12:00:{i:02d},{i},GET /data/m/up+2009/{50 + i}.mpg".encode() for i in range(20)]
    lines.append(lines[0] + b"\n" * 9_000)
    records = [Record("t", 0, i, epoch_ms(datetime(2025, 3, 1, 12, 0, i)), line)
               for i, line in enumerate(lines)]
    results = []
    for columnar in (True, False):
        folder = BatchFolder(LineParser(), Validator(runtime_of={"up+2009": 30}.get), columnar=columnar)
        folded = folder.fold(records)
        results.append((folded.table, folded.dead, folded.rejected, folded.accepted, folder.validator.clock))
    assert results[0] == results[1]
    table, dead, rejected, accepted, clock = results[0]
    assert table is None and accepted == [] and clock is None and len(dead) == 21
    assert rejected == {"minute_beyond_runtime": 20, "too_long": 1}
