"""The locustfile, run for real (locust headless, in a subprocess) against fake services.

Locust is started the way users start it, by ``python -m load_tests.run``, so the run
script's health check, /metrics scrape, report files and exit status are covered too.
Two fakes, run side by side for 5 s to keep the file fast:

- a correct one: 200 with a valid list for every valid id (heavy ids answered degraded,
  ``X-Fallback: redis``), 400 with a reason for everything else. Every kind must be sent,
  with ids from its own configured set, and nothing may fail.
- a broken one: 200 (a valid list) to malformed ids, a list with spaces to new users, and
  heavy users answered after the deadline. Locust must count exactly those as failures,
  and nothing else (known users and absurd ids are still answered correctly).

Locust runs in a subprocess because importing it monkey-patches the standard library
through gevent, which must not happen inside pytest.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from load_tests.locust_csv import load_locust_csv
from load_tests.slo import FINAL_STATS_SUFFIX, KINDS, parse_request_name
from tests.unit.test_load_slo import HISTORY_COLUMNS, STATS_COLUMNS

KNOWN = (1, 1000)
HEAVY = (2001, 2002, 2003)  # outside KNOWN, so the fake can tell heavy requests apart
NEW = (5_000_000, 5_999_999)
MAX_ID = 9_999_999
DEADLINE_MS = 150
LIST = "the+matrix+1999,spider-man+3+2007,monsters_+inc.+2001"
MALFORMED_SENT = {"abc", "-1", "1.5", "%20", "123456789012345678901234567890", "", "%C2%B2",
                  "+7"}
ENV = {
    "MOVIEREC_LOADTEST_USERS": f"{KNOWN[0]}-{KNOWN[1]}",
    "MOVIEREC_LOADTEST_HEAVY": ",".join(map(str, HEAVY)),
    "MOVIEREC_LOADTEST_NEW": f"{NEW[0]}-{NEW[1]}",
    "MOVIEREC_LOADTEST_MAX_USER_ID": str(MAX_ID),
    "MOVIEREC_LOADTEST_WAIT_MS": "20-40",  # gentle: the machine has two shared cores
    "MOVIEREC_LOADTEST_BURST": "5",
    **{f"MOVIEREC_LOADTEST_WEIGHT_{k}": "1" for k in ("HEAVY", "KNOWN", "NEW", "INVALID", "BURST")},
}


@dataclass
class Fake:
    """What the fake service got (raw path segments) and how it misbehaves."""

    broken: bool
    raw_ids: list[str] = field(default_factory=list)
    degraded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, raw: str) -> tuple[int, str, dict[str, str]]:
        with self.lock:
            self.raw_ids.append(raw)
        valid = raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= MAX_ID
        if not valid:
            absurd = raw.isascii() and raw.isdigit() and len(raw) <= 19
            if self.broken and not absurd:  # the malformed ones, the 30-digit id included
                return 200, LIST, {}
            return 400, "user id must be a non-negative integer", {}
        user = int(raw)
        if user in HEAVY:
            if self.broken:
                time.sleep(2 * DEADLINE_MS / 1000)
            with self.lock:
                self.degraded += 1
            return 200, LIST, {"X-Fallback": "redis"}
        if self.broken and NEW[0] <= user <= NEW[1]:
            return 200, LIST.replace(",", ", "), {}
        return 200, LIST, {}


def _handler(fake: Fake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real service
        disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms)

        def do_GET(self) -> None:  # http.server's naming
            headers: dict[str, str] = {}
            if self.path.startswith("/recommend/"):
                status, body, headers = fake.answer(self.path[len("/recommend/"):])
            elif self.path == "/health":
                status, body = 200, "ok"
            elif self.path == "/metrics":
                status, body = 200, (  # what a few other metrics and ours look like
                    "# TYPE movierec_serve_requests_total counter\n"
                    'movierec_serve_requests_total{endpoint="recommend",status="200"} 5.0\n'
                    "# TYPE movierec_serve_fallbacks_total counter\n"
                    f'movierec_serve_fallbacks_total{{reason="redis"}} {fake.degraded}.0\n'
                    'movierec_serve_fallbacks_total{reason="budget"} 2.0\n')
            else:
                status, body = 404, "not found"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs when 20 users connect at once (1 s retry)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # locust resets its keep-alive connections at the end: not worth a traceback


@dataclass
class Run:
    """One ``load_tests.run`` against a fake: its folder, exit status and printout."""

    fake: Fake
    out: Path
    returncode: int
    output: str

    @property
    def prefix(self) -> Path:
        return self.out / "locust"

    def report(self) -> dict:
        return json.loads((self.out / "slo-report.json").read_text(encoding="utf-8"))

    def rows(self) -> dict[str, dict[str, str]]:
        """Rows of the final stats by name (locust's columns, written at quit)."""
        with open(f"{self.prefix}{FINAL_STATS_SUFFIX}", encoding="utf-8", newline="") as f:
            return {row["Name"]: row for row in csv.DictReader(f)}

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """kind -> (requests, failures), summed over its fallback rows."""
        out: dict[str, tuple[int, int]] = {}
        for name, row in self.rows().items():
            parsed = parse_request_name(name)
            if parsed:
                n, f = out.get(parsed[0], (0, 0))
                out[parsed[0]] = (n + int(row["Request Count"]), f + int(row["Failure Count"]))
        return out


def _run_command(url: str, out: Path) -> list[str]:
    """``load_tests.run`` for 5 s with 10 users and an SLO the fake can meet (bar errors)."""
    return [sys.executable, "-m", "load_tests.run", "--url", url, "--users", "10",
            "--spawn-rate", "10", "--duration", "5s", "--out", str(out),
            "--slo-deadline-ms", str(DEADLINE_MS), "--slo-min-rps", "1", "--slo-p95-ms",
            str(DEADLINE_MS), "--slo-p99-ms", str(DEADLINE_MS), "--slo-max-fallback-rate", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """``load_tests.run`` (so locust with the locustfile) for 5 s against the correct fake
    and the broken one, at the same time."""
    tmp = tmp_path_factory.mktemp("locust")
    servers, procs, fakes = {}, {}, {}
    try:
        for mode in ("good", "broken"):
            fakes[mode] = Fake(broken=mode == "broken")
            server = Server(("127.0.0.1", 0), _handler(fakes[mode]))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers[mode] = server
            procs[mode] = subprocess.Popen(
                _run_command(f"http://127.0.0.1:{server.server_port}", tmp / mode),
                env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True)
        outputs = {mode: proc.communicate(timeout=60)[0] for mode, proc in procs.items()}
        yield {mode: Run(fakes[mode], tmp / mode, procs[mode].returncode, outputs[mode])
               for mode in procs}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for server in servers.values():
            server.shutdown()
            server.server_close()


def test_every_kind_is_sent_and_nothing_fails_against_a_correct_service(runs: dict[str, Run]) -> None:
    run = runs["good"]
    kinds = run.by_kind()
    assert set(kinds) == set(KINDS), run.output
    assert all(n > 0 for n, _ in kinds.values()), kinds
    # equal weights (ENV) give each user class 2 of the 10 users, and heavy, known and new
    # users make one request per task with the same think time; the default weights
    # (20/50/15) would give known users several times the requests of new ones
    assert 0.6 < kinds["known"][0] / kinds["new"][0] < 1.6, kinds
    assert 0.6 < kinds["heavy"][0] / kinds["new"][0] < 1.6, kinds
    assert all(f == 0 for _, f in kinds.values()), run.output
    assert int(run.rows()["Aggregated"]["Failure Count"]) == 0
    assert run.returncode == 0, run.output  # every check of the lenient SLO passed
    assert run.output.startswith("# SLO report: PASS")
    assert run.report()["passed"] is True


def test_locust_writes_the_columns_the_slo_tests_assume(runs: dict[str, Run]) -> None:
    prefix = runs["good"].prefix
    for path, columns in ((f"{prefix}_stats.csv", STATS_COLUMNS),
                          (f"{prefix}{FINAL_STATS_SUFFIX}", STATS_COLUMNS),
                          (f"{prefix}_stats_history.csv", HISTORY_COLUMNS)):
        with open(path, encoding="utf-8", newline="") as f:
            assert next(csv.reader(f)) == columns, path


def test_ids_come_from_their_configured_sets(runs: dict[str, Run]) -> None:
    got = runs["good"].fake.raw_ids
    # every malformed segment was sent verbatim (no re-encoding of "%20", no dropped "")
    malformed = {r for r in got if not (r.isascii() and r.isdigit() and len(r) <= 19)}
    assert malformed == MALFORMED_SENT
    numeric = [int(r) for r in got if r not in malformed]
    heavy = [u for u in numeric if u in HEAVY]
    known = [u for u in numeric if KNOWN[0] <= u <= KNOWN[1]]
    new = [u for u in numeric if NEW[0] <= u <= NEW[1]]
    absurd = [u for u in numeric if u > MAX_ID]  # numeric, <= 19 digits, above the max
    # every numeric id belongs to exactly one configured set, and each set was used
    assert len(heavy) + len(known) + len(new) + len(absurd) == len(numeric)
    assert heavy and known and new and absurd


def test_degraded_answers_are_named_by_reason(runs: dict[str, Run]) -> None:
    rows = runs["good"].rows()
    # the fake degrades exactly the heavy users, so only they have a fallback row
    degraded = {n for n in rows if "fallback=" in n}
    assert degraded == {"/recommend/heavy fallback=redis"}
    assert "/recommend/heavy" not in rows
    measured = load_locust_csv(runs["good"].prefix)
    assert measured.fallbacks == {"redis": int(rows["/recommend/heavy fallback=redis"]["Request Count"])}
    assert measured.by_kind["heavy"].fallbacks == measured.by_kind["heavy"].requests > 0
    # the service's own count (from /metrics, before and after): what the fake degraded
    # during the run; locust may have missed answers in flight at the stop (one per user)
    service = runs["good"].report()["service_fallbacks"]
    assert service["budget"] == 0.0  # a counter that did not move
    assert measured.fallbacks["redis"] <= service["redis"] <= measured.fallbacks["redis"] + 10


def test_a_broken_service_fails_exactly_the_broken_kinds(runs: dict[str, Run]) -> None:
    run = runs["broken"]
    kinds = run.by_kind()
    assert set(kinds) == set(KINDS), run.output
    # 200 to a malformed id, spaces in the list, answers past the deadline: all failures
    for kind in ("malformed", "new", "heavy"):
        n, f = kinds[kind]
        assert n > 0 and f == n, (kind, kinds)
    # a late heavy answer is still named degraded: the header was there
    assert "/recommend/heavy fallback=redis" in run.rows()
    # correct answers stay successes
    for kind in ("known", "absurd"):
        assert kinds[kind][1] == 0, (kind, kinds)
    with open(f"{run.prefix}_failures.csv", encoding="utf-8", newline="") as f:
        errors = {row["Name"]: row["Error"] for row in csv.DictReader(f)}
    assert "expected 400" in errors["/recommend/malformed"]
    assert "malformed answer" in errors["/recommend/new"]
    assert "late" in errors["/recommend/heavy fallback=redis"]
    assert run.returncode == 1, run.output
    checks = {c["name"]: c["passed"] for c in run.report()["checks"]}
    assert checks["errors"] is False and checks["throughput"] is True


def test_run_exits_2_when_the_service_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "load_tests.run", "--url", f"http://127.0.0.1:{port}",
         "--health-timeout-s", "0.5", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert f"http://127.0.0.1:{port}/health did not answer 200" in proc.stderr
    assert time.monotonic() - started < 10  # it gives up instead of running locust
    assert not (tmp_path / "out").exists()
