"""Backfilled history: every line valid, in time order, consistent per user."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from movierec.wire import Account, LineParser, Rate, Watch
from ops.cli import main
from simulator.backfill import backfill
from simulator.history import HistoryGenerator
from simulator.producer import FileSink
from simulator.world import World, WorldSpec
from tests.conftest import assert_one_session_at_a_time

START = datetime(2025, 3, 1)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldSpec(seed=5, n_users=3_000, n_movies=800, new_share=0.3,
                                 horizon_days=2))


@pytest.fixture(scope="module")
def events(world: World) -> list:
    parser = LineParser(rating_scale=10)
    generator = HistoryGenerator(world, start=START, days=1.0, seed=5, rating_scale=10)
    return [parser.parse(line) for line, _ in generator.lines()]


def test_every_line_parses_and_time_never_goes_back(events: list) -> None:
    assert len(events) > 10_000
    assert all(isinstance(e, Watch | Rate | Account) for e in events)
    times = [e.time for e in events]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < datetime(2025, 3, 2)
    kinds = {type(e) for e in events}
    assert kinds == {Watch, Rate, Account}
    assert max(e.rating for e in events if isinstance(e, Rate)) > 5  # the 10-point scale


def test_new_users_sign_up_before_they_watch(world: World, events: list) -> None:
    first: dict[int, object] = {}
    for e in events:
        first.setdefault(e.user_id, e)
    joined = world.population.joined
    for user, e in first.items():
        if joined[user] >= 0:
            assert isinstance(e, Account)
            assert abs((e.time - START).total_seconds() - joined[user] * 86400) < 1
        else:
            assert not isinstance(e, Account)


def test_a_user_watches_one_session_at_a_time(events: list) -> None:
    assert assert_one_session_at_a_time(events) > 100


def test_backfill_counts_what_it_sends(world: World, tmp_path: Path) -> None:
    out = tmp_path / "log.txt"
    generator = HistoryGenerator(world, start=START, days=0.2, seed=9)
    sink = FileSink(out)
    result = backfill(generator, sink, progress=False)
    sink.close()
    lines = out.read_bytes().splitlines()
    assert len(lines) == result.lines == sum(result.by_kind.values()) > 0
    assert result.lines_per_s > 0


def test_cli_backfill_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "cli.log"
    result = CliRunner().invoke(main, ["sim", "backfill", "--users", "500", "--movies", "200",
                                       "--days", "0.1", "--sink", "file", "--out", str(out),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    count = len(out.read_bytes().splitlines())
    assert f"{count:,} lines to {out}" in result.stdout
    checked = CliRunner().invoke(main, ["wire", "check", str(out)])
    assert "rejection" not in checked.stdout
