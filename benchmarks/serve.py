"""Benchmark: /recommend on the full path against a bare endpoint, measured by wrk.

Targets (issue #22, on 2 cores, 2 sync workers): the full path (Redis read, fold-in, A/B
routing, telemetry to Kafka and Redis) serves at least 0.5 x the bare endpoint's
throughput (Flask under the same gunicorn settings, returning a constant string, measured
in the same run); at 16 connections paced to 80% of the saturated full rate, at most 1% of
the answers shed and p99 <= 15 ms; p99 < 50 ms while a training runs on the same box; at
256 and 1,024 connections every request answered within the 600 ms deadline as the client
measures it, or refused at once. (Issue #6's targets, kept in docs/benchmarks.md: 3,000
requests/s with p99 <= 15 ms and 0 errors; p99 under the deadline at overload.)

Phases (``--phases``, all by default; load80 and training need saturate's rate):

- saturate: each repeat runs wrk (16 connections, no pause) against the bare endpoint
  and then the full service, alternating so both see the same machine noise. Around each
  run a profile: CPU ms per request of the gunicorn workers, wrk, Redis (INFO cpu), the
  Kafka broker (when its process is found) and the whole machine; for the full path also
  the mean ms per request of the service's request time and of each stage of
  ``movierec_serve_stage_seconds`` (from /metrics before and after). Every full-path run
  reports how many /recommend answers were shed and their share (the service's
  ``movierec_serve_fallbacks_total{reason="shed"}`` before and after).
- load80: right after each repeat's full run, the full path at 80% of that run's rate
  from the same connections, each pausing between requests (wrk's Lua ``delay``). The
  pause comes from connections / (pause + latency) = target, the latency from a 3 s
  calibration run (at a pause from the saturated service time); the saturated run's own
  latency is mostly queueing, which a paced run does not have, and would leave it
  saturated.
- demo: the demo's live rate (40 requests/s from 4 connections), p99 target 15 ms.
- training: the full path paced at about half its rate while an ALS fit (all cores)
  runs beside it.
- overload: wrk at each of ``--overload-connections`` (256 and 1,024), wrk's timeout
  2 s, while a probe in this process (4 threads) asks /recommend over a fresh TCP
  connection per request, as a grader's client does, and times it from before connect
  to the last byte: ``ok`` (a 200 with a body within 600 ms), ``late`` (no complete
  answer within 600 ms), ``refused`` (refused, reset, or a non-200 status within 600 ms)
  or ``error``.

Figures are medians over the repeats, with [min, max] ranges (``*_range``) for the main
ones: the box is noisy. The mix is 85% known users (ids with history in Redis) and 15%
never-seen ids (cold start).

Needs `movierec infra up` (Redis and Kafka) and wrk (`make system`). Writes Redis keys
under the prefix ``bench-serve`` and a temporary registry.

    python benchmarks/serve.py [--connections 16] [--seconds 15] [--repeats 3]
        [--phases saturate,load80,demo,training,overload] [--overload-connections 256,1024]
        [--json] [--out out.json]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import add_output_args, emit
from benchmarks.serve_measure import (
    CLOCK_TICKS_PER_S,
    PHASES,
    Probe,
    children_ticks,
    cpu_per_request,
    find_kafka_pid,
    machine_busy_ticks,
    median_dicts,
    parse_counts,
    parse_phases,
    parse_wrk,
    probe_window,
    read_proc_stat,
    shed_share,
    shed_totals,
    stage_profile,
    summarize_probe,
    think_delay_ms,
    value_range,
)
from load_tests.server import ServiceProcess, staged_env
from load_tests.service_view import service_view
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

LOAD80_SHARE = 0.8
"""load80's target, as a share of the repeat's saturated full-path rate."""
CALIBRATION_S = 3
"""Seconds of load80's calibration run, which measures the latency of the paced path."""
PROVENANCE_TTL_DAYS = 0.01
"""The service's provenance TTL in the benchmark (14.4 minutes; 7 days by default)."""
DEADLINE_S = 0.6
"""The client's deadline for one /recommend answer (the grader's), for the probe."""
MAIN_FIGURES = ("rps", "p50_ms", "p99_ms")
DASHBOARD_FIGURES = ("dashboard_rps", "dashboard_p50_ms", "dashboard_p99_ms")
"""A run as the service's dashboard shows it (``dashboard``)."""


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def wrk_start(url: str, script: Path, *, connections: int, seconds: int,
              timeout_s: int = 2) -> subprocess.Popen:
    """wrk (1 thread, ``--latency``) running ``script`` against ``url``; ``wrk_finish``
    waits for it and reads its report."""
    return subprocess.Popen(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
                             "--timeout", f"{timeout_s:g}s", "--latency", "-s", str(script), url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wrk_finish(proc: subprocess.Popen, seconds: int) -> dict:
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, out, err)
    return parse_wrk(out)


