"""Run the locust scenarios against a service and judge the SLO: one command, stops itself.

``python -m load_tests.run --url http://127.0.0.1:8082 --users 50 --spawn-rate 50
--duration 30s --out var/loadtest [--slo-p99-ms 15 ...]``

1. ``GET <url>/health`` must answer 200 within ``--health-timeout-s`` (5 s), else exit 2;
2. scrape ``<url>/metrics`` (the service's fallback counters, answers and response-time
   histogram);
3. run ``locust -f load_tests/locustfile.py --headless --csv <out>/locust`` in a
   subprocess of its own session, killed (with any ``--processes`` workers) past a hard
   timeout of the run time plus the ramp-up plus a margin;
4. scrape /metrics again: the change per reason is the service's count of degraded
   answers over the run (all of its traffic, not only ours), and the change of the
   others is the run as the service's dashboard shows it (``service_view``: the rate and
   the p50/p95/p99 its panels compute), reported beside locust's own figures;
5. judge locust's CSV (``load_tests.slo``), write ``<out>/slo-report.md`` and
   ``<out>/slo-report.json``, print the markdown.

Exit status: 0 when every check passed, 1 when one failed, 2 when the test could not run
(service down, locust failed or overran). Locust's own output goes to
``<out>/locust.log``. The scenario's ``MOVIEREC_LOADTEST_*`` variables pass through;
``--known-users``, ``--heavy``, ``--new-users`` and ``--slo-deadline-ms`` set them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from load_tests.locust_csv import load_locust_csv
from load_tests.service_view import service_view
from load_tests.slo import LoadTestError, Slo, judge

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
FALLBACKS_METRIC = "movierec_serve_fallbacks_total"
STARTUP_MARGIN_S = 30.0
"""Allowed on top of run time and ramp-up for locust to start, stop and write its CSV."""
STOP_TIMEOUT_S = 5.0
"""Locust's ``--stop-timeout``: users finish their task (a burst included) before stop."""

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> float:
    """Seconds of a locust run time: "90", "30s", "2m", "1h30m" (> 0)."""
    text = text.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(text)
        if match is None or not any(match.groups()):
            raise LoadTestError(f"duration must look like 90, 30s, 2m or 1h30m, got {text!r}")
        h, m, s = (int(g or 0) for g in match.groups())
        seconds = float(h * 3600 + m * 60 + s)
    if seconds <= 0:
        raise LoadTestError(f"duration must be positive, got {text!r}")
    return seconds


def fallback_counts(metrics_text: str) -> dict[str, float]:
    """``movierec_serve_fallbacks_total`` by reason from a Prometheus text exposition
    (samples summed per reason, so a merged multi-worker exposition reads right)."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == FALLBACKS_METRIC:
                reason = sample.labels.get("reason", "")
                counts[reason] = counts.get(reason, 0.0) + sample.value
    return counts


def counts_change(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Per reason, ``after - before`` (a reason first seen after counts from 0)."""
    return {r: after[r] - before.get(r, 0.0) for r in sorted(after)}


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # our URL
        return response.status, response.read().decode("utf-8", "replace")


def wait_healthy(url: str, timeout_s: float) -> None:
    """Return once ``<url>/health`` answers 200; ``LoadTestError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            status, _ = _get(f"{url}/health", timeout_s=max(0.2, min(1.0, timeout_s)))
            if status == 200:
                return
            last = f"status {status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}"
        except (OSError, ValueError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            raise LoadTestError(f"{url}/health did not answer 200 within {timeout_s:g} s "
                                f"({last}); is the service running?")
        time.sleep(0.2)


def scrape_metrics(url: str) -> tuple[str, float] | None:
    """The service's /metrics now and when it was read (``time.monotonic()``), or None
    when it cannot be read."""
    try:
        status, text = _get(f"{url}/metrics", timeout_s=2.0)
    except (OSError, ValueError):
        return None
    return (text, time.monotonic()) if status == 200 else None


def locust_command(url: str, *, users: int, spawn_rate: float, duration: str,
                   processes: int, csv_prefix: Path) -> list[str]:
    """The locust command line of a headless run writing ``<csv_prefix>_*.csv``."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "--host", url, "--users", str(users), "--spawn-rate", f"{spawn_rate:g}",
           "--run-time", duration, "--csv", str(csv_prefix), "--only-summary",
           "--stop-timeout", f"{STOP_TIMEOUT_S:g}", "--loglevel", "WARNING"]
    if processes != 1:
        cmd += ["--processes", str(processes)]
    return cmd


