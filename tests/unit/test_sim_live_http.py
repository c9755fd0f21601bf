"""The live simulator's HTTP client at the edges: framing, stale connections, deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from simulator.live_http import ConnectionPool, HttpError


async def _with_server(handler, body):
    async def closing(reader, writer):  # a cancelled handler must still close its socket
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool("127.0.0.1", port)
    try:
        return await body(pool)
    finally:
        pool.close()
        await asyncio.sleep(0.01)  # let the transports finish closing
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bool:
    line = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return bool(line)


def test_body_without_length_is_read_to_the_end() -> None:
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe+matrix+1999,")
        await writer.drain()
        await asyncio.sleep(0.05)  # the rest arrives in a later segment
        writer.write(b"up+2009")
        writer.close()

    async def body(pool):
        return await pool.get("/recommend/1", 2.0)

    answer = asyncio.run(_with_server(handler, body))
    assert (answer.status, answer.body) == (200, b"the+matrix+1999,up+2009")


@pytest.mark.parametrize("header", [b"Content-Length: x", b"Content-Length: -5",
                                    b"Transfer-Encoding: chunked"])
def test_bad_framing_is_an_http_error(header: bytes) -> None:
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + header + b"\r\n\r\nabc")
        writer.close()

    async def body(pool):
        with pytest.raises(HttpError):
            await pool.get("/recommend/1", 2.0)
        return True

    assert asyncio.run(_with_server(handler, body))


def test_a_stale_keep_alive_connection_is_retried_once() -> None:
    served = []

    async def handler(reader, writer):
        if await _read_request(reader):
            served.append(1)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nx+2000")
            await writer.drain()
        writer.close()  # answers one request per connection, then drops it silently

    async def body(pool):
        first = await pool.get("/recommend/1", 2.0)
        await asyncio.sleep(0.05)
        second = await pool.get("/recommend/2", 2.0)  # the pooled connection is dead
        return first, second

    first, second = asyncio.run(_with_server(handler, body))
    assert first.body == second.body == b"x+2000" and len(served) == 2


def test_the_deadline_covers_the_whole_exchange() -> None:
    async def handler(reader, writer):
        await _read_request(reader)
        await asyncio.sleep(0.4)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await writer.drain()
        await asyncio.sleep(0.4)  # each step is under the deadline, the sum is not
        writer.write(b"Content-Length: 6\r\n\r\nx+2000")
        writer.close()

    async def body(pool):
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await pool.get("/recommend/1", 0.6)
        return time.monotonic() - began

    assert asyncio.run(_with_server(handler, body)) < 0.75
