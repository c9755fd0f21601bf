"""The columnar watch parser (movierec.wire_batch) against the line parser: every line it
takes is a Watch with the same values; lines it leaves go to the line parser."""

from __future__ import annotations

from datetime import datetime

import pytest

from movierec.wire import LineParser, Watch
from movierec.wire_batch import as_binary_array, parse_watches
from simulator.history import HistoryGenerator
from simulator.world import World, WorldSpec
from stores.feature_delta import epoch_ms

CANONICAL = b"2025-03-01T12:00:05,42,GET /data/m/the+matrix+1999/17.mpg"
# (line, whether the fast path must take it)
EDGES = [
    (CANONICAL, True),
    (CANONICAL + b"\r\n", True),
    (CANONICAL + b"\n", True),
    (CANONICAL + b"\r\n" * 4, True),
    (CANONICAL + b"\n" * 9_000, False),  # too long for the parser: never the fast path's
    (b"2022-10-29T21:54:35.8,42,GET /data/m/up+2009/0.mpg", True),
    (b"2022-10-29T21:54:35.854,42,GET /data/m/up+2009/0.mpg", True),
    (b"2022-02-08T12:02:38.164729,42,GET /data/m/up+2009/0.mpg", True),
    (b"2025-10-17T01:33:45.122692921,42,GET /data/m/up+2009/0.mpg", True),
    (b"2025-03-01T12:45,42,GET /data/m/up+2009/0.mpg", False),  # a Watch, left to the parser
    (b"2024-02-29T23:59:59,42,GET /data/m/up+2009/9999.mpg", True),
    (b"2024-02-29T23:59:59,42,GET /data/m/up+2009/0007.mpg", True),
    (b"2025-02-29T00:00:00,42,GET /data/m/up+2009/1.mpg", False),  # no Feb 29 in 2025
    (b"2025-02-30T00:00:00,42,GET /data/m/up+2009/1.mpg", False),
    (b"2025-04-31T00:00:00,42,GET /data/m/up+2009/1.mpg", False),
    (b"2025-03-01T24:00:00,42,GET /data/m/up+2009/1.mpg", False),
    (b"2025-03-01T12:60:00,42,GET /data/m/up+2009/1.mpg", False),
    (b"2025-03-01T12:00:60,42,GET /data/m/up+2009/1.mpg", False),
    (b"2025-13-01T12:00:00,42,GET /data/m/up+2009/1.mpg", False),
    (b"2025-03-01 12:00:00,42,GET /data/m/up+2009/1.mpg", False),
    (b"2025-03-01T12:00:00+01:00,42,GET /data/m/up+2009/1.mpg", False),
    (b"0999-03-01T12:00:00,42,GET /data/m/up+2009/1.mpg", False),
    (b"2025-03-01T12:00:00,123456789012345678,GET /data/m/up+2009/1.mpg", True),
    (b"2025-03-01T12:00:00,1234567890123456789,GET /data/m/up+2009/1.mpg", False),
    (b"2025-03-01T12:00:00,0042,GET /data/m/up+2009/1.mpg", True),
    (b"2025-03-01T12:00:00,-1,GET /data/m/up+2009/1.mpg", False),
    (b"2025-03-01T12:00:00,4\xd9\xa22,GET /data/m/up+2009/1.mpg", False),  # Arabic-Indic digit
    (b"2025-03-01T12:00:00,42,GET /data/m/Up+2009/1.mpg", False),
    (b"2025-03-01T12:00:00,42,GET /data/m/+up+2009/1.mpg", False),
    (b"2025-03-01T12:00:00,42,GET /data/m/2009/1.mpg", False),
    (b"2025-03-01T12:00:00,42,GET /data/m/up+209/1.mpg", False),
    (b"2025-03-01T12:00:00,42,GET /data/m/caf\xc3\xa9+2009/1.mpg", False),  # valid, non-ASCII
    (b"2025-03-01T12:00:00,42,GET /data/m/willy+wonka++the+chocolate+factory+1971/3.mpg", True),
    (b"2025-03-01T12:00:00,42,GET /data/m/kill+bill+vol.+1+2003/3.mpg", True),
    (b"2025-03-01T12:00:00,42,GET /data/m/monsters_+inc.+2001/3.mpg", True),
    (b"2025-03-01T12:00:00,42,GET /data/m/spider-man+3+2007/3.mpg", True),
    (b"2025-03-01T12:00:00,42,GET /data/m/" + b"a" * 251 + b"+2009/1.mpg", True),  # 256 chars
    (b"2025-03-01T12:00:00,42,GET /data/m/" + b"a" * 252 + b"+2009/1.mpg", False),
    (b"2025-03-01T12:00:00,42,GET /data/m/up+2009/10000.mpg", False),
    (b"2025-03-01T12:00:00,42,GET /data/m/up+2009/1.mp4", False),
    (b"2025-03-01T12:00:00,42,GET /data/m/up+2009/1.mpg ", False),
    (b"2025-03-01T12:00:00,42,GET /data/m/up+2009/x/1.mpg", False),
    (b"2025-03-01T12:00:00,42,GET /rate/up+2009=4", False),
    (b"2025-03-01T12:00:00,42,GET /create_account", False),
    (b"2025-03-01T12:00:00,42,recommendation request h:8082, status 200, result: up+2009, 5 ms", False),
    (b"\xff\xfe garbage", False),
    (b"", False),
    (b"x" * 10_000, False),
    (b"1740830400000,42,GET /data/m/up+2009/1.mpg", False),  # epoch-ms schema change
]


def _check_against_parser(lines: list[bytes]) -> set[int]:
    """Assert every fast row equals the parser's Watch; return the fast rows."""
    fast = parse_watches(lines)
    movies = fast.movies.to_pylist()
    parser = LineParser()
    for k, row in enumerate(fast.rows.tolist()):
        event = parser.parse(lines[row])
        assert isinstance(event, Watch), lines[row]
        assert (epoch_ms(event.time), event.user_id, event.movie_id, event.minute) == \
            (fast.ms[k], fast.users[k], movies[k], fast.minutes[k]), lines[row]
    return set(fast.rows.tolist())


def test_edge_lines_are_taken_only_when_certain_and_then_equal_the_parser() -> None:
    lines = [line for line, _ in EDGES]
    taken = _check_against_parser(lines)
    assert taken == {i for i, (_, fast) in enumerate(EDGES) if fast}


@pytest.mark.parametrize("seed", [1, 2])
def test_a_simulated_stream_is_all_fast_except_other_kinds(seed: int) -> None:
    world = World.build(WorldSpec(seed=seed, n_users=2_000, n_movies=500, horizon_days=2))
    generator = HistoryGenerator(world, start=datetime(2025, 3, 1), days=0.3, seed=seed)
    lines = [line for line, _ in generator.lines()]
    taken = _check_against_parser(lines)
    parser = LineParser()
    watches = {i for i, line in enumerate(lines) if isinstance(parser.parse(line), Watch)}
    assert len(watches) > 2_000 and taken == watches


def test_binary_array_keeps_every_byte_and_row() -> None:
    values = [b"a,b\nc", b"", b"\x00\xff", CANONICAL]
    assert as_binary_array(values).to_pylist() == values
    assert len(parse_watches([])) == 0
