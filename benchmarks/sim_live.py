"""Benchmark: can `movierec sim live` hold its target request rate (50-1,000 req/s), and
with which HTTP client?

Issue #19 item 8: one HTTP client library, measured against the hand-written client of
``simulator.live_http`` at 50, 200 and 1,000 requests/s; the hand-written one stays only
if the library cannot hold the rate. Each repeat runs live mode for ``--duration`` s at
each rate with each client in turn (the order rotates from repeat to repeat, so drift on
the noisy two-core box falls on all clients alike), writing lines to a file. Per run:

- achieved: requests completed a second (answered or failed);
- good: requests answered 200 with a list within the deadline, a second;
- CPU: the simulator process's CPU time (``time.process_time``: user + system, all
  threads) over the requests; it includes the simulation, the same for every client;
- p50/p99: client-side latency in ms, as the simulator logs it.

Figures are medians over the repeats with their range; ratios are library over
hand-written within the same repeat, then the median. A client holds a rate if, in the
median run, at least 99% of its requests were good and it completed at least 90% of the
target (arrivals are a Poisson process: at 50 req/s for 5 s their count alone varies by
about 6%, the same for every client).

The service under test is a constant-answer asyncio HTTP server in a child process (the
cheapest possible service, so the figures are the client's own ceiling). Before the live
runs, each client alone sends ``--alone`` requests, 8 at a time, to the same server: its
CPU per request without the simulation around it.

Clients: ``handwritten`` (``live_http.ConnectionPool``), ``httpx`` (``httpx.AsyncClient``,
a project dependency) and, if installed, ``aiohttp`` (not a dependency: for comparison).
Both library clients are wrapped to keep the live simulator's contract (``live_http.Pool``):
one deadline over the whole exchange with ``asyncio.timeout``, at most ``MAX_BODY`` bytes
of body, transport failures as the OSError or HttpError the simulator classifies.

    python benchmarks/sim_live.py [--rates 50,200,1000] [--duration 5] [--repeats 5]
        [--clients handwritten,httpx] [--alone 3000] [--pause 1] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from movierec.mlip_api import ExchangeTrace, is_stale
from simulator.live_http import MAX_BODY, Answer, ConnectionPool, HttpError, Pool

if TYPE_CHECKING:  # the server child needs none of the simulation
    from simulator.live import LiveConfig, LiveStats
    from simulator.producer import LineSink
    from simulator.world import World

BODY = b"the+great+2013,key+1994"
GOOD_SHARE = 0.99  # good requests over completed ones, at least, to hold the rate
COMPLETED = 0.90  # completed requests over the target, at least, to hold the rate
START = datetime(2025, 5, 1, 18)


async def _serve(port: int) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline():
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                writer.write(answer)
        except ConnectionError:  # a client that gave up on a request resets its connection
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- the library clients, behind the live simulator's contract ---------------------------


def _live_error(exc: Exception) -> OSError | HttpError:
    """A library's failure as ``simulator.live`` classifies it: the OSError the library
    wrapped (ConnectionRefusedError: "Connection refused"), else an HttpError."""
    from simulator.grade_probe import transport_error

    found = transport_error(exc)
    return found if isinstance(found, OSError) else HttpError(f"{type(exc).__name__}: {exc}")


class _AsyncTrace(ExchangeTrace):
    """``movierec.mlip_api.ExchangeTrace`` for httpx's async client, which awaits its hook."""

    async def __call__(self, name: str, info: dict) -> None:  # type: ignore[override]
        super().__call__(name, info)


