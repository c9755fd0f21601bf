"""gunicorn's sync worker with load shedding at accept time: ``ShedWorker``.

Under overload the requests wait in the kernel's listen backlog, and the service keeps
its 600 ms deadline only if it drains that queue faster than clients fill it. Shedding in
the app (``handler``: past ``MOVIEREC_SERVE_SHED_MS`` of queue age, the popular list
without Redis or the model) still pays for gunicorn's HTTP parser, the WSGI environ, the
response object and the graceful close, about as much as a whole bare request: at 256
connections the p99 was 386-832 ms (issue #22). So this worker looks at a connection
the moment it accepts it, before any of that:

1. the queue age from the kernel (``queue_age.read_queue_age_s``, one ``getsockopt``);
   younger than the shed limit: the ordinary sync path, unchanged; at least
   ``MOVIEREC_SERVE_REFUSE_MS`` (500 ms by default): the connection is reset at once,
   unread (``refuse``, counted in ``movierec_serve_refused_total``), because any answer
   would reach a client whose 600 ms ran out, and draining the queue is what lets the
   requests behind it still be answered in time;
2. the request's bytes, peeked (``MSG_PEEK``: left in the socket for the ordinary path);
   anything but one complete ``GET /recommend/<digits>`` request without a body (another
   path, a partial or pipelined request, a header that makes the address not the
   client's: trusted proxies): the ordinary path;
3. the request consumed and answered by the app's own ``RecommendRoute`` (the limit per
   address, then the handler, which sheds it: counted, a served record, the minor-safe
   popular list), written as one ``sendall`` with ``Connection: close``, and the socket
   closed at once: nothing is left unread, so the close is a FIN, not a reset.

A shed answer then costs a few tens of microseconds of Python instead of about half a
millisecond, and the backlog drains at thousands a second per worker: every queued
request is answered, personalized if it is young, shed within the deadline if not
(docs/serving.md, "Overload"; docs/benchmarks.md has the measurements).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import struct
import time
from typing import Any

from gunicorn.workers.sync import SyncWorker

from recommender.serving.queue_age import read_queue_age_s
from recommender.serving.recommend_route import (
    GUNICORN_SOCKET,
    QUEUE_S,
    REASONS,
    TEXT,
    RecommendRoute,
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
MESSY = re.compile(rb"(?im)^(?:content-length|transfer-encoding|expect)\s*:")
"""Headers that announce a body or a dialogue: such a request takes the ordinary path."""


def parse_shed_request(head: bytes) -> str | None:
    """The raw user id of ``head`` when it is one complete bodiless ``GET
    /recommend/<digits>`` request (see ``REQUEST``), else None. Pure."""
    match = REQUEST.match(head)
    if match is None or MESSY.search(head):
        return None
    return match.group(1).decode("ascii")


def response_bytes(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """An HTTP/1.1 answer that closes the connection. Pure."""
    lines = [f"HTTP/1.1 {REASONS[status]}", "Connection: close", f"Content-Type: {TEXT}",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def route_of(app: Any) -> RecommendRoute | None:
    """The ``RecommendRoute`` of the worker's app (``create_app`` keeps it in the app's
    extensions), or None for any other app."""
    extensions = getattr(app, "extensions", None)
    if not isinstance(extensions, dict):
        return None
    route = extensions.get("movierec", {}).get("route")
    return route if isinstance(route, RecommendRoute) else None


class ShedWorker(SyncWorker):
    """The sync worker, shedding old /recommend requests before parsing them (see the
    module docstring). With shedding off (``MOVIEREC_SERVE_SHED_MS=0``) or another app,
    it is gunicorn's sync worker."""

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        route = route_of(self.wsgi)
        age = None if route is None else read_queue_age_s(client)
        if route is not None and age is not None:
            if route.refuse_s and age >= route.refuse_s:
                refuse(client)
                route.metrics.refused.inc()
                return
            if route.handler.shed_s and age >= route.handler.shed_s and self.shed(route, client, addr):
                return
        super().handle(listener, client, addr)

    def shed(self, route: RecommendRoute, client: socket.socket, addr: Any) -> bool:
        """Answer ``client`` here if its request is a plain /recommend (True, the socket
        closed), else leave everything as it was (False). Called for requests past the
        shed limit."""
        if route.proxies:
            return False
        try:
            head = client.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:  # nothing arrived yet (EAGAIN), or the client is gone: ordinary path
            return False
        raw = parse_shed_request(head)
        if raw is None:
            return False
        try:
            user = route.handler.parse(raw)
        except BadRequest:
            return False
        started = time.perf_counter()
        try:
            client.recv(len(head))  # consume what was peeked: the close is then a FIN
            environ: dict[str, Any] = {GUNICORN_SOCKET: client, "REMOTE_ADDR": _host(addr)}
            status, headers, text = (route.limited(environ)
                                     or route.recommend_answer(user, environ, started))
            client.sendall(response_bytes(status, headers, text.encode()))
            route.count(status, started, environ.get(QUEUE_S, 0.0))
        except OSError:
            pass  # the client left: nothing to answer
        except Exception:  # a bug must not kill the worker; the client sees a closed socket
            log.exception("shedding at accept failed")
        finally:
            client.close()
        return True


def refuse(client: socket.socket) -> None:
    """Reset the connection without reading or answering: ``SO_LINGER`` on with a zero
    timeout makes ``close`` send a RST (socket(7)), so the client learns at once, and the
    kernel frees the connection without the FIN handshake. Never raises."""
    with contextlib.suppress(OSError):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    client.close()


def _host(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""