def wrk(url: str, script: Path, *, connections: int, seconds: int, timeout_s: int = 2) -> dict:
    """One wrk run; its figures (``serve_measure.parse_wrk``)."""
    return wrk_finish(wrk_start(url, script, connections=connections, seconds=seconds,
                                timeout_s=timeout_s), seconds)


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


def metrics_text(url: str) -> str:
    """One read of the service's /metrics (merged over its workers)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def shed_counts(url: str) -> tuple[str, float]:
    """The service's /metrics (merged over workers) now, and when it was read
    (``time.monotonic()``): the start mark of ``shed_since``."""
    return metrics_text(url), time.monotonic()


def shed_since(url: str, start: tuple[str, float]) -> dict:
    """Answers shed since ``start`` (``shed_counts`` then) and their share: a run whose
    throughput counts many shed answers measured shedding, not the full path. Also the
    run as the service's dashboard shows it (``dashboard_*``: rate and response-time
    quantiles of /recommend, ``load_tests.service_view``)."""
    text, at = metrics_text(url), time.monotonic()
    answered, shed = (now - then for now, then in
                      zip(shed_totals(text), shed_totals(start[0]), strict=True))
    return {**shed_share(answered, shed), **dashboard(start[0], text, at - start[1])}


def dashboard(before: str, after: str, seconds: float) -> dict:
    """``dashboard_rps``, ``dashboard_p50_ms`` and ``dashboard_p99_ms`` of the window
    between two /metrics reads ``seconds`` apart: the dashboard's queries over it."""
    view = service_view(before, after, seconds).to_dict()
    return {f"dashboard_{k}": view[k] for k in ("requests", "rps", "p50_ms", "p99_ms")}


def lua(ids: list[str], path: Path, delay_ms: int = 0) -> Path:
    path.write_text(LUA % (",".join(f'"{i}"' for i in ids), DELAY % delay_ms if delay_ms else ""))
    return path