class HttpxPool:
    """``httpx.AsyncClient`` as a ``live_http.Pool``: keep-alive pool of up to ``size``
    idle connections (as ``ConnectionPool``), no library timeouts (the deadline is one
    ``asyncio.timeout``), the body streamed up to ``MAX_BODY``. A request that failed on a
    reused connection (seen with httpx's ``trace`` extension) is retried once, fresh."""

    def __init__(self, host: str, port: int, size: int = 64) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}", timeout=None, trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=size),
            headers={"Accept-Encoding": "identity"})  # raw bytes, as the course client reads

    async def get(self, path: str, timeout_s: float) -> Answer:
        async with asyncio.timeout(timeout_s):
            for attempt in (1, 2):
                trace = _AsyncTrace()
                try:
                    return await self._once(path, trace)
                except self._httpx.HTTPError as exc:
                    if attempt == 1 and is_stale(exc, trace):
                        continue
                    raise _live_error(exc) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _once(self, path: str, trace: _AsyncTrace) -> Answer:
        async with self.client.stream("GET", path, extensions={"trace": trace}) as response:
            chunks, size = [], 0
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size >= MAX_BODY:
                    break
            return Answer(response.status_code, b"".join(chunks)[:MAX_BODY])

    def close(self) -> None:
        """Nothing: ``aclose`` closes the connections (it needs the running loop)."""

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpPool:
    """``aiohttp.ClientSession`` as a ``live_http.Pool`` (for comparison only). aiohttp
    itself retries an idempotent request once after the server disconnected (RFC 9112
    section 9.3.1)."""

    def __init__(self, host: str, port: int, size: int = 64) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.session = aiohttp.ClientSession(
            f"http://{host}:{port}", auto_decompress=False, trust_env=False,
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=None))

    async def get(self, path: str, timeout_s: float) -> Answer:
        async with asyncio.timeout(timeout_s):
            try:
                async with self.session.get(path, headers={"Accept-Encoding": "identity"}) as response:
                    body = b""  # read(n) returns what has arrived: up to MAX_BODY or the end
                    while len(body) < MAX_BODY:
                        chunk = await response.content.read(MAX_BODY - len(body))
                        if not chunk:
                            break
                        body += chunk
                    return Answer(response.status, body)
            except self._aiohttp.ClientError as exc:
                raise _live_error(exc) from None

    def close(self) -> None:
        """Nothing: ``aclose`` closes the session (it needs the running loop)."""

    async def aclose(self) -> None:
        await self.session.close()


CLIENTS: dict[str, Callable[[str, int], Pool]] = {
    "handwritten": ConnectionPool, "httpx": HttpxPool, "aiohttp": AiohttpPool}


async def _closing(pool: Pool) -> None:
    aclose = getattr(pool, "aclose", None)
    if aclose is not None:
        await aclose()
    pool.close()


# -- measuring -----------------------------------------------------------------------------


