"""The accept-time shedding worker's pure parts: which requests it may answer itself, the
bytes it answers, and the settings that bound it. (The worker on real sockets:
tests/integration/test_serve_shed.py.)"""

from __future__ import annotations

import http.client
import io

import pytest

from movierec.settings import SettingsError, load
from recommender.serving.settings import ServeSettings
from recommender.serving.shed_worker import parse_shed_request, response_bytes, route_of

PLAIN = b"GET /recommend/42 HTTP/1.1\r\nHost: svc:8082\r\nUser-Agent: Java/17\r\n\r\n"


@pytest.mark.parametrize("head", [
    PLAIN,
    b"GET /recommend/0 HTTP/1.0\r\n\r\n",
    b"GET /recommend/42 HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
])
def test_a_complete_plain_get_is_taken(head: bytes) -> None:
    assert parse_shed_request(head) in {"42", "0"}


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
    assert parse_shed_request(head) is None


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
