"""Benchmark: /recommend on the full path against a bare endpoint, measured by wrk.

Target (issue #6): >= 3,000 requests/s with p99 <= 15 ms and 0 errors on the full path
(Redis read, fold-in, A/B routing, telemetry to Kafka and Redis); p99 < 50 ms while a
training runs on the same box; p99 under the 600 ms deadline at 2x the sustainable rate
with the excess shed; throughput reported as a ratio against a bare endpoint (Flask under
the same gunicorn settings, returning a constant string) measured in the same run. Every
full-path run also reports how many /recommend answers were shed and their share (the
service's ``movierec_serve_fallbacks_total{reason="shed"}`` before and after).

A demo-load phase then measures the full path at the demo's live rate (40 requests/s
from 4 connections), where the p99 target is 15 ms.

Each repeat runs wrk against the bare endpoint and then the full service (alternating,
so both see the same machine noise); figures are medians over the repeats. The mix is
85% known users (ids with history in Redis) and 15% never-seen ids (cold start).

Needs `movierec infra up` (Redis and Kafka) and wrk (`make system`). Writes Redis keys
under the prefix ``bench-serve`` and a temporary registry.

    python benchmarks/serve.py [--connections 16] [--seconds 15] [--repeats 3] [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import add_output_args, emit
from load_tests.server import ServiceProcess, staged_env
from load_tests.stage import StageSpec, stage
from recommender.serving.settings import ServeSettings

BARE_APP = '''
from flask import Flask, Response
app = Flask(__name__)
BODY = ",".join(f"movie+{i}+2000" for i in range(20))

@app.get("/recommend/<raw>")
def recommend(raw):
    return Response(BODY, content_type="text/plain; charset=utf-8")
'''

LUA = '''
users = {%s}
i = math.random(#users)
request = function()
  i = i %% #users + 1
  return wrk.format("GET", "/recommend/" .. users[i])
end
%s
'''
DELAY = "delay = function() return %d end"

TRAIN = '''
import numpy as np, scipy.sparse as sp, time
from implicit.cpu.als import AlternatingLeastSquares
rng = np.random.default_rng(0)
n_users, n_items, nnz = 300_000, 27_000, 10_000_000
m = sp.csr_matrix((rng.random(nnz, dtype=np.float32) + 1, (rng.integers(0, n_users, nnz),
                   rng.integers(0, n_items, nnz))), shape=(n_users, n_items))
end = time.time() + %f
while time.time() < end:
    model = AlternatingLeastSquares(factors=64, iterations=2, num_threads=0, random_state=0)
    model.fit(m, show_progress=False)
'''


def wrk(url: str, script: Path, *, connections: int, seconds: int, timeout_s: int = 2) -> dict:
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
                          "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"],
            "socket_errors": sum(map(int, errors.groups())) if errors else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wait_answering(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def shed_counts(url: str) -> tuple[float, float]:
    """(/recommend answers, of which shed) so far, from one read of the service's /metrics
    (merged over workers)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    answered = shed = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "movierec_serve_requests_total" and s.labels.get("endpoint") == "recommend":
                answered += s.value
            elif s.name == "movierec_serve_fallbacks_total" and s.labels.get("reason") == "shed":
                shed += s.value
    return answered, shed


def shed_since(url: str, start: tuple[float, float]) -> dict:
    """Answers shed since ``start`` (``shed_counts`` then) and their share: a run whose
    throughput counts many shed answers measured shedding, not the full path."""
    answered, shed = (now - then for now, then in zip(shed_counts(url), start, strict=True))
    return {"shed": int(shed), "shed_share": round(shed / max(answered, 1.0), 4)}


