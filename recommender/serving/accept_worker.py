"""gunicorn's sync worker that answers /recommend at accept time: ``AcceptWorker``.

A plain ``GET /recommend/<id>`` is nearly all of the service's traffic, and gunicorn's
HTTP parser, the WSGI environ, the response object and the graceful close cost about as
much of a worker's CPU as the answer itself (a quarter of its time holding the GIL in a
py-spy profile under wrk, docs/benchmarks.md). Under overload the same costs decide
whether the service drains its listen backlog in time: shedding in the app still paid
them, and at 256 connections the p99 was 386-832 ms (issue #22). So this worker looks at
a connection the moment it accepts it, before any of that:

1. the queue age from the kernel (``queue_age.read_queue_age_s``, one ``getsockopt``);
   at least ``MOVIEREC_SERVE_REFUSE_MS`` (500 ms by default): the connection is reset at
   once, unread (``refuse``, counted in ``movierec_serve_refused_total``), because any
   answer would reach a client whose 600 ms ran out, and draining the queue is what lets
   the requests behind it still be answered in time;
2. the request's bytes, peeked (``MSG_PEEK``: left in the socket for the ordinary path;
   a young connection whose request has not arrived yet is waited for up to
   ``ARRIVAL_WAIT_S``); anything but one complete ``GET /recommend/<digits>`` request
   without a body (another path, a partial or pipelined request, a header that makes the
   address not the client's: trusted proxies): gunicorn's ordinary path, unchanged;
3. the request consumed and answered by the app's own ``RecommendRoute`` (the limit per
   address, then the handler: personalized, or shed when its queue age is past
   ``MOVIEREC_SERVE_SHED_MS``; the same headers, metrics and served record as the
   ordinary path), written as one ``sendall`` with ``Connection: close``, and the socket
   closed at once: nothing is left unread, so the close is a FIN, not a reset.

With ``MOVIEREC_SERVE_ANSWER_AT_ACCEPT=false`` only requests past the shed limit are
answered here (the ablation of docs/benchmarks.md); with another app it is gunicorn's
sync worker. A shed answer costs a few tens of microseconds of Python, so the backlog
drains at thousands a second per worker: every queued request is answered, personalized
if it is young, shed within the deadline if not (docs/serving.md, "Overload").
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import struct
import time
from email.utils import formatdate
from typing import Any

from gunicorn.workers.sync import SyncWorker

from recommender.serving.queue_age import read_queue_age_s
from recommender.serving.recommend_route import (
    GUNICORN_SOCKET,
    QUEUE_S,
    REASONS,
    TEXT,
    RecommendRoute,
    observed_age,
)
from recommender.serving.state import BadRequest

log = logging.getLogger(__name__)

PEEK_BYTES = 8192
"""Most bytes of a request looked at (gunicorn's request line limit is 4094, its header
field limit 8190: a longer request is not a plain GET, and takes the ordinary path)."""
REQUEST = re.compile(rb"GET /recommend/(\d{1,19}) HTTP/1\.[01]\r\n(?:[^\r\n]+\r\n)*\r\n\Z")
"""One complete GET of /recommend/<digits>: request line, headers, the blank line, and
nothing after it (no body, nothing pipelined)."""
LINGER_RESET = struct.pack("ii", 1, 0)
"""``struct linger`` {l_onoff=1, l_linger=0}: close() resets the connection."""
ARRIVAL_WAIT_S = 0.05
"""Longest wait at accept for a young connection's request to arrive (a client sends it
right after the handshake, so it is usually there already); past it, gunicorn's ordinary
path reads it, blocking as it always does."""
MESSY = re.compile(rb"(?im)^(?:content-length|transfer-encoding|expect)\s*:")
"""Headers that announce a body or a dialogue: such a request takes the ordinary path."""


def parse_plain_request(head: bytes) -> str | None:
    """The raw user id of ``head`` when it is one complete bodiless ``GET
    /recommend/<digits>`` request (see ``REQUEST``), else None. Pure."""
    match = REQUEST.match(head)
    if match is None or MESSY.search(head):
        return None
    return match.group(1).decode("ascii")


def response_bytes(status: int, headers: list[tuple[str, str]], body: bytes,
                   date: str | None = None) -> bytes:
    """An HTTP/1.1 answer that closes the connection; ``date``: its Date header (an
    RFC 9110 IMF-fixdate), none when None. Pure."""
    lines = [f"HTTP/1.1 {REASONS[status]}", "Connection: close", f"Content-Type: {TEXT}",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    if date is not None:
        lines.append(f"Date: {date}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HttpDate:
    """The Date header's value, formatted once a second (RFC 9110 8.6.7: an origin server
    with a clock sends one; gunicorn's ordinary path does too)."""

    def __init__(self) -> None:
        self._second, self._text = -1, ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second, self._text = second, formatdate(second, usegmt=True)
        return self._text


