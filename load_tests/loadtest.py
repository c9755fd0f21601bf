"""``make loadtest``: stage a world, start the real service, run locust, judge the SLO.

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

import argparse
import os
import shutil
import sys
from pathlib import Path

from load_tests import run
from load_tests.server import ServiceError, ServiceProcess, staged_env
from load_tests.stage import StageSpec, stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("var/loadtest"))
    parser.add_argument("--redis-url", default=os.environ.get("MOVIEREC_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--kafka-bootstrap",
                        default=os.environ.get("MOVIEREC_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--prefix", default="loadtest")
    parser.add_argument("--port", type=int, default=18082)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--world-users", type=int, default=StageSpec.users)
    parser.add_argument("--world-movies", type=int, default=StageSpec.movies)
    parser.add_argument("--users", type=int, default=40, help="concurrent locust users")
    parser.add_argument("--duration", default="60s")
    parser.add_argument("--wait-ms", default="50-150",
                        help="think time of each locust user, lo-hi ms (an open-ish load below "
                             "saturation; 0-0 makes every user a closed loop at full speed)")
    parser.add_argument("--slo-min-rps", default="100",
                        help="what one locust process can drive here (see the module doc)")
    args = parser.parse_args(argv)

    registry = args.out / "registry"  # where staged_env points the service
    shutil.rmtree(registry, ignore_errors=True)
    spec = StageSpec(users=args.world_users, movies=args.world_movies)
    staged = stage(spec, redis_url=args.redis_url, prefix=args.prefix, registry_dir=registry,
                   progress=lambda s: print(f"loadtest: stage {s}", flush=True))
    env = staged_env(redis_url=args.redis_url, prefix=args.prefix, root=args.out,
                     kafka_bootstrap=args.kafka_bootstrap, served_topic="movierec.served.loadtest")
    service = ServiceProcess(port=args.port, env=env, log=args.out / "serve.log", workers=args.workers)
    try:
        service.start()
    except ServiceError as exc:
        print(f"loadtest: the service did not start ({exc}); log: {service.log}", file=sys.stderr)
        return 2
    print(f"loadtest: service ready at {service.url} (log {service.log})", flush=True)
    heavy = ",".join(map(str, staged.heavy_users))
    lo, hi = min(staged.known_users), max(staged.known_users)
    new_lo = staged.first_unknown_user
    os.environ["MOVIEREC_LOADTEST_WAIT_MS"] = args.wait_ms
    try:
        return run.main(["--url", service.url, "--users", str(args.users),
                         "--spawn-rate", str(args.users), "--duration", args.duration,
                         "--out", str(args.out), "--known-users", f"{lo}-{hi}",
                         "--heavy", heavy, "--new-users", f"{new_lo}-{new_lo + 10**6}",
                         "--slo-min-rps", args.slo_min_rps])
    finally:
        service.stop()


if __name__ == "__main__":
    sys.exit(main())
