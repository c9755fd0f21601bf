"""``movierec loadtest`` (``make loadtest``): stage a world, start the real service, run
locust, judge the SLO.

Needs the local stack running (``make up``: Redis for the features, Kafka for the served
records). Everything it writes lives under ``--out`` (registry, experiments file, logs,
locust CSVs, ``slo-report.md``/``.json``) and under the Redis prefix ``--prefix``, so it
never touches a running deployment's data. The service runs on its own port and is
stopped at the end, pass or fail. Exit status: that of ``load_tests.run`` (0 pass, 1
SLO missed, 2 could not run).

Throughput: one locust process drives a few hundred requests per second here, on the
same 2 cores as the service, so this judges latency, errors and fallbacks under a
realistic mix; the ≥ 3,000 req/s figure comes from ``benchmarks/serve.py`` (wrk, C).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from load_tests import run
from load_tests.server import ServiceError, ServiceProcess, staged_env
from load_tests.stage import StageSpec, stage


@click.command("loadtest")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("var/loadtest"),
              show_default=True, help="Folder of everything the run writes (registry, logs, "
                                      "locust CSVs, slo-report.md/.json).")
@click.option("--redis-url", envvar="MOVIEREC_REDIS_URL", default="redis://127.0.0.1:6379/0",
              show_default=True, help="Redis of the staged features (MOVIEREC_REDIS_URL).")
@click.option("--kafka-bootstrap", envvar="MOVIEREC_KAFKA_BOOTSTRAP", default="127.0.0.1:9092",
              show_default=True, help="Kafka for the served records (MOVIEREC_KAFKA_BOOTSTRAP).")
@click.option("--prefix", default="loadtest", show_default=True,
              help="Redis key prefix of the staged world (never a deployment's own).")
@click.option("--port", type=int, default=18082, show_default=True, help="Port of the service under test.")
@click.option("--workers", type=int, default=2, show_default=True, help="gunicorn workers of the service.")
@click.option("--world-users", type=int, default=StageSpec.users, show_default=True,
              help="Users of the staged world.")
@click.option("--world-movies", type=int, default=StageSpec.movies, show_default=True,
              help="Movies of the staged world.")
@click.option("--users", type=int, default=40, show_default=True, help="Concurrent locust users.")
@click.option("--duration", default="60s", show_default=True, help="Run time: 90, 30s, 2m, 1h30m.")
@click.option("--wait-ms", default="50-150", show_default=True,
              help="Think time of each locust user, lo-hi ms (an open-ish load below "
                   "saturation; 0-0 makes every user a closed loop at full speed).")
@click.option("--slo-min-rps", default="100", show_default=True,
              help="Throughput the SLO asks for: what one locust process can drive here.")
def loadtest(out: Path, redis_url: str, kafka_bootstrap: str, prefix: str, port: int,
             workers: int, world_users: int, world_movies: int, users: int, duration: str,
             wait_ms: str, slo_min_rps: str) -> None:
    """Stage a world, start the real service on its own port, run locust, judge the SLO
    (needs the local stack: `movierec infra up`). Exit status 0 pass, 1 SLO missed, 2
    could not run."""
    sys.exit(run_loadtest(out=out, redis_url=redis_url, kafka_bootstrap=kafka_bootstrap,
                          prefix=prefix, port=port, workers=workers, world_users=world_users,
                          world_movies=world_movies, users=users, duration=duration,
                          wait_ms=wait_ms, slo_min_rps=slo_min_rps))


def run_loadtest(*, out: Path, redis_url: str, kafka_bootstrap: str, prefix: str, port: int,
                 workers: int, world_users: int, world_movies: int, users: int, duration: str,
                 wait_ms: str, slo_min_rps: str) -> int:
    """The run behind ``movierec loadtest``; its exit status."""
    registry = out / "registry"  # where staged_env points the service
    shutil.rmtree(registry, ignore_errors=True)
    spec = StageSpec(users=world_users, movies=world_movies)
    staged = stage(spec, redis_url=redis_url, prefix=prefix, registry_dir=registry,
                   progress=lambda s: print(f"loadtest: stage {s}", flush=True))
    env = staged_env(redis_url=redis_url, prefix=prefix, root=out,
                     kafka_bootstrap=kafka_bootstrap, served_topic="movierec.served.loadtest")
    service = ServiceProcess(port=port, env=env, log=out / "serve.log", workers=workers)
    try:
        service.start()
    except ServiceError as exc:
        print(f"loadtest: the service did not start ({exc}); log: {service.log}", file=sys.stderr)
        return 2
    print(f"loadtest: service ready at {service.url} (log {service.log})", flush=True)
    heavy = ",".join(map(str, staged.heavy_users))
    lo, hi = min(staged.known_users), max(staged.known_users)
    new_lo = staged.first_unknown_user
    os.environ["MOVIEREC_LOADTEST_WAIT_MS"] = wait_ms
    try:
        return run.main(["--url", service.url, "--users", str(users),
                         "--spawn-rate", str(users), "--duration", duration,
                         "--out", str(out), "--known-users", f"{lo}-{hi}",
                         "--heavy", heavy, "--new-users", f"{new_lo}-{new_lo + 10**6}",
                         "--slo-min-rps", slo_min_rps])
    finally:
        service.stop()


if __name__ == "__main__":
    loadtest()
