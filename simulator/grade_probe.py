"""The grader probe's adapters: read a Kafka topic, or probe a live service over HTTP.

Both feed ``simulator.grade.GradeAccumulator``, so a window of the Kafka log and a live
probe of N requests are graded by the same arithmetic. ``grade_topic`` reads a topic from
the beginning up to the end offsets seen at the start, without a consumer group and
without committing. ``probe_service`` plays the course's client: GET
``/recommend/<uid>`` with a client-side deadline, the body checked by
``simulator.course_client``, each outcome turned into the ``Recommendation`` event the
course's client would have logged. It cannot hang: every socket operation has a timeout,
reading a body is bounded by the request's time, and the whole run has a time budget.

The probe speaks HTTP through httpx, the project's one HTTP client library (issue #19;
docs/benchmarks.md, "HTTP client library"), synchronously: one client and one keep-alive connection a thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from urllib.parse import urlsplit

import httpx

from movierec.errors import MovierecError
from movierec.kafka_read import TopicReadError, read_once
from movierec.mlip_api import ExchangeTrace, is_stale
from movierec.wire import Recommendation
from simulator import course_client
from simulator.grade import (
    DEFAULT_DEADLINE_MS,
    DEFAULT_DOWN_THRESHOLD,
    GradeAccumulator,
)
from simulator.grade_report import GradeReport

MAX_BODY = 64 * 1024
"""Bytes of a /recommend body read at most; 20 ids take well under 6 KiB."""

TIMEOUT_MARGIN_S = 0.2
"""The socket waits this long past the deadline, so a late answer is measured as late."""


class GradeError(MovierecError):
    """The grader could not read its source (no broker, no such topic)."""


# -- Kafka -------------------------------------------------------------------------------


def grade_topic(
    bootstrap: str,
    topic: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    deadline_ms: int = DEFAULT_DEADLINE_MS,
    server: str | None = None,
    down_threshold: float = DEFAULT_DOWN_THRESHOLD,
    timeout_s: float = 600.0,
    idle_s: float = 30.0,
    since_ms: int | None = None,
) -> GradeReport:
    """Grade the recommendation lines of ``topic`` as they stand now.

    Reads every partition from its beginning to the end offset captured at the start;
    ``start``/``end`` (event time, end exclusive) and ``server`` select requests (the
    whole topic is still read: Kafka's record timestamps are not the lines' event times).
    ``timeout_s`` bounds the whole read, ``idle_s`` the wait for the next record; a read
    cut short says so in the report's notes. Raises ``GradeError`` without a broker or topic.

    ``since_ms`` (epoch ms of Kafka's record timestamps, i.e. when the lines were written)
    skips everything written before it: grading one live run of a long topic reads only
    that run's records.
    """
    from movierec.kafka_admin import broker_probe  # kafka-python: slow to import

    problem = broker_probe(bootstrap)
    if problem is not None:
        raise GradeError(problem)
    acc = GradeAccumulator(
        deadline_ms=deadline_ms, server=server, start=start, end=end, down_threshold=down_threshold
    )
    try:
        notes = read_once(bootstrap, topic, lambda value, _written_ms: acc.add_line(value),
                          client_id="movierec-grade",
                          timeout_s=timeout_s, idle_s=idle_s, since_ms=since_ms)
    except TopicReadError as exc:
        raise GradeError(str(exc)) from None
    return acc.report(notes=[f"source: kafka topic {topic} at {bootstrap}", *notes])


# -- live HTTP probe ---------------------------------------------------------------------


def probe_service(
    url_base: str,
    n_requests: int,
    *,
    user_ids: Sequence[int],
    deadline_ms: int = DEFAULT_DEADLINE_MS,
    concurrency: int = 8,
    time_budget_s: float = 300.0,
    down_threshold: float = DEFAULT_DOWN_THRESHOLD,
    timeout_margin_s: float = TIMEOUT_MARGIN_S,
) -> GradeReport:
    """Send ``n_requests`` GET ``{url_base}/recommend/<uid>`` (cycling ``user_ids``) from
    ``concurrency`` threads, one keep-alive connection each, and grade the answers.

    A request gets ``deadline_ms`` plus ``timeout_margin_s`` per socket operation: an
    answer after the deadline is late, none at all is a timeout. No new request starts
    after ``time_budget_s`` seconds; the report's notes say how many were sent.
    """
    if n_requests < 0 or concurrency < 1 or not user_ids:
        raise ValueError("need n_requests >= 0, concurrency >= 1 and some user_ids")
    parts = urlsplit(url_base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url_base!r}")
    acc = GradeAccumulator(deadline_ms=deadline_ms, down_threshold=down_threshold)
    lock = threading.Lock()
    jobs = iter(zip(range(n_requests), itertools.cycle(user_ids)))
    stop_at = time.monotonic() + time_budget_s
    sent = [0]

    def take() -> int | None:
        with lock:
            if time.monotonic() >= stop_at:
                return None
            job = next(jobs, None)
            sent[0] += job is not None
            return None if job is None else job[1]

    def record(event: Recommendation) -> None:
        with lock:
            acc.add(event)

    timeout_s = deadline_ms / 1000 + timeout_margin_s
    client = _Client(url_base.rstrip("/"), parts.hostname, parts.port or _PORTS[parts.scheme],
                     deadline_ms=deadline_ms, timeout_s=timeout_s)
    workers = [
        threading.Thread(target=client.run, args=(take, record), name=f"grade-probe-{i}")
        for i in range(min(concurrency, max(n_requests, 1)))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    notes = [f"source: live probe of {url_base}, {sent[0]} of {n_requests} requests sent"]
    if sent[0] < n_requests:
        notes.append(f"incomplete: time budget of {time_budget_s:g} s reached")
    return acc.report(notes=notes)


_PORTS = {"http": 80, "https": 443}


def transport_error(exc: Exception) -> BaseException:
    """The exception ``course_client.failed`` should see for an HTTP library's failure:
    TimeoutError for httpx's timeouts ("timed out"), the OSError the library wrapped when
    it has one (ConnectionRefusedError first: "Connection refused"), else ``exc`` itself."""
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(str(exc) or type(exc).__name__)
    found: OSError | None = None
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:  # httpx -> httpcore -> OSError
        seen.add(id(link))
        if isinstance(link, ConnectionRefusedError):
            return link
        if isinstance(link, OSError) and found is None:
            found = link
        link = link.__cause__ or link.__context__
    return found or exc


class _Client:
    """What one probe thread needs to call the service and log each outcome as an event."""

    def __init__(self, url_base: str, host: str, port: int, *, deadline_ms: int,
                 timeout_s: float) -> None:
        self.url_base = url_base
        self.server = f"{host}:{port}"
        self.deadline_ms = deadline_ms
        self.timeout_s = timeout_s

    def new_client(self) -> httpx.Client:
        """A client holding at most one connection, kept alive between requests; every
        connect, write and read waits ``timeout_s`` at most. No proxy from the
        environment: the probe measures the service, as the course's client reaches it."""
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return httpx.Client(base_url=self.url_base, timeout=self.timeout_s, limits=one,
                            trust_env=False, headers={"Accept-Encoding": "identity"})

    def run(self, take: Callable[[], int | None], record: Callable[[Recommendation], None]) -> None:
        """Take user ids until none is left; each worker owns and closes one client."""
        with self.new_client() as client:
            while (uid := take()) is not None:
                record(self.call(client, uid))

    def call(self, client: httpx.Client, uid: int) -> Recommendation:
        """One request and the event the course's client would log for it. A request
        that failed on a reused connection the server had closed meanwhile is retried
        once, on a fresh one; the latency counts from the retry."""
        for attempt in (1, 2):
            began = time.perf_counter()
            trace = ExchangeTrace()
            try:
                status, body = self._get(client, uid, began, trace)
            except httpx.HTTPError as exc:
                if attempt == 1 and is_stale(exc, trace):
                    continue
                return self._event(uid, 0, (), self._error_text(transport_error(exc)), _millis(began))
            except TimeoutError as exc:  # the body was not read in time
                return self._event(uid, 0, (), self._error_text(exc), _millis(began))
            return self._answer(uid, began, status, body)
        raise AssertionError("unreachable: the second attempt returns")

    def _get(self, client: httpx.Client, uid: int, began: float,
             trace: ExchangeTrace) -> tuple[int, bytes]:
        """Status and body (at most ``MAX_BODY + 1`` bytes). Reading the body stops once
        the request has taken ``timeout_s``, so a server that trickles bytes holds the
        probe for at most one more read timeout. A body cut short closes the connection."""
        with client.stream("GET", f"/recommend/{uid}", extensions={"trace": trace}) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:
                    break
                if time.perf_counter() - began > self.timeout_s:
                    raise TimeoutError("body not read in time")
            return response.status_code, b"".join(chunks)[:MAX_BODY + 1]

    def _answer(self, uid: int, began: float, status: int, body: bytes) -> Recommendation:
        outcome = course_client.answered(status, body)  # an over-long body is malformed too
        error = "" if outcome.kind == "ok" else outcome.text
        return self._event(uid, outcome.status, outcome.items, error, _millis(began))

    def _error_text(self, exc: BaseException) -> str:
        return course_client.failed(exc, deadline_ms=self.deadline_ms, server=self.server).text

    def _event(
        self, uid: int, status: int, items: tuple[str, ...], error: str, millis: int
    ) -> Recommendation:
        return Recommendation(datetime.now(), uid, self.server, status, items, error, millis)


def _millis(began: float) -> int:
    return round((time.perf_counter() - began) * 1000)
