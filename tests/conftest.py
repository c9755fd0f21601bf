"""Shared test helpers."""

from __future__ import annotations

import socket

from werkzeug.serving import WSGIRequestHandler


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
