"""Benchmark: can `movierec sim live` hold its target request rate (50-1,000 req/s)?

The service under test is a constant-answer asyncio HTTP server in a child process
(the cheapest possible service, so the figure is the simulator's own ceiling). Each
repeat runs live mode for ``--duration`` s at each rate, writing lines to a file, and
reports achieved/target and the client-side latency percentiles.

    python benchmarks/sim_live.py [--rates 50,200,1000] [--duration 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BODY = b"the+great+2013,key+1994"


async def _serve(port: int) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            writer.write(answer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="50,200,1000")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return

    from simulator.live import LiveConfig, LiveRun
    from simulator.producer import FileSink
    from simulator.world import World, WorldSpec
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        time.sleep(1.0)
        world = World.build(WorldSpec())
        results = {}
        for rate in map(float, args.rates.split(",")):
            runs = []
            for rep in range(args.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    sink = FileSink(Path(tmp) / "live.log")
                    config = LiveConfig(service_url=f"http://127.0.0.1:{port}", rate_per_s=rate,
                                        duration_s=args.duration, seed=rep)
                    stats = asyncio.run(LiveRun(world, config, sink,
                                                start=datetime(2025, 5, 1, 18)).run())
                    sink.close()
                runs.append(stats.to_dict() | {"achieved_per_s": stats.requests / args.duration})
            achieved = statistics.median(r["achieved_per_s"] for r in runs)
            results[rate] = {
                "achieved_req_per_s_median": round(achieved, 1),
                "ratio_achieved_to_target": round(achieved / rate, 3),
                "client_p99_ms_median": statistics.median(r["latency_ms"]["p99"] for r in runs),
            }
            print(f"{rate:>6.0f} req/s: {results[rate]}", flush=True)
        print(json.dumps(results, indent=2))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
