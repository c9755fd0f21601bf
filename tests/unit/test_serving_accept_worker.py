"""The accept-time worker's parts: which requests it may answer itself, the bytes it
answers (with their Date), waiting for a request to arrive, and the settings that bound it.
(The worker on real sockets: tests/integration/test_serve_shed.py.)"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time

import pytest

from movierec.settings import SettingsError, load
from recommender.serving.accept_worker import (
    HttpDate,
    parse_plain_request,
    peek,
    response_bytes,
    route_of,
)
from recommender.serving.settings import ServeSettings

PLAIN = b"GET /recommend/42 HTTP/1.1\r\nHost: svc:8082\r\nUser-Agent: Java/17\r\n\r\n"


@pytest.mark.parametrize("head", [
    PLAIN,
    b"GET /recommend/0 HTTP/1.0\r\n\r\n",
    b"GET /recommend/42 HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
])
def test_a_complete_plain_get_is_taken(head: bytes) -> None:
    assert parse_plain_request(head) in {"42", "0"}


@pytest.mark.parametrize("head", [
    PLAIN[:-2],                                          # headers not finished
    PLAIN + b"GET /recommend/43 HTTP/1.1\r\n\r\n",       # a pipelined second request
    b"POST /recommend/42 HTTP/1.1\r\n\r\n",
    b"GET /recommend/42/ HTTP/1.1\r\n\r\n",
    b"GET /recommend/abc HTTP/1.1\r\n\r\n",
    b"GET /recommend/%34%32 HTTP/1.1\r\n\r\n",           # percent-encoded: gunicorn decodes
    b"GET /recommend/42?x=1 HTTP/1.1\r\n\r\n",
    b"GET /health HTTP/1.1\r\n\r\n",
    b"GET /recommend/42 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /recommend/42 HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    b"GET /recommend/42 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /recommend/42 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"GET /recommend/12345678901234567890 HTTP/1.1\r\n\r\n",  # 20 digits: the app's 400
    b"",
])
def test_anything_else_takes_the_ordinary_path(head: bytes) -> None:
    assert parse_plain_request(head) is None


def test_the_answer_is_http_a_client_reads_and_it_closes_the_connection() -> None:
    raw = response_bytes(200, [("X-Fallback", "shed"), ("X-Arm", "default")], b"a+2000,b+2001")

    class FakeSocket:
        def makefile(self, *args, **kwargs):
            return io.BytesIO(raw)

    response = http.client.HTTPResponse(FakeSocket())  # type: ignore[arg-type]
    response.begin()
    assert response.status == 200 and response.read() == b"a+2000,b+2001"
    assert response.getheader("Connection") == "close" and response.will_close
    assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert response.getheader("X-Fallback") == "shed"


def test_only_the_services_app_has_a_route() -> None:
    assert route_of(object()) is None
    assert route_of(type("App", (), {"extensions": {"movierec": {"route": "not one"}}})()) is None


def test_the_refuse_limit_must_be_above_the_shed_limit() -> None:
    assert load(ServeSettings, {}).serve_refuse_ms > load(ServeSettings, {}).serve_shed_ms
    with pytest.raises(SettingsError, match="MOVIEREC_SERVE_REFUSE_MS"):
        load(ServeSettings, {}, serve_refuse_ms=50, serve_shed_ms=50)
    assert load(ServeSettings, {}, serve_refuse_ms=0).serve_refuse_ms == 0  # disabled


def test_the_answer_carries_a_date_formatted_once_a_second() -> None:
    date = HttpDate()
    assert date(784111777.2) == "Sun, 06 Nov 1994 08:49:37 GMT"  # RFC 9110's example
    assert date(784111777.9) is date(784111777.2)  # the same second: the same string
    assert date(784111778.0) == "Sun, 06 Nov 1994 08:49:38 GMT"
    raw = response_bytes(200, [], b"x", date(784111777.0))
    assert b"\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nx" in raw


def test_peek_leaves_the_bytes_waits_for_late_ones_and_gives_up_in_time() -> None:
    server, client = socket.socketpair()
    try:
        started = time.perf_counter()
        assert peek(server, 0.0) is None  # nothing yet, no wait
        assert peek(server, 0.05) is None  # nothing within the wait
        assert 0.04 < time.perf_counter() - started < 1.0
        threading.Timer(0.02, client.sendall, args=(PLAIN,)).start()
        assert peek(server, 2.0) == PLAIN  # arrived during the wait
        assert peek(server, 0.0) == PLAIN  # still there: peeked, not read
        assert server.recv(1024) == PLAIN
        client.close()
        assert peek(server, 0.05) is None  # the client is gone
    finally:
        server.close()