async def _alone(make: Callable[[str, int], Pool], port: int, n: int, concurrency: int = 8) -> float:
    """CPU µs a request of the client alone: ``n`` requests, ``concurrency`` at a time."""
    pool = make("127.0.0.1", port)

    async def worker(count: int) -> None:
        for i in range(count):
            answer = await pool.get(f"/recommend/{i}", 5.0)
            if answer.body != BODY:
                raise AssertionError(f"unexpected answer {answer}")

    try:
        await asyncio.gather(*(worker(50) for _ in range(concurrency)))  # connections open
        began = time.process_time()
        await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
        return (time.process_time() - began) / (n // concurrency * concurrency) * 1e6
    finally:
        await _closing(pool)


async def _live(world: World, config: LiveConfig, sink: LineSink, make: Callable[[str, int], Pool],
                port: int) -> LiveStats:
    from simulator.live import LiveRun

    pool = make("127.0.0.1", port)
    try:
        return await LiveRun(world, config, sink, start=START, pool=pool).run()
    finally:
        await _closing(pool)


def one_run(world: World, port: int, client: str, rate: float, duration_s: float, seed: int) -> dict:
    """One live run of ``duration_s`` at ``rate`` with ``client``: the per-run figures."""
    from simulator.live import LiveConfig
    from simulator.producer import FileSink

    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        sink = FileSink(Path(tmp) / "live.log")
        config = LiveConfig(service_url=f"http://127.0.0.1:{port}", rate_per_s=rate,
                            duration_s=duration_s, seed=seed)
        began = time.process_time()
        stats = asyncio.run(_live(world, config, sink, CLIENTS[client], port))
        cpu_s = time.process_time() - began
        sink.close()
    latency = stats.to_dict()["latency_ms"]
    return {"achieved_per_s": stats.requests / duration_s,
            "good_per_s": stats.outcomes.get("ok", 0) / duration_s,
            "cpu_us_per_request": cpu_s / max(stats.requests, 1) * 1e6,
            "p50_ms": latency["p50"], "p99_ms": latency["p99"], "outcomes": stats.outcomes}


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median (min-max)`` of ``values``, ``digits`` after the point."""
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def summarise(runs: dict[str, list[dict]], rate: float, baseline: str = "handwritten") -> dict:
    """The figures of one rate: per client medians and ranges, and per-repeat ratios
    against ``baseline`` (if it ran), then their median and range."""
    out: dict[str, object] = {}
    for client, reps in runs.items():
        key = f"{rate:g}/{client}"
        achieved = [r["achieved_per_s"] for r in reps]
        share = [r["good_per_s"] / r["achieved_per_s"] if r["achieved_per_s"] else 0.0 for r in reps]
        out[f"{key} achieved/s"] = spread(achieved)
        out[f"{key} good/s"] = spread([r["good_per_s"] for r in reps])
        out[f"{key} good share"] = spread(share, 4)
        out[f"{key} CPU µs/request"] = spread([r["cpu_us_per_request"] for r in reps], 0)
        out[f"{key} p50 ms"] = spread([r["p50_ms"] for r in reps], 0)
        out[f"{key} p99 ms"] = spread([r["p99_ms"] for r in reps], 0)
        holds = (statistics.median(share) >= GOOD_SHARE
                 and statistics.median(achieved) >= COMPLETED * rate)
        out[f"{key} holds"] = "yes" if holds else "no"
        if client != baseline and baseline in runs:
            pairs = list(zip(reps, runs[baseline], strict=True))
            for name, field in (("good", "good_per_s"), ("CPU", "cpu_us_per_request"),
                                ("p99", "p99_ms")):
                ratios = [r[field] / b[field] for r, b in pairs if b[field]]
                if ratios:
                    out[f"{key} {name} ratio to {baseline}"] = spread(ratios, 3)
    return out


def versions() -> dict[str, str]:
    """The library versions measured (httpx's async speed depends on sniffio being
    installed: httpcore 1.0.9 imports it on every lock, a failed import each time)."""
    found = {}
    for name in ("httpx", "httpcore", "anyio", "sniffio", "aiohttp"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def main() -> None:
    from benchmarks.report import add_output_args, emit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="50,200,1000")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clients", default="handwritten,httpx")
    ap.add_argument("--alone", type=int, default=3000, help="requests of each client alone (0: skip)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    add_output_args(ap)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return

    from simulator.world import World, WorldSpec

    clients = args.clients.split(",")
    unknown = set(clients) - set(CLIENTS)
    if unknown:
        ap.error(f"unknown clients {sorted(unknown)}; known: {sorted(CLIENTS)}")
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    result: dict[str, object] = {"cpus": os.cpu_count(), **{f"version {k}": v for k, v in versions().items()}}
    try:
        time.sleep(1.0)
        for client in clients if args.alone else []:
            figures = [asyncio.run(_alone(CLIENTS[client], port, args.alone)) for _ in range(3)]
            result[f"alone/{client} CPU µs/request"] = spread(figures, 0)
            print(f"alone {client:12s} {figures}", flush=True)
        world = World.build(WorldSpec())
        for rate in map(float, args.rates.split(",")):
            runs: dict[str, list[dict]] = {c: [] for c in clients}
            for rep in range(args.repeats):
                for client in clients[rep % len(clients):] + clients[:rep % len(clients)]:
                    time.sleep(args.pause)  # the server settles after a run that overloaded it
                    run = one_run(world, port, client, rate, args.duration, seed=rep)
                    runs[client].append(run)
                    print(f"{rate:>6g} req/s {client:12s} repeat {rep}: {json.dumps(run)}", flush=True)
            result.update(summarise(runs, rate))
    finally:
        server.terminate()
        server.wait()
    emit(result, args)


if __name__ == "__main__":
    main()
