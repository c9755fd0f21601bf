"""What ``benchmarks/serve.py`` measures with, apart from driving the service: wrk's
report, nearest-rank percentiles, the think time that paces wrk to a target rate, the
stage profile from two reads of the service's /metrics, CPU time of processes from
/proc, and the client-side probe that asks /recommend over a fresh TCP connection per
request during the overload runs.

The parsers and the arithmetic are pure functions (tests/unit/test_bench_serve.py); the
readers of /proc, Redis and the network sit at the bottom, each a thin shell around them.
"""

from __future__ import annotations

import http.client
import math
import os
import random
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

# --- wrk ---------------------------------------------------------------------------------

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def wrk_ms(text: str) -> float:
    """A wrk duration (``850.00us``, ``1.23ms``, ``2.00s``, ``1.00m``) in ms."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()
    return float(value) * _UNITS_MS[unit]


def parse_wrk(out: str) -> dict:
    """The figures of one wrk run (``--latency`` report, one thread's stats), from its
    stdout: requests/s, requests completed, mean/p50/p99 latency (ms, of completed
    requests only), socket errors (their sum, and split by kind: ``connect`` failed,
    ``read``/``write`` errors on an open socket, ``timeout``: no answer within
    ``--timeout``), and answers with a status other than 2xx/3xx."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in ", out).group(1))
    mean = re.search(r"^\s*Latency\s+([\d.]+[a-z]+)\s", out, re.MULTILINE)
    lat = {p: wrk_ms(re.search(rf"\s{p}%\s+([\d.]+[a-z]+)", out).group(1)) for p in ("50", "99")}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    split = dict(zip(("connect_errors", "read_errors", "write_errors", "timeout_errors"),
                     map(int, errors.groups()) if errors else (0, 0, 0, 0), strict=True))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": lat["50"], "p99_ms": lat["99"],
            "socket_errors": sum(split.values()),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "requests": requests, "mean_ms": wrk_ms(mean.group(1)) if mean else lat["50"],
            **split}


def think_delay_ms(connections: int, target_rps: float, latency_ms: float) -> int:
    """wrk's per-connection pause (its Lua ``delay``, whole ms, at least 1) so that
    ``connections`` closed-loop connections, each waiting ``latency_ms`` for an answer
    and then the pause, send about ``target_rps``: connections / (delay + latency)."""
    return max(1, round(connections * 1000.0 / target_rps - latency_ms))


def probe_window(seconds: float) -> tuple[float, float]:
    """When, in seconds after wrk starts, the probe starts and stops: 2 s in (connections
    open and the queue full) and 1 s before wrk's end (still under load); for runs under
    4 s, the middle half."""
    if seconds >= 4:
        return 2.0, seconds - 1.0
    return seconds / 4, seconds * 3 / 4


# --- figures over repeats ------------------------------------------------------------------


