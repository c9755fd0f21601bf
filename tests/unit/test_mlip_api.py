"""The MLiP user/movie API client against a real HTTP server on 127.0.0.1: connection reuse,
Retry-After (both forms, waits measured on the server's clock), bounded retries and
waits, and the answers that are errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import pytest

from movierec.mlip_api import ApiError, MlipApiClient, retry_after_s
from tests.conftest import free_ports


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"[]"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang_up: bool = False  # close the connection without answering


@dataclass
class Api:
    """The server's side: the replies to give in order (the last one repeats), and what
    it saw: one entry per connection accepted, and (path, arrival time) per request."""

    url: str
    replies: list[Reply]
    connections: list[int] = field(default_factory=list)
    requests: list[tuple[str, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def next_reply(self) -> Reply:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def gaps(self) -> list[float]:
        """Seconds between one request's arrival and the next."""
        return [b - a for (_, a), (_, b) in pairwise(self.requests)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API
    api: Api

    def setup(self) -> None:
        super().setup()
        self.api.connections.append(1)

    def do_GET(self) -> None:  # the http.server API
        self.api.requests.append((self.path, time.monotonic()))
        reply = self.api.next_reply()
        if reply.hang_up:
            self.close_connection = True
            return
        if reply.delay_s:
            self.api.stop.wait(reply.delay_s)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins the handler threads: nothing left behind

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and hung up is expected


@pytest.fixture
def serve() -> Iterator[Callable[..., Api]]:
    """``serve(*replies)`` starts a server giving those replies; stopped after the test."""
    servers: list[tuple[_Server, threading.Thread, Api]] = []

    def start(*replies: Reply) -> Api:
        api = Api("", list(replies) or [Reply()])
        server = _Server(("127.0.0.1", 0), type("Handler", (_Handler,), {"api": api}))
        api.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append((server, thread, api))
        return api

    yield start
    for server, thread, api in servers:
        api.stop.set()
        server.shutdown()
        thread.join()
        server.server_close()


def _users(*ids: int) -> bytes:
    return json.dumps([{"user_id": str(i), "age": "31", "gender": "F"} for i in ids]).encode()


# -- answers --------------------------------------------------------------------------------


def test_answers_are_parsed_json_over_one_reused_connection(serve) -> None:
    api = serve(Reply(body=_users(1, 2, 3)), Reply(body=b'{"id": "heat+1995", "runtime": "170"}'))
    with MlipApiClient(api.url) as client:
        assert client.get("/user/1,2,3") == json.loads(_users(1, 2, 3))
        for _ in range(4):
            assert client.get("/movie/heat+1995") == {"id": "heat+1995", "runtime": "170"}
    assert [path for path, _ in api.requests] == ["/user/1,2,3"] + ["/movie/heat+1995"] * 4
    assert len(api.connections) == 1  # urllib opened one a call: 5


def test_unknown_ids_answer_an_empty_list(serve) -> None:
    api = serve(Reply(404, b'{"message": "not found"}'))
    with MlipApiClient(api.url) as client:
        assert client.get("/user/999999999") == []
    assert len(api.requests) == 1


def test_a_base_url_path_is_kept(serve) -> None:
    api = serve(Reply(body=b"[]"))
    with MlipApiClient(api.url + "/api/") as client:
        client.get("/movie/a+1999,b+2001")
    assert api.requests[0][0] == "/api/movie/a+1999,b+2001"


def test_redirects_are_followed_as_urllib_did(serve) -> None:
    api = serve(Reply(302, b"", {"Location": "/user/7"}), Reply(body=_users(7)))
    with MlipApiClient(api.url) as client:
        assert client.get("/user/007") == json.loads(_users(7))


@pytest.mark.parametrize("status", [500, 400, 403, 502])
def test_other_statuses_are_api_errors_without_retry(serve, status: int) -> None:
    api = serve(Reply(status, b"oops"))
    with MlipApiClient(api.url) as client, pytest.raises(ApiError, match=f"answered {status}"):
        client.get("/user/1")
    assert len(api.requests) == 1


@pytest.mark.parametrize("body", [b"<html>busy</html>", b"", b'[{"user_id": 1', b"\x80\x81"])
def test_a_body_that_is_not_json_is_an_api_error(serve, body: bytes) -> None:
    api = serve(Reply(body=body))
    with MlipApiClient(api.url) as client, pytest.raises(ApiError, match="failed"):
        client.get("/user/1")


def test_a_slow_answer_is_an_api_error_after_the_timeout(serve) -> None:
    api = serve(Reply(delay_s=2.0, body=b"[]"))
    began = time.monotonic()
    with MlipApiClient(api.url, timeout_s=0.2) as client, pytest.raises(ApiError, match="Timeout"):
        client.get("/user/1")
    assert time.monotonic() - began < 1.0


def test_no_server_is_an_api_error() -> None:
    (port,) = free_ports(1)
    with MlipApiClient(f"http://127.0.0.1:{port}") as client, pytest.raises(ApiError, match="failed"):
        client.get("/user/1")


# -- stale keep-alive connections -----------------------------------------------------------


def test_a_reused_connection_closed_by_the_server_is_retried_once(serve) -> None:
    # The server answers, keeps the connection, then hangs up on the next request there:
    # the idle connection looked alive, so only a retry on a fresh one saves the call.
    api = serve(Reply(body=_users(1)), Reply(hang_up=True), Reply(body=_users(2)))
    with MlipApiClient(api.url) as client:
        assert client.get("/user/1") == json.loads(_users(1))
        assert client.get("/user/2") == json.loads(_users(2))
    assert len(api.requests) == 3 and len(api.connections) == 2


def test_a_fresh_connection_that_fails_is_not_retried(serve) -> None:
    api = serve(Reply(hang_up=True))
    with MlipApiClient(api.url) as client, pytest.raises(ApiError, match="RemoteProtocolError"):
        client.get("/user/1")
    assert len(api.requests) == 1 and len(api.connections) == 1


# -- Retry-After ----------------------------------------------------------------------------


def test_retry_after_in_seconds_is_waited_out(serve) -> None:
    api = serve(Reply(429, b"slow down", {"Retry-After": "1"}), Reply(body=_users(1)))
    with MlipApiClient(api.url) as client:
        assert client.get("/user/1") == json.loads(_users(1))
    (gap,) = api.gaps()
    assert 0.98 <= gap < 1.8  # the server's clock: the retry came a second later, not at once
    assert len(api.connections) == 1  # and on the same connection


def test_retry_after_as_an_http_date_is_waited_out(serve) -> None:
    when = int(time.time()) + 2  # HTTP-dates have whole seconds: a wait in (1, 2] s
    api = serve(Reply(503, b"", {"Retry-After": formatdate(when, usegmt=True)}), Reply(body=b"[]"))
    with MlipApiClient(api.url) as client:
        assert client.get("/movie/x+2000") == []
    (gap,) = api.gaps()
    assert 0.98 <= gap < 2.8
    assert time.time() >= when - 0.02


def test_retries_are_bounded(serve) -> None:
    api = serve(Reply(429, b"", {"Retry-After": "0"}))
    with MlipApiClient(api.url, max_retries=2) as client, pytest.raises(ApiError) as caught:
        client.get("/user/1")
    assert len(api.requests) == 3  # the first try and two retries
    assert "429" in str(caught.value) and caught.value.retry_after_s == 0.0


def test_a_wait_longer_than_allowed_is_not_slept(serve) -> None:
    api = serve(Reply(429, b"", {"Retry-After": "3600"}))
    began = time.monotonic()
    with MlipApiClient(api.url, max_wait_s=5) as client, pytest.raises(ApiError) as caught:
        client.get("/user/1")
    assert time.monotonic() - began < 1.0 and len(api.requests) == 1
    assert caught.value.retry_after_s == 3600.0  # the caller knows how long was asked


def test_the_waits_of_one_call_add_up_to_the_maximum_at_most(serve) -> None:
    api = serve(Reply(503, b"", {"Retry-After": "1"}))
    began = time.monotonic()
    with MlipApiClient(api.url, max_wait_s=1.5, max_retries=5) as client, pytest.raises(ApiError):
        client.get("/user/1")
    took = time.monotonic() - began
    assert len(api.requests) == 2  # one wait of 1 s: a second would pass the 1.5 s allowed
    assert 0.98 <= took < 2.5  # (without the cap: five waits, 5 s)


@pytest.mark.parametrize("value", [None, "soon", "1.5", "-1"])
def test_429_without_a_usable_retry_after_fails_at_once(serve, value: str | None) -> None:
    api = serve(Reply(429, b"", {} if value is None else {"Retry-After": value}))
    with MlipApiClient(api.url) as client, pytest.raises(ApiError, match="no usable Retry-After"):
        client.get("/user/1")
    assert len(api.requests) == 1


NOW = datetime(2015, 10, 21, 7, 27, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0), (" 5 ", 5.0), ("0", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),  # RFC 9110's three date forms
    ("Wednesday, 21-Oct-15 07:28:00 GMT", 60.0),
    ("Wed Oct 21 07:28:00 2015", 60.0),
    ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past: at once
    (None, None), ("", None), ("1.5", None), ("-3", None), ("+3", None), ("٣", None),
    ("next tuesday", None),
])
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert retry_after_s(value, now=NOW) == seconds


def test_settings_are_checked() -> None:
    for bad in ({"timeout_s": 0}, {"max_retries": -1}, {"max_wait_s": -1}, {"max_connections": 0}):
        with pytest.raises(ValueError):
            MlipApiClient("http://127.0.0.1:1", **bad)