def run_locust(cmd: Sequence[str], *, env: Mapping[str, str], log: Path,
               timeout_s: float) -> int:
    """Run locust to completion in its own session, output to ``log``; past
    ``timeout_s`` the whole session (master and forked workers) is killed and
    ``LoadTestError`` raised. Returns locust's exit status."""
    if importlib.util.find_spec("locust") is None:
        raise LoadTestError("locust is not installed: pip install 'movierec[load]'")
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(list(cmd), env=dict(env), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we created: locust and its workers
            proc.wait()
            raise LoadTestError(f"locust still running after {timeout_s:.0f} s; killed "
                                f"(see {log})") from None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def build_parser() -> argparse.ArgumentParser:
    d = Slo()
    p = argparse.ArgumentParser(prog="python -m load_tests.run", description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8082", help="the service's base URL")
    p.add_argument("--users", type=int, default=50, help="concurrent locust users")
    p.add_argument("--spawn-rate", type=float, default=50.0, help="users started per second")
    p.add_argument("--duration", default="30s", help="run time: 90, 30s, 2m, 1h30m")
    p.add_argument("--processes", type=int, default=1,
                   help="locust processes (-1: one per core); one is CPU-bound near 2-4k req/s")
    p.add_argument("--out", type=Path, default=Path("var/loadtest"), help="folder of the results")
    p.add_argument("--health-timeout-s", type=float, default=5.0)
    p.add_argument("--known-users", help="known ids 'lo-hi' (MOVIEREC_LOADTEST_USERS)")
    p.add_argument("--heavy", help="heavy ids '7,42' or a count (MOVIEREC_LOADTEST_HEAVY)")
    p.add_argument("--new-users", help="never-seen ids 'lo-hi' (MOVIEREC_LOADTEST_NEW)")
    p.add_argument("--slo-min-rps", type=float, default=d.min_rps)
    p.add_argument("--slo-p95-ms", type=float, default=d.p95_ms)
    p.add_argument("--slo-p99-ms", type=float, default=d.p99_ms)
    p.add_argument("--slo-deadline-ms", type=float, default=d.deadline_ms,
                   help="also the locustfile's per-request deadline")
    p.add_argument("--slo-max-error-rate", type=float, default=d.max_error_rate)
    p.add_argument("--slo-max-fallback-rate", type=float, default=d.max_fallback_rate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    slo = Slo(min_rps=args.slo_min_rps, p99_ms=args.slo_p99_ms, p95_ms=args.slo_p95_ms,
              deadline_ms=args.slo_deadline_ms, max_error_rate=args.slo_max_error_rate,
              max_fallback_rate=args.slo_max_fallback_rate)
    url = args.url.rstrip("/")
    env = dict(os.environ, MOVIEREC_LOADTEST_DEADLINE_MS=f"{slo.deadline_ms:g}")
    for option, name in (("known_users", "USERS"), ("heavy", "HEAVY"), ("new_users", "NEW")):
        if getattr(args, option) is not None:
            env[f"MOVIEREC_LOADTEST_{name}"] = getattr(args, option)
    try:
        run_s = parse_duration(args.duration)
        if args.users < 1 or args.spawn_rate <= 0:
            raise LoadTestError("--users must be >= 1 and --spawn-rate > 0")
        wait_healthy(url, args.health_timeout_s)
        args.out.mkdir(parents=True, exist_ok=True)
        prefix, log = args.out / "locust", args.out / "locust.log"
        before = scrape_metrics(url)
        status = run_locust(
            locust_command(url, users=args.users, spawn_rate=args.spawn_rate,
                           duration=args.duration, processes=args.processes, csv_prefix=prefix),
            env=env, log=log,
            timeout_s=run_s + args.users / args.spawn_rate + STOP_TIMEOUT_S + STARTUP_MARGIN_S)
        after = scrape_metrics(url)
        try:
            measured = load_locust_csv(prefix)
        except LoadTestError as exc:
            raise LoadTestError(f"locust exited {status} without usable stats ({exc}); "
                                f"its log ends:\n{_tail(log)}") from None
    except LoadTestError as exc:
        print(f"load test: {exc}", file=sys.stderr)
        return 2
    fallbacks = view = None
    if before is not None and after is not None:
        fallbacks = counts_change(fallback_counts(before[0]), fallback_counts(after[0]))
        view = service_view(before[0], after[0], after[1] - before[1])
    report = judge(measured, slo, service_fallbacks=fallbacks, service=view)
    markdown = report.to_markdown()
    (args.out / "slo-report.md").write_text(markdown, encoding="utf-8")
    (args.out / "slo-report.json").write_text(report.to_json(), encoding="utf-8")
    print(markdown, end="")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
