"""Benchmark: one load, three views: locust's SLO report, the service's dashboard, and wrk.

Issue #22 asks that the SLO report of ``make loadtest`` and the dashboard show the same
numbers as ``benchmarks/serve.py`` for the same load. This script puts them side by side
on one staged service (the world of ``make loadtest``, 2 sync workers):

1. locust exactly as ``make loadtest`` runs it (``load_tests.run``: 40 users, a 50-150 ms
   think time, its mix of heavy, known, new, burst and invalid ids), whose SLO report
   carries the client's figures and, from the service's /metrics before and after, the
   dashboard's (``load_tests.service_view``: ``rate()`` of the /recommend answers and
   ``histogram_quantile()`` of ``movierec_serve_response_seconds``);
2. then wrk, as ``benchmarks/serve.py`` drives it (1 thread, ``--latency``), with as many
   connections as locust had users, each pausing so that together they send locust's
   measured rate (the pause from a 3 s calibration run), for the same time; its figures
   and the dashboard's for its window.

Each repeat runs both; the table has their medians. The rates are each view's count over
its own window: locust's from its first to its last request, the dashboard's between the
two /metrics reads around the whole run (locust's start and stop included), so the
request counts are compared too. The clients differ (locust is Python on gevent on the
same two cores, wrk is C; locust's mix has 10% invalid ids answered 400 at once), so
their latencies differ by their own overhead; the dashboard's numbers are what the
service saw, the same for both when the service did the same work.

Needs ``movierec infra up``, wrk and locust (``make system``, ``make setup``).

    python benchmarks/slo_views.py [--repeats 3] [--duration 30] [--users 40] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import add_output_args, emit
from benchmarks.serve import CALIBRATION_S, lua, shed_counts, shed_since, wrk
from benchmarks.serve_measure import think_delay_ms
from load_tests import run
from load_tests.server import ServiceProcess, staged_env
from load_tests.stage import StageSpec, stage

FIGURES = ("rps", "p50_ms", "p99_ms")


def locust_view(url: str, out: Path, staged, *, users: int, duration_s: int, wait_ms: str) -> dict:
    """One ``make loadtest`` run against ``url``: the client's rps and quantiles and the
    dashboard's, from its SLO report."""
    os.environ["MOVIEREC_LOADTEST_WAIT_MS"] = wait_ms
    lo, hi, new = min(staged.known_users), max(staged.known_users), staged.first_unknown_user
    status = run.main(["--url", url, "--users", str(users), "--spawn-rate", str(users),
                       "--duration", f"{duration_s}s", "--out", str(out),
                       "--known-users", f"{lo}-{hi}", "--heavy", ",".join(map(str, staged.heavy_users)),
                       "--new-users", f"{new}-{new + 10**6}"])
    if status == 2:
        raise RuntimeError(f"locust could not run; see {out}/locust.log")
    report = json.loads((out / "slo-report.json").read_text(encoding="utf-8"))
    m, v = report["measured"], report["service"] or {}
    return {"client_requests": m["requests"], "dashboard_requests": v.get("requests"),
            "client_rps": m["rps"], "client_p50_ms": m["p50_ms"], "client_p95_ms": m["p95_ms"],
            "client_p99_ms": m["p99_ms"], "dashboard_rps": v.get("rps"),
            "dashboard_p50_ms": v.get("p50_ms"), "dashboard_p99_ms": v.get("p99_ms"),
            "slo_passed": report["passed"]}


def wrk_view(url: str, ids: list[str], tmp: Path, *, connections: int, rps: float,
             duration_s: int) -> dict:
    """wrk at ``rps`` from ``connections`` paced connections: its figures and the
    dashboard's for its window."""
    guess = think_delay_ms(connections, rps, 5.0)
    calibration = wrk(url, lua(ids, tmp / "cal.lua", guess), connections=connections,
                      seconds=CALIBRATION_S)
    delay = think_delay_ms(connections, rps, calibration["mean_ms"])
    start = shed_counts(url)
    row = wrk(url, lua(ids, tmp / "paced.lua", delay), connections=connections, seconds=duration_s)
    row.update(shed_since(url, start))
    return {"client_requests": row["requests"], "dashboard_requests": row.get("dashboard_requests"),
            "client_rps": row["rps"], "client_p50_ms": row["p50_ms"], "client_p99_ms": row["p99_ms"],
            "dashboard_rps": row["dashboard_rps"], "dashboard_p50_ms": row["dashboard_p50_ms"],
            "dashboard_p99_ms": row["dashboard_p99_ms"], "delay_ms": delay}


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("MOVIEREC_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--kafka-bootstrap",
                        default=os.environ.get("MOVIEREC_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--users", type=int, default=40, help="locust users = wrk connections")
    parser.add_argument("--wait-ms", default="50-150", help="locust's think time (make loadtest's)")
    parser.add_argument("--duration", type=int, default=30, help="seconds of each run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port", type=int, default=18184)
    add_output_args(parser)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-slo-views-"))
    staged = stage(StageSpec(), redis_url=args.redis_url, prefix="bench-slo", registry_dir=tmp / "registry",
                   progress=lambda s: print(f"stage: {s}", flush=True))
    rnd = random.Random(2)
    ids = [str(u) for u in rnd.sample(staged.known_users, min(5000, len(staged.known_users)))]
    env = staged_env(redis_url=args.redis_url, prefix="bench-slo", root=tmp,
                     kafka_bootstrap=args.kafka_bootstrap, served_topic="movierec.served.bench")
    service = ServiceProcess(port=args.port, env=env, log=tmp / "serve.log", workers=2).start()
    rows: dict[str, list[dict]] = {"locust": [], "wrk": []}
    try:
        for r in range(args.repeats):
            loc = locust_view(service.url, tmp / f"locust-{r + 1}", staged, users=args.users,
                              duration_s=args.duration, wait_ms=args.wait_ms)
            rows["locust"].append(loc)
            print(f"repeat {r + 1} locust: {loc}", flush=True)
            w = wrk_view(service.url, ids, tmp, connections=args.users, rps=loc["client_rps"],
                         duration_s=args.duration)
            rows["wrk"].append(w)
            print(f"repeat {r + 1} wrk: {w}", flush=True)
    finally:
        service.stop()
    result: dict = {"users": args.users, "wait_ms": args.wait_ms, "duration_s": args.duration,
                    "repeats": args.repeats, "world_users": StageSpec.users}
    for name, runs in rows.items():
        for key in ("client_requests", "dashboard_requests", "client_rps", "client_p50_ms",
                    "client_p95_ms", "client_p99_ms",
                    "dashboard_rps", "dashboard_p50_ms", "dashboard_p99_ms"):
            if any(key in row for row in runs):
                result[f"{name}_{key}"] = _median(runs, key)
    result["locust_slo_passed"] = [row["slo_passed"] for row in rows["locust"]]
    emit(result, args)


if __name__ == "__main__":
    main()