def route_of(app: Any) -> RecommendRoute | None:
    """The ``RecommendRoute`` of the worker's app (``create_app`` keeps it in the app's
    extensions), or None for any other app."""
    extensions = getattr(app, "extensions", None)
    if not isinstance(extensions, dict):
        return None
    route = extensions.get("movierec", {}).get("route")
    return route if isinstance(route, RecommendRoute) else None


class AcceptWorker(SyncWorker):
    """The sync worker answering plain /recommend requests at accept time, and refusing
    or shedding old ones before parsing them (see the module docstring). With another app,
    it is gunicorn's sync worker."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._date = HttpDate()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        route = route_of(self.wsgi)
        if route is not None:
            age = read_queue_age_s(client)
            if age is not None and route.refuse_s and age >= route.refuse_s:
                refuse(client)
                route.metrics.refused.inc()
                return
            old = age is not None and bool(route.handler.shed_s) and age >= route.handler.shed_s
            if (old or route.at_accept) and self.answer_here(route, client, addr, age, wait=not old):
                return
        super().handle(listener, client, addr)

    def answer_here(self, route: RecommendRoute, client: socket.socket, addr: Any,
                    age: float | None, *, wait: bool) -> bool:
        """Answer ``client`` here if its request is a plain /recommend (True, the socket
        closed), else leave everything as it was (False). ``age``: its queue age in
        seconds (None: unknown); ``wait``: whether to wait up to ``ARRIVAL_WAIT_S`` for a
        request that has not arrived yet (not for an old one: its bytes are there)."""
        if route.proxies:
            return False
        head = peek(client, ARRIVAL_WAIT_S if wait else 0.0)
        raw = None if head is None else parse_plain_request(head)
        if raw is None or head is None:
            return False
        try:
            user = route.handler.parse(raw)
        except BadRequest:
            return False
        started = time.perf_counter()
        try:
            client.recv(len(head))  # consume what was peeked: the close is then a FIN
            environ: dict[str, Any] = {GUNICORN_SOCKET: client, "REMOTE_ADDR": _host(addr),
                                       QUEUE_S: observed_age(age, route.metrics)}
            status, headers, text = (route.limited(environ)
                                     or route.recommend_answer(user, environ, started))
            client.sendall(response_bytes(status, headers, text.encode(), self._date(time.time())))
            route.count(status, started, environ[QUEUE_S])
        except OSError:
            pass  # the client left: nothing to answer
        except Exception:  # a bug must not kill the worker; the client sees a closed socket
            log.exception("answering at accept failed")
        finally:
            client.close()
        return True


def peek(client: socket.socket, wait_s: float) -> bytes | None:
    """The bytes waiting in ``client``'s receive queue (left there: ``MSG_PEEK``), after
    waiting up to ``wait_s`` seconds for the first to arrive; None when none came or the
    client is gone. Never blocks longer than ``wait_s``."""
    try:
        return client.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT) or None
    except BlockingIOError:
        if wait_s <= 0:
            return None
    except OSError:
        return None
    poller = select.poll()
    poller.register(client, select.POLLIN)
    try:
        if not poller.poll(wait_s * 1000.0):
            return None
        return client.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT) or None
    except OSError:
        return None


def refuse(client: socket.socket) -> None:
    """Reset the connection without reading or answering: ``SO_LINGER`` on with a zero
    timeout makes ``close`` send a RST (socket(7)), so the client learns at once, and the
    kernel frees the connection without the FIN handshake. Never raises."""
    with contextlib.suppress(OSError):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    client.close()


def _host(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""