def lua(ids: list[str], path: Path, delay_ms: int = 0) -> Path:
    path.write_text(LUA % (",".join(f'"{i}"' for i in ids), DELAY % delay_ms if delay_ms else ""))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("MOVIEREC_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--kafka-bootstrap",
                        default=os.environ.get("MOVIEREC_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--world-users", type=int, default=20_000)
    parser.add_argument("--champion", default="als", choices=("als", "hybrid"),
                        help="the model the service serves")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--demo-rate", type=float, default=40.0,
                        help="requests/s of the demo's live stage, for the demo-load phase")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="sync", choices=("sync", "gthread"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shed-ms", type=float, default=None,
                        help="MOVIEREC_SERVE_SHED_MS of the service (default: its own; 0: no shedding)")
    parser.add_argument("--ports", default="18182,18183", help="full service, bare endpoint")
    add_output_args(parser)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    staged = stage(StageSpec(users=args.world_users, champion=args.champion), redis_url=args.redis_url,
                   prefix="bench-serve",
                   registry_dir=tmp / "registry", progress=lambda s: print(f"stage: {s}", flush=True))
    rnd = random.Random(1)
    known = rnd.sample(staged.known_users, min(5000, len(staged.known_users)))
    new = [str(staged.first_unknown_user + rnd.randrange(10**6)) for _ in range(len(known) * 15 // 85)]
    ids = [str(u) for u in known] + new
    rnd.shuffle(ids)
    script = lua(ids, tmp / "mix.lua")
    (tmp / "bare_app.py").write_text(BARE_APP)

    full_port, bare_port = (int(p) for p in args.ports.split(","))
    env = staged_env(redis_url=args.redis_url, prefix="bench-serve", root=tmp,
                     kafka_bootstrap=args.kafka_bootstrap, served_topic="movierec.served.bench",
                     MOVIEREC_SERVE_WORKER_CLASS=args.worker_class,
                     MOVIEREC_SERVE_THREADS=str(args.threads))
    if args.shed_ms is not None:
        env["MOVIEREC_SERVE_SHED_MS"] = str(args.shed_ms)
    shed_ms = float(env.get("MOVIEREC_SERVE_SHED_MS",
                            os.environ.get("MOVIEREC_SERVE_SHED_MS", ServeSettings.serve_shed_ms)))
    service = ServiceProcess(port=full_port, env=env, log=tmp / "serve.log", workers=args.workers).start()
    bare = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-w", str(args.workers),
                             "-k", args.worker_class, "--threads", str(args.threads),
                             "-b", f"127.0.0.1:{bare_port}", "--chdir", str(tmp), "bare_app:app"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_answering(f"http://127.0.0.1:{bare_port}/recommend/1")
    result: dict = {"world_users": args.world_users, "movies": StageSpec.movies,
                    "connections": args.connections, "seconds": args.seconds, "repeats": args.repeats,
                    "champion": args.champion,
                    "workers": args.workers, "worker_class": args.worker_class, "threads": args.threads,
                    "shed_ms": shed_ms}
    try:
        runs: dict[str, list[dict]] = {"bare": [], "full": []}
        start = shed_counts(service.url)
        for r in range(args.repeats):
            for name, port in (("bare", bare_port), ("full", full_port)):
                runs[name].append(wrk(f"http://127.0.0.1:{port}", script,
                                      connections=args.connections, seconds=args.seconds))
                print(f"repeat {r + 1} {name}: {runs[name][-1]}", flush=True)
        for name, rows in runs.items():
            for key in ("rps", "p50_ms", "p99_ms"):
                result[f"{name}_{key}"] = round(statistics.median(row[key] for row in rows), 2)
            result[f"{name}_errors"] = sum(row["socket_errors"] + row["non_2xx"] for row in rows)
        result["full_to_bare_ratio"] = round(result["full_rps"] / result["bare_rps"], 3)
        result.update({f"full_{k}": v for k, v in shed_since(service.url, start).items()})

        # The demo's load: its live rate (MOVIEREC_DEMO_LIVE_RATE, 40 requests/s) from 4
        # connections, each pausing 4 / rate s between requests.
        demo = wrk(f"http://127.0.0.1:{full_port}",
                   lua(ids, tmp / "demo.lua", delay_ms=int(4 * 1000 / args.demo_rate)),
                   connections=4, seconds=args.seconds)
        result.update({f"demo_load_{k}": v for k, v in demo.items()})

        # A training on the same box: the full path at half its sustainable rate.
        paced = lua(ids, tmp / "paced.lua",
                    delay_ms=max(1, int(2 * args.connections * 1000 / result["full_rps"])))
        trainer = subprocess.Popen([sys.executable, "-c", TRAIN % (args.seconds + 40)])
        time.sleep(25)  # the matrix is built; ALS iterations are running
        start = shed_counts(service.url)
        under_training = wrk(f"http://127.0.0.1:{full_port}", paced, connections=args.connections,
                             seconds=args.seconds)
        trainer.kill()
        trainer.wait()
        under_training.update(shed_since(service.url, start))
        result.update({f"training_{k}": v for k, v in under_training.items()})

        # Overload: many more connections than the workers can serve; what was shed.
        start = shed_counts(service.url)
        overload = wrk(f"http://127.0.0.1:{full_port}", script, connections=args.connections * 16,
                       seconds=args.seconds)
        overload.update(shed_since(service.url, start))
        result.update({f"overload_{k}": v for k, v in overload.items()})
    finally:
        service.stop()
        bare.terminate()
        bare.wait()
    emit(result, args)


if __name__ == "__main__":
    main()
