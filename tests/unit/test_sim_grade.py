"""The grader probe: right numbers on a hand-made log, its parameters and filters, the JSON
and the table, the Kafka drain loop (with a fake consumer) and a live probe of a real
HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from movierec.kafka_read import drain
from movierec.wire import Recommendation
from simulator.grade import (
    CATEGORIES,
    GradeAccumulator,
    _HourLists,
    classify,
    downtime_intervals,
    nearest_rank,
)
from simulator.grade_probe import MAX_BODY, probe_service
from simulator.grade_report import Downtime
from tests.conftest import free_ports

S = "team15.example:8082"
A = "the+matrix+1999, inception+2010, up+2009"  # the list served to everyone (not personalized)

# 22 recommendation requests from 18:00:00 to 18:05:30, 4 other lines. Per line: outcome at
# a 600 ms deadline, response time. Lists B1..B7 differ from each other and from A.
HAND_LOG: list[str | bytes] = [
    # minute 18:00: 8 requests, 6 successes -> up (75 %)
    f"2024-02-27T18:00:00,1,recommendation request {S}, status 200, result: {A}, 100 ms",  # ok A
    f"2024-02-27T18:00:05.5,2,recommendation request {S}, status 200, result: {A}, 120 ms",  # ok A
    f"2024-02-27T18:00:10,3,recommendation request {S}, status 200, "
    "result: alien+1979, heat+1995, 90 ms",  # ok B1
    f"2024-02-27T18:00:15,4,recommendation request {S}, status 200, "
    "result: kill+bill+vol.+1+2003,spider-man+3+2007, 80 ms",  # ok B2 (',' separator)
    # ok A: exactly at the deadline is in time
    f"2024-02-27T18:00:20,5,recommendation request {S}, status 200, result: {A}, 600 ms",
    f"2024-02-27T18:00:30,6,recommendation request {S}, status 200, "
    "result: monsters_+inc.+2001, 650 ms",  # late (B3)
    # timeout: free text with ':', ',' and '/'
    f"2024-02-27T18:00:40,7,recommendation request {S}, status 0, result: java.net."
    "SocketTimeoutException: Read timed out after 600 ms, team15.example/10.0.0.1:8082, 601 ms",
    f"2024-02-27T18:00:50,8,recommendation request {S}, status 200, "
    "result: 1900+1976, 30 ms",  # ok B4
    "2024-02-27T18:00:51,8,GET /data/m/1900+1976/0.mpg",  # other line: watch
    "2024-02-27T18:00:52,8,GET /rate/1900+1976=4",  # other line: rate
    b"\xff\xfe\x00garbage,,\n",  # other line: garbage bytes
    # minute 18:01: 6 requests, 2 successes -> down (33 %)
    f"2024-02-27T18:01:00,9,recommendation request {S}, status 200, "
    "result: <html>, 15 ms",  # malformed: a 200 whose result is not ids
    f"2024-02-27T18:01:10,10,recommendation request {S}, status 0, "
    "result: malformed answer: expected comma-separated ids, 20 ms",  # malformed
    f"2024-02-27T18:01:20,11,recommendation request {S}, status 200, result: {A}, 110 ms",  # ok A
    f"2024-02-27T18:01:30,12,recommendation request {S}, status 200, "
    "result: i_+robot+2004, 700 ms",  # late (B5)
    f"2024-02-27T18:01:40,13,recommendation request {S}, status 500, "
    "result: Internal Server Error, 5 ms",  # http_error
    f"2024-02-27T18:01:50,14,recommendation request {S}, status 200, "
    "result: heat+1995, alien+1979, 200 ms",  # ok B6 (B1 reordered: another list)
    # minute 18:02: 3 requests, all refused -> down
    f"2024-02-27T18:02:00,15,recommendation request {S}, status 0, "
    "result: Connection refused: team15.example/10.0.0.1:8082, 1 ms",
    f"2024-02-27T18:02:20,16,recommendation request {S}, status 0, "
    "result: Connection refused: team15.example/10.0.0.1:8082, 2 ms",
    f"2024-02-27T18:02:40.123456789,17,recommendation request {S}, status 0, "
    "result: java.net.ConnectException: Connection refused, 1 ms",
    # minute 18:03: no request; a truncated recommendation line is just another line
    f"2024-02-27T18:03:10,23,recommendation request {S}, status 200",
    # minute 18:04: 2 requests, 1 success -> 50 % is not below the threshold: up
    f"2024-02-27T18:04,18,recommendation request {S}, status 200, result: {A}, 50 ms",  # ok A
    f"2024-02-27T18:04:30,19,recommendation request {S}, status 0, result: Read timed out, 600 ms",
    # minute 18:05: 3 requests, 1 success -> down; written out of order
    f"2024-02-27T18:05:30,22,recommendation request {S}, status 200, "
    "result: up+2009, 100 ms",  # ok B7
    f"2024-02-27T18:05:00,20,recommendation request {S}, status 0, "
    "result: something odd happened, 3 ms",  # other
    f"2024-02-27T18:05:10,21,recommendation request {S}, status 0, "
    "result: Timeout waiting for connection, 600 ms",  # timeout
]

OTHER_SERVER: list[str | bytes] = [
    "2024-02-27T18:03:00,30,recommendation request team99.example:8082, status 200, "
    "result: heat+1995, 40 ms",
    "2024-02-27T18:03:01,31,recommendation request team99.example:8082, status 0, "
    "result: Connection refused, 1 ms",
]


def grade(lines: list[str | bytes], **kwargs: object) -> GradeAccumulator:
    acc = GradeAccumulator(**kwargs)  # type: ignore[arg-type]
    for line in lines:
        acc.add_line(line)
    return acc


def at(minute: int, second: float = 0) -> datetime:
    return datetime(2024, 2, 27, 18, minute, int(second), int(second % 1 * 1_000_000))


def test_hand_made_log_gives_every_number() -> None:
    report = grade(HAND_LOG).report()
    assert report.total_requests == 22
    # successes: requests 1 2 3 4 5 (exactly 600 ms) 8 11 14 18 22
    assert report.successful == 10
    assert report.failed == {
        "late": 2,  # 6 (650 ms), 12 (700 ms)
        "malformed": 2,  # 9 (a 200 with "<html>"), 10 (status 0 "malformed answer: ...")
        "timeout": 3,  # 7 ("timed out"), 19 ("timed out"), 21 ("Timeout")
        "refused": 3,  # 15 16 17
        "http_error": 1,  # 13 (status 500)
        "other": 1,  # 20
    }
    assert (report.malformed, report.late) == (2, 2)
    assert report.success_share == 10 / 22
    assert report.answered_within_deadline == 12  # the 10 successes + the 2 malformed answers
    assert report.within_deadline_share == 12 / 22
    # one hour; list A served 5 times (1 2 5 11 18) is the common one; B1 B2 B4 B6 B7 are not
    assert report.personalized == 5
    assert report.personalized_share == 5 / 22
    assert report.distinct_lists == 6 and not report.distinct_lists_capped
    # sorted: 1 1 2 3 5 15 20 30 50 80 | 90 100 100 110 120 200 600 600 600 601 | 650 700
    # nearest rank: p50 = 11th, p95 = ceil(20.9) = 21st, p99 = ceil(21.78) = 22nd
    assert report.latency_ms == {"p50": 90, "p95": 650, "p99": 700, "max": 700}
    assert report.latency_samples == 22
    # minutes 18:00 up, 18:01 down, 18:02 down, 18:04 up (50 %), 18:05 down; 18:03 unobserved
    assert (report.observed_minutes, report.down_minutes) == (5, 3)
    assert report.availability == 2 / 5
    assert report.request_availability == 10 / 22
    assert report.downtime == [Downtime(at(1), at(3), 2), Downtime(at(5), at(6), 1)]
    assert (report.window_start, report.window_end) == (at(0), at(5, 30))
    assert report.window_hours == 5.5 / 60
    assert report.successes_last_24h == 10
    assert report.successes_per_24h == pytest.approx(10 / (5.5 / 60) * 24)  # 2,618
    assert report.other_lines == 4  # watch, rate, garbage, truncated recommendation
    assert report.filtered_out == 0
    assert report.checks == {
        "successes_24h": True,  # 2,618 per day extrapolated
        "personalized": True,  # 22.7 %
        "availability": False,  # 40 %
        "availability_bonus": False,
    }


def test_deadline_800_turns_late_answers_into_successes() -> None:
    report = grade(HAND_LOG, deadline_ms=800).report()
    assert report.successful == 12  # + 6 (650 ms) and 12 (700 ms)
    assert report.failed["late"] == 0
    assert report.failed["timeout"] == 3  # a logged timeout stays one
    assert report.answered_within_deadline == 14
    assert report.personalized == 7  # B3 and B5 join; A still served 5 times
    assert report.distinct_lists == 8
    # 18:01 now has 3 of 6: not below 50 %, so only 18:02 and 18:05 are down
    assert (report.observed_minutes, report.down_minutes) == (5, 2)
    assert report.downtime == [Downtime(at(2), at(3), 1), Downtime(at(5), at(6), 1)]


def test_down_threshold_is_a_parameter() -> None:
    report = grade(HAND_LOG, down_threshold=0.8).report()
    assert report.down_minutes == 5  # 18:00 (75 %) and 18:04 (50 %) are now down too
    assert report.downtime == [Downtime(at(0), at(3), 3), Downtime(at(4), at(6), 2)]


def test_downtime_intervals_merge_consecutive_minutes_only() -> None:
    down = [at(7), at(1), at(2), at(3), at(5), at(8)]
    assert downtime_intervals(down) == [
        Downtime(at(1), at(4), 3),
        Downtime(at(5), at(6), 1),
        Downtime(at(7), at(9), 2),
    ]
    assert downtime_intervals([]) == []


def test_server_filter_keeps_one_team() -> None:
    everything = grade(HAND_LOG + OTHER_SERVER).report()
    assert everything.total_requests == 24 and everything.observed_minutes == 6

    ours = grade(HAND_LOG + OTHER_SERVER, server=S).report()
    assert ours.filtered_out == 2
    alone = grade(HAND_LOG).report()
    assert ours.to_dict() == {**alone.to_dict(), "filtered_out": 2, "server": S}


def test_time_window_filter_is_start_inclusive_end_exclusive() -> None:
    report = grade(HAND_LOG, start=at(1), end=at(5)).report()
    assert report.total_requests == 11  # requests 9..19
    assert report.filtered_out == 11  # 1..8 and 20..22
    assert report.successful == 3  # 11 14 18
    assert (report.window_start, report.window_end) == (at(1), at(4, 30))
    assert (report.observed_minutes, report.down_minutes) == (3, 2)
    assert report.downtime == [Downtime(at(1), at(3), 2)]


def test_personalized_share_counts_per_hour_and_needs_a_repeated_list() -> None:
    def ok(hour: int, minute: int, items: tuple[str, ...]) -> Recommendation:
        return Recommendation(datetime(2024, 2, 27, hour, minute), 1, S, 200, items, "", 10)

    a, b, c = ("up+2009",), ("heat+1995",), ("alien+1979",)
    acc = GradeAccumulator()
    for event in [ok(18, 58, a), ok(18, 59, a), ok(19, 0, a), ok(19, 1, b)]:
        acc.add(event)
    # 18:xx: a twice is everyone's list -> 0; 19:xx: no list served twice -> both count
    assert acc.report().personalized == 2
    acc.add(ok(19, 2, a))  # now a is 19:xx's common list
    assert acc.report().personalized == 1
    acc.add(ok(19, 3, c))
    assert acc.report().personalized == 2  # b and c


def test_old_hours_shrink_and_late_events_count_against_their_top_list() -> None:
    lists = _HourLists(open_hours=2)
    h18, h19, h20 = (datetime(2024, 2, 27, h) for h in (18, 19, 20))
    for items in [("a+2000",), ("a+2000",), ("b+2000",)]:
        lists.add(h18, items)
    lists.add(h19, ("a+2000",))
    lists.add(h20, ("c+2000",))  # 18:xx is closed now
    assert h18 in lists._closed and h18 not in lists._open
    lists.add(h18, ("a+2000",))  # late, the top list: not personalized
    lists.add(h18, ("d+2000",))  # late, another list: personalized
    assert lists.personalized() == 2 + 1 + 1  # 18:xx b and d, 19:xx and 20:xx one each
    assert lists.distinct == 4


def test_distinct_lists_are_capped() -> None:
    lists = _HourLists(distinct_cap=2)
    for name in ("a+2000", "b+2000", "a+2000"):
        lists.add(datetime(2024, 2, 27, 18), (name,))
    assert (lists.distinct, lists.distinct_capped) == (2, False)
    lists.add(datetime(2024, 2, 27, 18), ("c+2000",))
    assert (lists.distinct, lists.distinct_capped) == (2, True)


def test_latency_reservoir_is_bounded_and_max_exact() -> None:
    acc = GradeAccumulator(reservoir_size=50)
    for i in range(1000):
        acc.add(Recommendation(at(0, i % 60), i, S, 200, ("up+2009",), "", i))
    report = acc.report()
    assert report.latency_samples == 50
    assert report.latency_ms["max"] == 999
    assert 300 <= report.latency_ms["p50"] <= 700  # type: ignore[operator]


def test_classify_rules() -> None:
    def event(
        status: int, error: str = "", items: tuple[str, ...] = (), ms: int = 10
    ) -> Recommendation:
        return Recommendation(at(0), 1, S, status, items, error, ms)

    assert classify(event(200, items=("up+2009",) * 21), 600) == "malformed"  # over 20 ids
    assert classify(event(200, items=("up+2009",) * 20), 600) == "success"
    assert classify(event(200, items=("up+2009",), ms=601), 600) == "late"
    assert classify(event(0, " Malformed answer: x"), 600) == "malformed"
    assert classify(event(0, "java.net.SocketTimeoutException: connect TIMEOUT"), 600) == "timeout"
    assert classify(event(0, "Connection refused: h/1.2.3.4:8082"), 600) == "refused"
    assert classify(event(503, "Service Unavailable"), 600) == "http_error"
    assert classify(event(0, "No route to host"), 600) == "other"


def test_nearest_rank() -> None:
    assert nearest_rank([], 50) is None
    assert nearest_rank([7], 99) == 7
    assert [nearest_rank(list(range(1, 101)), p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]


def test_empty_report_has_no_shares() -> None:
    report = GradeAccumulator().report()
    assert report.total_requests == 0
    assert report.success_share is None and report.availability is None
    assert report.latency_ms == {"p50": None, "p95": None, "p99": None, "max": None}
    assert set(report.checks.values()) == {None}
    json.dumps(report.to_dict())
    assert "requests" in report.format_table()


def test_json_round_trip_and_table() -> None:
    report = grade(HAND_LOG).report(notes=["source: hand-made log"])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["total_requests"] == 22 and data["successful"] == 10
    assert data["malformed"] == 2 and data["late"] == 2
    assert set(data["failed"]) == set(CATEGORIES)
    assert data["window_start"] == "2024-02-27T18:00:00"
    assert data["downtime"] == [
        {"start": "2024-02-27T18:01:00", "end": "2024-02-27T18:03:00", "minutes": 2},
        {"start": "2024-02-27T18:05:00", "end": "2024-02-27T18:06:00", "minutes": 1},
    ]
    assert data["latency_ms"] == {"p50": 90, "p95": 650, "p99": 700, "max": 700}
    assert data["checks"]["availability"] is False
    for key in ("personalized_share", "availability", "down_minutes", "successes_per_24h",
                "successes_last_24h", "within_deadline_share", "notes"):
        assert key in data

    table = report.format_table()
    for figure in ("22", "45.5 %", "22.7 %", "40.0 %", "p95 650", "2,618",
                   "2024-02-27T18:01:00 .. 2024-02-27T18:03:00  2 min", "source: hand-made log"):
        assert figure in table, figure


# -- the Kafka drain loop, with a fake consumer ------------------------------------------


class FakeConsumer:
    """Partitions 0 and 1; poll hands out one record at a time."""

    def __init__(self, values: dict[int, list[bytes]], stall_at: int | None = None) -> None:
        self.values = values
        self.pos = {p: 0 for p in values}
        self.stall_at = stall_at

    def poll(self, timeout_ms: int = 0) -> dict[int, list[SimpleNamespace]]:
        for p, values in self.values.items():
            if self.pos[p] < len(values) and self.pos[p] != self.stall_at:
                record = SimpleNamespace(offset=self.pos[p], value=values[self.pos[p]], timestamp=-1)
                self.pos[p] += 1
                return {p: [record]}
        return {}

    def position(self, partition: int, timeout_ms: int | None = None) -> int:
        return self.pos[partition]


def test_drain_reads_to_the_end_offsets_and_skips_newer_records() -> None:
    consumer = FakeConsumer({0: [b"a", b"b", b"new"], 1: [b"c"]})
    fed: list[bytes] = []
    notes = drain(consumer, {0: 2, 1: 1}, lambda value, _ms: fed.append(value), timeout_s=5, idle_s=5)
    assert notes == [] and sorted(fed) == [b"a", b"b", b"c"]


def test_drain_gives_up_when_idle_and_says_so() -> None:
    consumer = FakeConsumer({0: [b"a", b"b"], 1: []}, stall_at=1)
    fed: list[bytes] = []
    notes = drain(consumer, {0: 2, 1: 0}, lambda value, _ms: fed.append(value), timeout_s=5,
                  idle_s=0.05)
    assert fed == [b"a"]
    assert len(notes) == 1 and "incomplete" in notes[0] and "0" in notes[0]


# -- the live probe against a real HTTP server ---------------------------------------------

GOOD, CONST, BAD, LATE, HANG, ERROR = 1, 10, 20, 30, 40, 50


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real service
    stop: threading.Event

    def do_GET(self) -> None:  # the http.server API
        uid = int(self.path.rsplit("/", 1)[1])
        kind = uid // 10 * 10 if uid >= 10 else GOOD
        if kind == ERROR:
            self.send_error(500)
            return
        if kind == LATE:
            self.stop.wait(0.3)
        elif kind == HANG:
            self.stop.wait(2.0)
        body = {
            GOOD: f"film+{uid}+2001,up+2009",
            CONST: "the+matrix+1999,up+2009",
            BAD: "<html>oops</html>",
        }.get(kind, "heat+1995")
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins the handler threads: nothing left behind

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the probe hangs up on the slow handler; that is expected


@pytest.fixture
def service() -> Iterator[str]:
    stop = threading.Event()
    handler = type("Handler", (_Handler,), {"stop": stop})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        thread.join()
        server.server_close()


def test_probe_classifies_each_kind_of_answer(service: str) -> None:
    uids = [1, 2, 3, 10, 11, BAD, LATE, HANG, ERROR]
    report = probe_service(service, 18, user_ids=uids, deadline_ms=200, concurrency=4,
                           timeout_margin_s=0.5, time_budget_s=30)
    assert report.total_requests == 18
    assert report.successful == 10  # 3 good users and 2 constant ones, twice each
    assert report.failed == {
        "late": 2,  # answered after 300 ms, before the 700 ms socket timeout
        "malformed": 2,
        "timeout": 2,  # no answer within 700 ms
        "refused": 0,
        "http_error": 2,
        "other": 0,
    }
    assert report.distinct_lists == 4  # film+1, film+2, film+3 and the constant list
    if report.window_start and report.window_end and (
        report.window_start.hour == report.window_end.hour
    ):
        assert report.personalized == 6  # the constant list (4 times) is the common one
    assert report.latency_ms["max"] is not None and report.latency_ms["max"] >= 300
    assert report.notes == [f"source: live probe of {service}, 18 of 18 requests sent"]


def test_probe_counts_refused_connections() -> None:
    (port,) = free_ports(1)
    report = probe_service(f"http://127.0.0.1:{port}", 3, user_ids=[1], deadline_ms=200)
    assert report.total_requests == 3
    assert report.failed["refused"] == 3 and report.successful == 0
    assert report.availability == 0.0


def test_probe_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        probe_service("ftp://x", 1, user_ids=[1])
    with pytest.raises(ValueError):
        probe_service("http://127.0.0.1:1", 1, user_ids=[])


def test_probe_stops_at_its_time_budget(service: str) -> None:
    report = probe_service(service, 1000, user_ids=[HANG], deadline_ms=100, concurrency=2,
                           timeout_margin_s=0.1, time_budget_s=0.3)
    assert 2 <= report.total_requests <= 10  # ~0.2 s per request, 2 at a time
    assert report.failed["timeout"] == report.total_requests
    assert report.notes[-1] == "incomplete: time budget of 0.3 s reached"


# -- the probe's HTTP client: keep-alive, stale connections, bounded bodies ----------------


class _ConnHandler(BaseHTTPRequestHandler):
    """One instance a connection. ``mode``: ``good`` answers every request; ``once``
    answers the first request of a connection and hangs up on the next one there (a
    keep-alive connection gone stale under the client); ``never`` hangs up at once;
    ``long`` answers a body over ``MAX_BODY``; ``trickle`` sends a body a byte at a time."""

    protocol_version = "HTTP/1.1"
    mode: str
    connections: list[int]
    stop: threading.Event

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)
        self.served = 0

    def do_GET(self) -> None:  # the http.server API
        if self.mode == "never" or (self.mode == "once" and self.served):
            self.close_connection = True
            return
        self.served += 1
        body = b"x" * (MAX_BODY + 100) if self.mode == "long" else b"heat+1995,up+2009"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "trickle":
            for byte in body:
                if self.stop.wait(0.1):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        else:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def conn_service() -> Iterator[Callable[[str], tuple[str, list[int]]]]:
    """``conn_service(mode)``: the URL of a server in that mode and its connection list."""
    started: list[tuple[_Server, threading.Thread, threading.Event]] = []

    def start(mode: str) -> tuple[str, list[int]]:
        stop, connections = threading.Event(), []
        handler = type("Handler", (_ConnHandler,),
                       {"mode": mode, "connections": connections, "stop": stop})
        server = _Server(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread, stop))
        return f"http://127.0.0.1:{server.server_address[1]}", connections

    yield start
    for server, thread, stop in started:
        stop.set()
        server.shutdown()
        thread.join()
        server.server_close()


def test_probe_keeps_one_connection_a_thread(conn_service) -> None:
    url, connections = conn_service("good")
    report = probe_service(url, 12, user_ids=[1, 2, 3], concurrency=2, time_budget_s=30)
    assert report.successful == 12
    assert len(connections) == 2  # one connection per worker thread, kept alive


def test_probe_retries_a_stale_keep_alive_connection_once(conn_service) -> None:
    url, connections = conn_service("once")
    report = probe_service(url, 4, user_ids=[1], concurrency=1, time_budget_s=30)
    assert report.successful == 4 and report.total_requests == 4  # no failure logged
    assert len(connections) == 4  # requests 2-4 each found their connection stale


def test_probe_does_not_retry_a_fresh_connection(conn_service) -> None:
    url, connections = conn_service("never")
    report = probe_service(url, 2, user_ids=[1], concurrency=1, time_budget_s=30)
    assert report.failed["other"] == 2 and report.successful == 0
    assert len(connections) == 2  # one try each: a fresh connection that fails is an answer


def test_probe_reads_a_long_body_only_so_far(conn_service) -> None:
    url, connections = conn_service("long")
    report = probe_service(url, 2, user_ids=[1], concurrency=1, time_budget_s=30)
    assert report.failed["malformed"] == 2
    assert len(connections) == 2  # a body cut short leaves its connection unusable


def test_probe_bounds_a_trickled_body_by_the_request_time(conn_service) -> None:
    url, _ = conn_service("trickle")  # 17 bytes, 0.1 s apart: each read is quick, the sum is not
    began = time.monotonic()
    report = probe_service(url, 1, user_ids=[1], deadline_ms=200, timeout_margin_s=0.2,
                           time_budget_s=30)
    assert report.failed["timeout"] == 1
    assert time.monotonic() - began < 1.0  # 0.4 s per request, one more 0.1 s read at most
