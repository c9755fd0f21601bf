"""A small asyncio HTTP/1.1 client for the live simulator: keep-alive, one hard deadline.

Why not urllib or a thread per request: at 1,000 requests/s on two cores, shared with
the service under test, the client must cost tens of microseconds a request. Only
``GET`` with a Content-Length or a connection-close body is needed.

Why not the project's HTTP library (httpx, used by ``simulator.grade_probe`` and
``movierec.mlip_api``; issue #19 keeps a hand-written client only where the library cannot
hold the rate): measured in the same runs by ``benchmarks/sim_live.py``, httpx's async
client costs about 20 times the CPU a request of this one (808 against 38 µs, alone),
and at 1,000 requests/s next to the simulation it answered 3% of the requests within the
deadline, this client 90% (medians of 5; docs/benchmarks.md, "HTTP client library", has the figures). ``Pool``
is what ``simulator.live`` needs of a client, so the benchmark can plug in others.

The deadline covers the whole exchange, connecting included (one ``asyncio.timeout``),
as the course client's 600 ms does. A kept-alive connection the server has closed
since is retried once on a fresh connection, within the same deadline: a healthy
service must not be logged as failing because it dropped an idle connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from movierec.errors import MovierecError

MAX_BODY = 64 * 1024


class HttpError(MovierecError):
    """The exchange failed before a complete, well-framed answer arrived."""


class Closed(HttpError):
    """The server closed the connection before answering."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class Pool(Protocol):
    """An HTTP client as ``simulator.live`` uses it: ``get`` raises TimeoutError past
    ``timeout_s`` (connecting included), OSError (ConnectionRefusedError when refused) or
    HttpError for any other failure, and reads at most ``MAX_BODY`` bytes of a body."""

    async def get(self, path: str, timeout_s: float) -> Answer: ...

    def close(self) -> None: ...


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_STALE = (Closed, ConnectionResetError, BrokenPipeError)


class ConnectionPool:
    """Up to ``size`` idle keep-alive connections to one host:port."""

    def __init__(self, host: str, port: int, size: int = 64) -> None:
        self.host, self.port, self.size = host, port, size
        self._idle: list[_Conn] = []

    async def get(self, path: str, timeout_s: float) -> Answer:
        """GET ``path``; TimeoutError past ``timeout_s``, OSError or HttpError otherwise."""
        async with asyncio.timeout(timeout_s):
            if self._idle:
                conn = self._idle.pop()
                try:
                    return await self._use(conn, path)
                except _STALE:  # the server closed the idle connection: once more, anew
                    pass
            conn = await asyncio.open_connection(self.host, self.port)
            return await self._use(conn, path)

    async def _use(self, conn: _Conn, path: str) -> Answer:
        try:
            answer, keep = await self._exchange(conn, path)
        except BaseException:
            conn[1].close()
            raise
        if keep and len(self._idle) < self.size:
            self._idle.append(conn)
        else:
            conn[1].close()
        return answer

    async def _exchange(self, conn: _Conn, path: str) -> tuple[Answer, bool]:
        reader, writer = conn
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        await writer.drain()
        try:
            status_line = await reader.readline()
            if not status_line:
                raise Closed("closed before the status line")
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise HttpError(f"bad status line {status_line[:60]!r}")
            length, keep = None, not status_line.startswith(b"HTTP/1.0")
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    if not value.isdigit():
                        raise HttpError(f"bad Content-Length {value[:20]!r}")
                    length = int(value)
                elif name == b"connection":
                    keep = value == b"keep-alive" or (keep and value != b"close")
                elif name == b"transfer-encoding":
                    raise HttpError("chunked answers are not supported")
        except (ValueError, asyncio.LimitOverrunError) as exc:  # a header line over 64 KiB
            raise HttpError(f"unreadable header: {exc}") from None
        if length is None:  # the body runs to the end of the connection
            chunks, size = [], 0
            while size < MAX_BODY and (chunk := await reader.read(MAX_BODY - size)):
                chunks.append(chunk)
                size += len(chunk)
            return Answer(int(parts[1]), b"".join(chunks)), False
        body = await reader.readexactly(min(length, MAX_BODY))
        return Answer(int(parts[1]), body), keep and length <= MAX_BODY

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