class CpuMeter:
    """CPU seconds so far of the processes a run involves: the children of a gunicorn
    master (its workers), wrk (this process's reaped children: getrusage), Redis (INFO
    cpu), the Kafka broker when found, and the machine's busy time."""

    def __init__(self, master_pid: int, redis_client: redis.Redis | None,
                 kafka_pid: int | None) -> None:
        self.master_pid, self.redis, self.kafka_pid = master_pid, redis_client, kafka_pid

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        workers = children_ticks(self.master_pid)
        if workers is not None:
            out["workers"] = workers / CLOCK_TICKS_PER_S
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["wrk"] = usage.ru_utime + usage.ru_stime
        if self.redis is not None:
            try:
                info = self.redis.info("cpu")
                out["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            except (redis.RedisError, KeyError):
                pass
        if self.kafka_pid is not None:
            kafka = read_proc_stat(self.kafka_pid)
            if kafka is not None:
                out["kafka"] = kafka.ticks / CLOCK_TICKS_PER_S
        out["machine"] = machine_busy_ticks() / CLOCK_TICKS_PER_S
        return out


def profiled_wrk(url: str, script: Path, meter: CpuMeter, *, connections: int, seconds: int,
                 service_url: str | None = None) -> tuple[dict, dict, tuple[float, float]]:
    """A saturated wrk run with its profile: CPU ms per request around it, and with
    ``service_url`` the stage profile from /metrics read before and after. Also the
    (answered, shed) /recommend deltas of the run ((0, 0) without ``service_url``). The
    CPU counters are read inside the /metrics reads, so a read's own cost is not in them."""
    before = metrics_text(service_url) if service_url else ""
    t0 = time.monotonic()
    cpu0 = meter.read()
    row = wrk(url, script, connections=connections, seconds=seconds)
    cpu1 = meter.read()
    t1 = time.monotonic()
    after = metrics_text(service_url) if service_url else ""
    profile = {"requests": row["requests"]}
    shed = (0.0, 0.0)
    if service_url:
        profile.update(stage_profile(before, after))
        row.update(dashboard(before, after, t1 - t0))
        shed = tuple(a - b for a, b in zip(shed_totals(after), shed_totals(before), strict=True))
    profile.update(cpu_per_request(cpu0, cpu1, row["requests"]))
    return row, profile, shed


def load80(url: str, ids: list[str], tmp: Path, repeat: int, full: dict, *, connections: int,
           seconds: int, workers: int) -> dict:
    """The full path at ``LOAD80_SHARE`` of ``full``'s rate (the repeat's saturated run)
    from ``connections`` paced connections: the pause from a calibration run's mean
    latency (see the module docstring), then the measured run with its shed answers."""
    target = LOAD80_SHARE * full["rps"]
    guess = think_delay_ms(connections, target, workers * 1000.0 / full["rps"])
    calibration = wrk(url, lua(ids, tmp / f"load80-cal-{repeat}.lua", guess),
                      connections=connections, seconds=min(CALIBRATION_S, seconds))
    delay = think_delay_ms(connections, target, calibration["mean_ms"])
    start = shed_counts(url)
    row = wrk(url, lua(ids, tmp / f"load80-{repeat}.lua", delay), connections=connections,
              seconds=seconds)
    row.update(shed_since(url, start))
    return {"target_rps": round(target, 1), "delay_ms": delay,
            "calibration_rps": calibration["rps"], "calibration_mean_ms": calibration["mean_ms"],
            **row}


def overload(url: str, port: int, script: Path, ids: list[str], *, connections: int,
             seconds: int, probe_threads: int) -> dict:
    """wrk at ``connections`` with the probe running inside its window
    (``probe_window``): wrk's figures, the shed answers, and the probe's (``probe_*``)."""
    start = shed_counts(url)
    proc = wrk_start(url, script, connections=connections, seconds=seconds, timeout_s=2)
    t0 = time.monotonic()
    begin, end = probe_window(seconds)
    try:
        time.sleep(max(0.0, t0 + begin - time.monotonic()))
        probe = Probe("127.0.0.1", port, ids, threads=probe_threads, deadline_s=DEADLINE_S,
                      seed=connections).start()
        time.sleep(max(0.0, t0 + end - time.monotonic()))
        samples = probe.stop()
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    row = wrk_finish(proc, seconds)
    row.update(shed_since(url, start))
    row.update({f"probe_{k}": v for k, v in summarize_probe(samples).items()})
    return row


def profile_table(full: dict, bare: dict) -> str:
    """The profiles as a markdown table: one row per figure, the full path and bare."""
    keys = list(dict.fromkeys([*full, *bare]))
    lines = ["| figure | full path | bare |", "|---|---:|---:|"]
    for key in keys:
        lines.append(f"| {key} | {full.get(key, '')} | {bare.get(key, '')} |")
    return "\n".join(lines)


def saturate(args: argparse.Namespace, result: dict, *, urls: dict[str, str], script: Path,
             meters: dict[str, CpuMeter], service_url: str, ids: list[str], tmp: Path,
             phases: tuple[str, ...]) -> None:
    """The saturate phase, and load80 after each repeat's full run when chosen."""
    runs: dict[str, list[dict]] = {"bare": [], "full": []}
    profiles: dict[str, list[dict]] = {"bare": [], "full": []}
    paced: list[dict] = []
    answered = shed = 0.0
    for r in range(args.repeats):
        for name in ("bare", "full"):
            row, profile, (a, s) = profiled_wrk(
                urls[name], script, meters[name], connections=args.connections,
                seconds=args.seconds, service_url=service_url if name == "full" else None)
            answered, shed = answered + a, shed + s
            runs[name].append(row)
            profiles[name].append(profile)
            print(f"repeat {r + 1} {name}: {row}", flush=True)
            print(f"repeat {r + 1} {name} profile: {profile}", flush=True)
        if "load80" in phases:
            paced.append(load80(urls["full"], ids, tmp, r + 1, runs["full"][-1],
                                connections=args.connections, seconds=args.seconds,
                                workers=args.workers))
            print(f"repeat {r + 1} load80: {paced[-1]}", flush=True)
    for name, rows in runs.items():
        for key in MAIN_FIGURES:
            result[f"{name}_{key}"] = round(statistics.median(row[key] for row in rows), 2)
        result[f"{name}_errors"] = sum(row["socket_errors"] + row["non_2xx"] for row in rows)
    result["full_to_bare_ratio"] = round(result["full_rps"] / result["bare_rps"], 3)
    # the median of the repeats' ratios: each repeat's pair shares the machine's noise
    result["full_to_bare_ratio_median"] = round(statistics.median(
        f["rps"] / b["rps"] for f, b in zip(runs["full"], runs["bare"], strict=True)), 3)
    for key in DASHBOARD_FIGURES:  # the same full runs as the service's dashboard shows them
        result[f"full_{key}"] = _median(row.get(key) for row in runs["full"])
    result.update({f"full_{k}": v for k, v in shed_share(answered, shed).items()})
    for name, rows in runs.items():
        for key in MAIN_FIGURES:
            result[f"{name}_{key}_range"] = value_range(row[key] for row in rows)
    result["full_to_bare_ratio_range"] = value_range(
        (f["rps"] / b["rps"] for f, b in zip(runs["full"], runs["bare"], strict=True)), 3)
    result["profile_full"] = median_dicts(profiles["full"])
    result["profile_bare"] = median_dicts(profiles["bare"])
    if paced:
        for key in ("rps", "target_rps", "delay_ms", *MAIN_FIGURES[1:], "shed_share"):
            result[f"load80_{key}"] = round(statistics.median(row[key] for row in paced), 4)
        for key in DASHBOARD_FIGURES:
            result[f"load80_{key}"] = _median(row.get(key) for row in paced)
        result["load80_shed"] = sum(row["shed"] for row in paced)
        result["load80_errors"] = sum(row["socket_errors"] + row["non_2xx"] for row in paced)
        for key in ("rps", "p99_ms", "shed_share"):
            result[f"load80_{key}_range"] = value_range((row[key] for row in paced), 4)
        result["load80_repeats"] = [
            {k: row[k] for k in ("target_rps", "delay_ms", "calibration_rps", "rps", "p50_ms",
                                 "p99_ms", "shed_share", "socket_errors", "non_2xx")}
            for row in paced]


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
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="comma list of phases to run, in this order: " + ", ".join(PHASES)
                        + " (load80 and training need saturate)")
    parser.add_argument("--overload-connections", default="256,1024",
                        help="wrk connections of each overload run (the overload_* keys are the first's)")
    parser.add_argument("--probe-threads", type=int, default=4,
                        help="threads of the client-side probe during overload runs")
    add_output_args(parser)
    args = parser.parse_args()
    try:
        phases = parse_phases(args.phases)
        overload_connections = parse_counts(args.overload_connections)
    except ValueError as exc:
        parser.error(str(exc))

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
                     MOVIEREC_SERVE_THREADS=str(args.threads),
                     # each answer's provenance record costs the same at any TTL; the short one
                     # keeps a run's millions of them from staying in Redis for days, where
                     # the AOF rewrites of a multi-GB dataset (fork, 30 s) disturbed later runs
                     MOVIEREC_PROVENANCE_TTL_DAYS=str(PROVENANCE_TTL_DAYS))
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
                    "shed_ms": shed_ms, "phases": list(phases),
                    "overload_connections": overload_connections}
    redis_client = redis.Redis.from_url(args.redis_url)
    kafka_pid = find_kafka_pid()
    if kafka_pid is None:
        print("no Kafka broker process found: its CPU is left out of the profile", flush=True)
    try:
        if "saturate" in phases:
            meters = {"full": CpuMeter(service.proc.pid, redis_client, kafka_pid),
                      "bare": CpuMeter(bare.pid, redis_client, kafka_pid)}
            saturate(args, result, urls={"full": service.url, "bare": f"http://127.0.0.1:{bare_port}"},
                     script=script, meters=meters, service_url=service.url, ids=ids, tmp=tmp,
                     phases=phases)

        if "demo" in phases:
            # The demo's load: its live rate (MOVIEREC_DEMO_LIVE_RATE, 40 requests/s) from 4
            # connections, each pausing 4 / rate s between requests.
            start = shed_counts(service.url)
            demo = wrk(f"http://127.0.0.1:{full_port}",
                       lua(ids, tmp / "demo.lua", delay_ms=int(4 * 1000 / args.demo_rate)),
                       connections=4, seconds=args.seconds)
            demo.update(shed_since(service.url, start))
            result.update({f"demo_load_{k}": v for k, v in demo.items()})

        if "training" in phases:
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

        if "overload" in phases:
            # Overload: many more connections than the workers can serve; what was shed,
            # and what a client connecting per request saw.
            for i, n in enumerate(overload_connections):
                row = overload(service.url, full_port, script, ids, connections=n,
                               seconds=args.seconds, probe_threads=args.probe_threads)
                print(f"overload {n}: {row}", flush=True)
                if i == 0:
                    result.update({f"overload_{k}": v for k, v in row.items()
                                   if not k.startswith("probe_")})
                result.update({f"overload_{n}_{k}": v for k, v in row.items()})
    finally:
        service.stop()
        bare.terminate()
        bare.wait()
        redis_client.close()
    emit(result, args)
    if not args.json and "profile_full" in result:
        print()
        print(profile_table(result["profile_full"], result["profile_bare"]))


if __name__ == "__main__":
    main()
