"""Shared test helpers."""

from __future__ import annotations

import socket

from werkzeug.serving import WSGIRequestHandler

from movierec.wire import Watch


def free_ports(count: int) -> list[int]:
    """Ports the OS says are free now (held open together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class QuietHandler(WSGIRequestHandler):
    """Werkzeug's request handler without the access log line per request."""

    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


def assert_one_session_at_a_time(events: list) -> int:
    """Per user, watch lines form whole sessions: minute 0 starts one, and every other
    line continues the user's current session (same movie, next minute). Two sessions of
    one user interleaving would break this. Returns the number of sessions seen."""
    current: dict[int, tuple[str, int]] = {}
    sessions = 0
    for e in events:
        if isinstance(e, Watch):
            if e.minute == 0:
                sessions += 1
            else:
                assert current.get(e.user_id) == (e.movie_id, e.minute - 1), e
            current[e.user_id] = (e.movie_id, e.minute)
    return sessions
