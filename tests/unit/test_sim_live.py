"""Live mode against a real (tiny) HTTP service: requests, log lines, reactions."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from movierec.wire import Account, LineParser, Recommendation, Rejection, Watch
from simulator import oracle
from simulator.grade import GradeAccumulator
from simulator.live import LiveConfig, LiveRun
from simulator.live_http import Answer
from simulator.producer import FileSink
from simulator.world import World, WorldSpec
from tests.conftest import QuietHandler, assert_one_session_at_a_time, free_ports

START = datetime(2025, 4, 1, 18)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldSpec(seed=9, n_users=3_000, n_movies=600))


@pytest.fixture(scope="module")
def service(world: World) -> Iterator[str]:
    """Good lists for most users; user ids ending in 1: HTTP 500, 2: malformed, 3: slow."""

    @Request.application
    def app(request: Request) -> Response:
        user = int(request.path.rsplit("/", 1)[-1])
        if user % 10 == 1:
            return Response("boom", status=500)
        if user % 10 == 2:
            return Response("<html>not a list</html>")
        if user % 10 == 3:
            time.sleep(0.8)
        return Response(",".join(oracle.best_list(world, user)), mimetype="text/plain")

    port = free_ports(1)[0]
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _run(world: World, config: LiveConfig, tmp_path: Path, pool=None):
    out, truth = tmp_path / "live.log", io.StringIO()
    sink = FileSink(out)
    run = LiveRun(world, config, sink, start=START, truth=truth, pool=pool)
    stats = asyncio.run(run.run())
    sink.close()
    return stats, out.read_bytes().splitlines(), truth.getvalue()


def test_live_run_logs_like_the_course_client(world: World, service: str, tmp_path: Path) -> None:
    config = LiveConfig(service_url=service, rate_per_s=80, duration_s=2.5, clock_ratio=600,
                        new_user_share=0.1, seed=1)
    stats, lines, _ = _run(world, config, tmp_path)
    parser = LineParser()
    events = [parser.parse(line) for line in lines]
    assert not [e for e in events if isinstance(e, Rejection)]
    recs = [e for e in events if isinstance(e, Recommendation)]
    assert len(recs) == stats.requests and 120 <= stats.requests <= 290  # ~200 at 80/s x 2.5 s
    times = [e.time for e in events]
    assert times == sorted(times)  # released in simulated-time order
    span = (times[-1] - times[0]).total_seconds()
    assert span > 2.0 * 600 * 0.8 and times[0] >= START  # 2.5 s x 600 = 25 sim-minutes

    # the grader reads what the course would: the simulator's texts classify correctly
    grade = GradeAccumulator(deadline_ms=600)
    for line in lines:
        grade.add_line(line)
    report = grade.report()
    assert report.total_requests == stats.requests
    assert report.successful == stats.outcomes["ok"]
    assert report.failed["http_error"] == stats.outcomes["http_error"] > 0
    assert report.failed["malformed"] == stats.outcomes["malformed"] > 0
    assert report.failed["timeout"] == stats.outcomes["timeout"] > 0
    for e in recs:
        expected = {1: 500, 2: 0, 3: 0}.get(e.user_id % 10, 200)
        assert e.status == expected, e

    # new users sign up before their request; sessions follow their recommendation
    first: dict[int, object] = {}
    for e in events:
        first.setdefault(e.user_id, e)
    assert sum(isinstance(e, Account) for e in first.values()) >= 5
    assert all(isinstance(e, Account | Recommendation) for e in first.values())
    assert stats.sessions_from_list > 0.5 * stats.outcomes["ok"]
    watched = {e.user_id for e in events if isinstance(e, Watch)}
    assert watched <= {e.user_id for e in recs}
    assert assert_one_session_at_a_time(events) > 50  # no user in two sessions at once
    assert sum(isinstance(e, Watch) for e in events) <= stats.watch_minutes


def test_good_lists_drive_what_users_watch(world: World, service: str, tmp_path: Path) -> None:
    config = LiveConfig(service_url=service, rate_per_s=60, duration_s=1.5, clock_ratio=6000, seed=2)
    stats, lines, _ = _run(world, config, tmp_path)
    parser = LineParser()
    served: dict[int, set[str]] = {}
    taken = 0
    for e in map(parser.parse, lines):
        if isinstance(e, Recommendation) and e.status == 200:
            served[e.user_id] = set(e.items)
        elif isinstance(e, Watch) and e.minute == 0 and e.user_id in served:
            taken += e.movie_id in served[e.user_id]
    # Oracle lists are nearly always taken; ignoring them would drop this to ~0. (A log
    # count cannot equal the internal one exactly: an organic pick may happen to be listed.)
    assert taken >= 0.8 * stats.outcomes["ok"] > 0
    assert abs(taken - stats.sessions_from_list) <= 0.1 * stats.outcomes["ok"]


def test_dead_service_is_logged_as_refused(world: World, tmp_path: Path) -> None:
    port = free_ports(1)[0]
    config = LiveConfig(service_url=f"http://127.0.0.1:{port}", rate_per_s=40, duration_s=0.5,
                        new_user_share=0.0)
    stats, lines, _ = _run(world, config, tmp_path)
    recs = [e for e in map(LineParser().parse, lines) if isinstance(e, Recommendation)]
    assert recs and all(e.status == 0 and e.error.startswith("Connection refused") for e in recs)
    assert stats.outcomes == {"refused": len(recs)}


def test_scraper_walks_ids_and_writes_no_lines(world: World, service: str, tmp_path: Path) -> None:
    config = LiveConfig(service_url=service, rate_per_s=20, duration_s=1.0, scraper_rate_per_s=40)
    stats, lines, truth = _run(world, config, tmp_path)
    record = json.loads(truth)
    # ids in order; it waits out each slow id (0.6 s deadline), so 40/s is an upper bound
    assert record["kind"] == "scraper" and record["requests"] == stats.scraper_requests >= 5
    assert (record["first_user"], record["last_user"]) == (0, stats.scraper_requests - 1)
    recs = sum(isinstance(LineParser().parse(line), Recommendation) for line in lines)
    assert recs == stats.requests  # the crawler's requests are not in the log


class _FakePool:
    """A client that answers every request itself (the benchmark plugs in clients so)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.closed = False

    async def get(self, path: str, timeout_s: float) -> Answer:
        self.paths.append(path)
        return Answer(200, b"heat+1995,up+2009")

    def close(self) -> None:
        self.closed = True


def test_a_given_http_client_is_used_and_closed(world: World, tmp_path: Path) -> None:
    port = free_ports(1)[0]  # nothing listens: the default client would log refusals
    config = LiveConfig(service_url=f"http://127.0.0.1:{port}", rate_per_s=40, duration_s=0.5)
    pool = _FakePool()
    stats, lines, _ = _run(world, config, tmp_path, pool=pool)
    assert stats.requests == len(pool.paths) > 0 and stats.outcomes == {"ok": stats.requests}
    assert all(path.startswith("/recommend/") for path in pool.paths) and pool.closed
    recs = [e for e in map(LineParser().parse, lines) if isinstance(e, Recommendation)]
    assert {e.items for e in recs} == {("heat+1995", "up+2009")}