def percentile(values: Iterable[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100): the smallest value with at
    least p% of the values at or below it; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def value_range(values: Iterable[float], digits: int = 2) -> list[float]:
    """[min, max] of ``values``, rounded: how far the repeats spread on a noisy box."""
    seq = list(values)
    return [round(min(seq), digits), round(max(seq), digits)]


def median_dicts(rows: Sequence[dict], digits: int = 3) -> dict:
    """Per key, the median over the rows that have a number there (keys in first-seen
    order; a key no row has a number for is left out)."""
    keys = dict.fromkeys(k for row in rows for k in row)
    out = {}
    for key in keys:
        values = [row[key] for row in rows
                  if isinstance(row.get(key), int | float) and not isinstance(row.get(key), bool)]
        if values:
            out[key] = round(statistics.median(values), digits)
    return out


# --- /metrics ---------------------------------------------------------------------------------


CACHE_COUNTER = "movierec_serve_answer_cache"
"""The service's answer-cache lookups by outcome (hit, miss, changed, expired)."""


def histogram_totals(text: str, name: str, label: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the histogram ``name`` per value of ``label``, from a Prometheus
    exposition (the service's /metrics, merged over its workers)."""
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            kind = s.name.removeprefix(name)
            if kind in ("_sum", "_count") and label in s.labels:
                pair = totals.setdefault(s.labels[label], [0.0, 0.0])
                pair[kind == "_count"] += s.value
    return {k: (v[0], v[1]) for k, v in totals.items()}


STAGE_HISTOGRAM = "movierec_serve_stage_seconds"
REQUEST_HISTOGRAM = "movierec_serve_request_seconds"


def stage_profile(before: str, after: str) -> dict:
    """Where the time of the /recommend requests between two /metrics reads went, in ms:
    ``request_ms_per_request`` (the service's own request time, ``REQUEST_HISTOGRAM``),
    and for each stage of ``STAGE_HISTOGRAM`` (whatever stage labels it has) its time per
    /recommend request (``stage_<s>_ms_per_request``: the stages' shares of a request, a
    stage a request skips counting 0) and per time it ran (``stage_<s>_ms_per_call``)."""
    def deltas(name: str, label: str) -> dict[str, tuple[float, float]]:
        then = histogram_totals(before, name, label)
        return {k: (s - then.get(k, (0.0, 0.0))[0], c - then.get(k, (0.0, 0.0))[1])
                for k, (s, c) in histogram_totals(after, name, label).items()}

    req_s, requests = deltas(REQUEST_HISTOGRAM, "endpoint").get("recommend", (0.0, 0.0))
    out: dict = {"recommend_requests": int(requests),
                 "request_ms_per_request": round(1e3 * req_s / requests, 4) if requests else None}
    for stage, (s, c) in sorted(deltas(STAGE_HISTOGRAM, "stage").items()):
        out[f"stage_{stage}_ms_per_request"] = round(1e3 * s / requests, 4) if requests else None
        out[f"stage_{stage}_ms_per_call"] = round(1e3 * s / c, 4) if c else None
    then = counter_totals(before, CACHE_COUNTER, "outcome")
    now = counter_totals(after, CACHE_COUNTER, "outcome")
    lookups = {k: v - then.get(k, 0.0) for k, v in now.items()}
    total = sum(lookups.values())
    # the answers the workers' answer caches served: what the full path's figures measured
    out["answer_cache_hit_share"] = round(lookups.get("hit", 0.0) / total, 4) if total else None
    return out


def counter_totals(text: str, name: str, label: str) -> dict[str, float]:
    """The counter ``name`` (without ``_total``) summed per value of ``label``, from a
    Prometheus exposition."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for s in family.samples:
                if s.name == name + "_total" and label in s.labels:
                    totals[s.labels[label]] = totals.get(s.labels[label], 0.0) + s.value
    return totals


# --- /proc ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """CPU time of one process from /proc/<pid>/stat, in clock ticks: its own (utime +
    stime, all threads) and that of its children it has waited for (cutime + cstime)."""

    pid: int
    ppid: int
    ticks: int
    children_ticks: int


def parse_proc_stat(text: str) -> ProcStat:
    """/proc/<pid>/stat's line. The command name (field 2) is in parentheses and may hold
    spaces and parentheses itself, so fields are counted from the last ')'."""
    pid = int(text[:text.index(" ")])
    rest = text[text.rindex(")") + 2:].split()  # rest[0] is field 3 (state)
    utime, stime, cutime, cstime = (int(rest[i]) for i in range(11, 15))  # fields 14-17
    return ProcStat(pid=pid, ppid=int(rest[1]), ticks=utime + stime, children_ticks=cutime + cstime)


def tree_ticks(parent: ProcStat, stats: Iterable[ProcStat]) -> int:
    """CPU ticks of ``parent``'s children: those alive (from ``stats``, every process) and
    those it has reaped (its children_ticks), so a worker that restarts between two reads
    still counts. The parent's own time (gunicorn's master: signals and heartbeats) is
    not in it."""
    return parent.children_ticks + sum(s.ticks for s in stats if s.ppid == parent.pid)


def parse_machine_busy(proc_stat: str) -> int:
    """Busy ticks of all CPUs from /proc/stat's ``cpu`` line: everything but idle and
    iowait (guest time is already inside user and nice)."""
    fields = [int(v) for v in proc_stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def is_kafka_broker(argv: Sequence[str]) -> bool:
    """Whether a command line is a Kafka broker's: a java process with ``kafka`` in it."""
    return bool(argv) and os.path.basename(argv[0]).startswith("java") and any(
        "kafka" in a.lower() for a in argv[1:])


def read_proc_stat(pid: int) -> ProcStat | None:
    try:
        return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None  # gone, or not ours to read


def all_proc_stats() -> list[ProcStat]:
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [s for s in map(read_proc_stat, pids) if s is not None]


def children_ticks(master_pid: int) -> int | None:
    """CPU ticks so far of a process's children (gunicorn's workers), see ``tree_ticks``;
    None when the process is gone. /proc/<pid>/task/<tid>/children needs a kernel option
    that is not always on, so this scans every /proc/<pid>/stat for the parent id."""
    master = read_proc_stat(master_pid)
    return None if master is None else tree_ticks(master, all_proc_stats())


def find_kafka_pid() -> int | None:
    """The local Kafka broker's pid, or None when no readable process looks like one."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if is_kafka_broker([a for a in argv if a]):
            return int(p.name)
    return None


def machine_busy_ticks() -> int:
    return parse_machine_busy(Path("/proc/stat").read_text())


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


# --- the client-side probe ---------------------------------------------------------------------

OUTCOMES = ("ok", "late", "refused", "error")


def classify(*, status: int | None, body_bytes: int, total_ms: float,
             error: BaseException | None, deadline_ms: float = 600.0) -> str:
    """One probe request as a client with a ``deadline_ms`` deadline sees it:
    ``ok``: a 200 with a body within the deadline; ``late``: no complete answer within it
    (a timeout, or any answer or refusal that came after it); ``refused``: a refusal
    within it (connection refused or reset, or a status other than 200, e.g. 503);
    ``error``: anything else (an empty 200, a malformed answer, a local socket error)."""
    if isinstance(error, TimeoutError):
        return "late"
    if error is not None and not isinstance(error, ConnectionError):
        return "error"
    if total_ms > deadline_ms:
        return "late"
    if error is not None:
        return "refused"
    if status == 200:
        return "ok" if body_bytes > 0 else "error"
    return "refused"


@dataclass(frozen=True)
class ProbeSample:
    outcome: str
    total_ms: float
    answered: bool  # a status or a refusal came back (not a timeout, not an error)
    detail: str  # the status, or the exception's type


def probe_once(host: str, port: int, path: str, deadline_s: float = 0.6) -> ProbeSample:
    """One GET over a fresh TCP connection, timed from before connect to the last byte of
    the answer; each socket wait is limited to what is left of the deadline. A failure's
    detail names the step it happened in: ``connect:TimeoutError`` is a SYN the full
    accept queue dropped (Linux retries it after 1 s), ``read:TimeoutError`` a request
    accepted but not answered in time."""
    t0 = time.perf_counter()
    status, body, error, step = None, b"", None, "connect"
    conn = http.client.HTTPConnection(host, port, timeout=deadline_s)
    try:
        conn.connect()
        sock = conn.sock
        sock.settimeout(max(1e-3, deadline_s - (time.perf_counter() - t0)))
        step = "send"
        conn.request("GET", path)
        step = "read"
        response = conn.getresponse()
        sock.settimeout(max(1e-3, deadline_s - (time.perf_counter() - t0)))
        body = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        error = exc
    finally:
        conn.close()
    total_ms = (time.perf_counter() - t0) * 1e3
    outcome = classify(status=status, body_bytes=len(body), total_ms=total_ms, error=error,
                       deadline_ms=deadline_s * 1e3)
    return ProbeSample(outcome=outcome, total_ms=total_ms,
                       answered=status is not None or isinstance(error, ConnectionError),
                       detail=str(status) if error is None else f"{step}:{type(error).__name__}")


def summarize_probe(samples: Sequence[ProbeSample]) -> dict:
    """Counts and shares per outcome; what the late answers, refusals and errors were
    (``late_by``: ``<step>:TimeoutError`` for none within the deadline, a status for one
    after it; see ``probe_once``); and the total time (ms, nearest rank) over the requests
    that got an answer or a refusal."""
    counts = Counter(s.outcome for s in samples)
    n = len(samples)
    out: dict = {"requests": n}
    out.update({o: counts[o] for o in OUTCOMES})
    out.update({f"{o}_share": round(counts[o] / n, 4) if n else None for o in OUTCOMES})
    answered = [s.total_ms for s in samples if s.answered]
    for name, p in (("p50", 50), ("p99", 99), ("max", 100)):
        value = percentile(answered, p)
        out[f"{name}_ms"] = None if value is None else round(value, 2)
    out["late_by"] = dict(Counter(s.detail for s in samples if s.outcome == "late"))
    out["refused_by"] = dict(Counter(s.detail for s in samples if s.outcome == "refused"))
    out["error_by"] = dict(Counter(s.detail for s in samples if s.outcome == "error"))
    return out


class Probe:
    """``threads`` threads, each asking ``GET /recommend/<id>`` (ids drawn at random from
    ``ids``) one after another, each over a fresh TCP connection, until ``stop``: the
    latency a client that connects per request sees while wrk holds the queue."""

    def __init__(self, host: str, port: int, ids: Sequence[str], *, threads: int = 4,
                 deadline_s: float = 0.6, seed: int = 0) -> None:
        self.host, self.port, self.ids, self.deadline_s = host, port, list(ids), deadline_s
        self._stop = threading.Event()
        self._samples: list[ProbeSample] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(random.Random(seed + i),),
                                          name=f"probe-{i}", daemon=True) for i in range(threads)]

    def _run(self, rnd: random.Random) -> None:
        while not self._stop.is_set():
            sample = probe_once(self.host, self.port, f"/recommend/{rnd.choice(self.ids)}",
                                self.deadline_s)
            with self._lock:
                self._samples.append(sample)

    def start(self) -> Probe:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[ProbeSample]:
        """Stop asking; the requests in flight finish (at most about two deadlines)."""
        self._stop.set()
        for t in self._threads:
            t.join()
        with self._lock:
            return list(self._samples)


# --- the service's counters and CPU per request ------------------------------------------------


def shed_totals(text: str) -> tuple[float, float]:
    """(/recommend answers, of which shed) so far, from one read of the service's /metrics
    (merged over workers): ``movierec_serve_requests_total{endpoint="recommend"}`` and
    ``movierec_serve_fallbacks_total{reason="shed"}``."""
    answered = shed = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "movierec_serve_requests_total" and s.labels.get("endpoint") == "recommend":
                answered += s.value
            elif s.name == "movierec_serve_fallbacks_total" and s.labels.get("reason") == "shed":
                shed += s.value
    return answered, shed


def shed_share(answered: float, shed: float) -> dict:
    """``shed`` of ``answered`` /recommend answers, and their share."""
    return {"shed": int(shed), "shed_share": round(shed / max(answered, 1.0), 4)}


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict:
    """CPU ms per request of each part read in both ``before`` and ``after`` (CPU seconds
    so far, by part), and ``cpu_total_ms_per_request`` over all parts but ``machine``
    (every CPU's busy time, whoever used it: the parts' total against it shows how much
    went elsewhere)."""
    if requests <= 0:
        return {}
    out = {f"cpu_{k}_ms_per_request": round((after[k] - before[k]) * 1e3 / requests, 4)
           for k in after if k in before}
    parts = [k for k in after if k in before and k != "machine"]
    out["cpu_total_ms_per_request"] = round(
        sum(after[k] - before[k] for k in parts) * 1e3 / requests, 4)
    return out


# --- options -----------------------------------------------------------------------------------

PHASES = ("saturate", "load80", "demo", "training", "overload")
NEEDS_SATURATE = ("load80", "training")


def parse_phases(text: str) -> tuple[str, ...]:
    """``--phases``: a comma list of ``PHASES``, in run order. load80 and training pace
    wrk from the saturated rate, so they need saturate; ValueError says what is wrong."""
    chosen = {p.strip() for p in text.split(",") if p.strip()}
    unknown = sorted(chosen - set(PHASES))
    if unknown:
        raise ValueError(f"unknown phases {unknown}: choose from {', '.join(PHASES)}")
    if not chosen:
        raise ValueError("no phase chosen")
    orphans = [p for p in NEEDS_SATURATE if p in chosen and "saturate" not in chosen]
    if orphans:
        raise ValueError(f"{' and '.join(orphans)} need the saturated rate: add saturate to --phases")
    return tuple(p for p in PHASES if p in chosen)


def parse_counts(text: str) -> list[int]:
    """A comma list of positive whole numbers (``--overload-connections 256,1024``)."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise ValueError(f"expected positive whole numbers, got {text!r}")
    return values
