"""The live simulator's HTTP client at the edges: framing, stale connections, deadline.

The contract tests also run the httpx client that benchmarks/sim_live.py measures against
this one, so that the benchmark compares clients that do the same work."""

from __future__ import annotations

import asyncio
import time

import pytest

from benchmarks.sim_live import HttpxPool
from simulator.live_http import MAX_BODY, ConnectionPool, HttpError, Pool
from tests.conftest import free_ports

POOLS = [ConnectionPool, HttpxPool]


async def _close(pool: Pool) -> None:
    aclose = getattr(pool, "aclose", None)
    if aclose is not None:
        await aclose()
    pool.close()


async def _with_server(handler, body, make=ConnectionPool):
    async def closing(reader, writer):  # a cancelled handler must still close its socket
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = make("127.0.0.1", port)
    try:
        return await body(pool)
    finally:
        await _close(pool)
        await asyncio.sleep(0.01)  # let the transports finish closing
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bool:
    line = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    return bool(line)


@pytest.mark.parametrize("make", POOLS)
def test_body_without_length_is_read_to_the_end(make) -> None:
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe+matrix+1999,")
        await writer.drain()
        await asyncio.sleep(0.05)  # the rest arrives in a later segment
        writer.write(b"up+2009")
        writer.close()

    async def body(pool):
        return await pool.get("/recommend/1", 2.0)

    answer = asyncio.run(_with_server(handler, body, make))
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


@pytest.mark.parametrize("make", POOLS)
def test_a_stale_keep_alive_connection_is_retried_once(make) -> None:
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

    first, second = asyncio.run(_with_server(handler, body, make))
    assert first.body == second.body == b"x+2000" and len(served) == 2


@pytest.mark.parametrize("make", POOLS)
def test_a_connection_closed_under_a_request_is_retried_once(make) -> None:
    connections = []

    async def handler(reader, writer):
        connections.append(1)
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nx+2000")
        await writer.drain()
        await _read_request(reader)  # the connection looked alive until this request came

    async def body(pool):
        return [await pool.get(f"/recommend/{i}", 2.0) for i in range(3)]

    answers = asyncio.run(_with_server(handler, body, make))
    assert [a.body for a in answers] == [b"x+2000"] * 3 and len(connections) == 3


@pytest.mark.parametrize("make", POOLS)
def test_a_fresh_connection_closed_unanswered_is_not_retried(make) -> None:
    connections = []

    async def handler(reader, writer):
        connections.append(1)
        await _read_request(reader)

    async def body(pool):
        with pytest.raises(HttpError):
            await pool.get("/recommend/1", 2.0)
        return True

    assert asyncio.run(_with_server(handler, body, make)) and len(connections) == 1


@pytest.mark.parametrize("make", POOLS)
def test_the_body_read_is_bounded(make) -> None:
    async def handler(reader, writer):
        await _read_request(reader)
        size = MAX_BODY * 100  # announced; twice MAX_BODY is sent, then nothing
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * MAX_BODY * 2)
        await writer.drain()
        await asyncio.sleep(5)

    async def body(pool):
        return await pool.get("/recommend/1", 2.0)  # a client reading on would time out

    assert asyncio.run(_with_server(handler, body, make)).body == b"x" * MAX_BODY


@pytest.mark.parametrize("make", POOLS)
def test_a_refused_connection_is_a_connection_refused_error(make) -> None:
    (port,) = free_ports(1)

    async def body():
        pool = make("127.0.0.1", port)
        try:
            with pytest.raises(ConnectionRefusedError):
                await pool.get("/recommend/1", 2.0)
        finally:
            await _close(pool)
        return True

    assert asyncio.run(body())


@pytest.mark.parametrize("make", POOLS)
def test_the_deadline_covers_the_whole_exchange(make) -> None:
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

    assert asyncio.run(_with_server(handler, body, make)) < 0.75


@pytest.mark.parametrize("make", POOLS)
def test_the_deadline_covers_connecting(make, monkeypatch: pytest.MonkeyPatch) -> None:
    # a connect that never completes (as to a host that drops SYNs) is cut at the deadline
    async def never(*args, **kwargs):
        await asyncio.sleep(3600)

    # both clients connect through the loop's create_connection (asyncio streams, anyio)
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", never)

    async def body():
        pool = make("127.0.0.1", 9)
        began = time.monotonic()
        try:
            with pytest.raises(TimeoutError):
                await pool.get("/recommend/1", 0.3)
        finally:
            await _close(pool)
        return time.monotonic() - began

    assert asyncio.run(body()) < 0.6
