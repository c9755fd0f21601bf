"""The grader probe's adapters: read a Kafka topic, or probe a live service over HTTP.

Both feed ``simulator.grade.GradeAccumulator``, so a window of the Kafka log and a live
probe of N requests are graded by the same arithmetic. ``grade_topic`` reads a topic from
the beginning up to the end offsets seen at the start, without a consumer group and
without committing. ``probe_service`` plays the course's client: GET
``/recommend/<uid>`` with a client-side deadline, the body checked by
``simulator.course_client``, each outcome turned into the ``Recommendation`` event the
course's client would have logged. It uses the standard library only and cannot hang:
every socket operation has a timeout and the whole run has a time budget.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from urllib.parse import urlsplit

from movierec.kafka_read import TopicReadError, read_once
from movierec.wire import Recommendation
from simulator import course_client

from simulator.grade import DEFAULT_DEADLINE_MS, DEFAULT_DOWN_THRESHOLD, GradeAccumulator
from simulator.grade_report import GradeReport

MAX_BODY = 64 * 1024
"""Bytes of a /recommend body read at most; 20 ids take well under 6 KiB."""

TIMEOUT_MARGIN_S = 0.2
"""The socket waits this long past the deadline, so a late answer is measured as late."""

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
"""Errors of a keep-alive connection the server closed while it was idle."""


class GradeError(RuntimeError):
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
        notes = read_once(bootstrap, topic, acc.add_line, client_id="movierec-grade",
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
    client = _Client(parts.scheme, parts.hostname, parts.port, parts.path.rstrip("/"),
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


class _Client:
    """What one probe thread needs to call the service and log each outcome as an event."""

    def __init__(
        self, scheme: str, host: str, port: int | None, prefix: str, *,
        deadline_ms: int, timeout_s: float,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port or (443 if scheme == "https" else 80)
        self.server = f"{host}:{self.port}"
        self.prefix = prefix
        self.deadline_ms = deadline_ms
        self.timeout_s = timeout_s

    def run(self, take: Callable[[], int | None], record: Callable[[Recommendation], None]) -> None:
        """Take user ids until none is left; each worker owns and closes one connection."""
        conn: http.client.HTTPConnection | None = None
        try:
            while (uid := take()) is not None:
                conn, event = self.call(conn, uid)
                record(event)
        finally:
            if conn is not None:
                conn.close()

    def connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout_s)

    def call(
        self, conn: http.client.HTTPConnection | None, uid: int
    ) -> tuple[http.client.HTTPConnection | None, Recommendation]:
        """One request; returns the connection to reuse (None after an error) and the event.
        A reused connection that the server had closed meanwhile is retried once, fresh."""
        reused = conn is not None
        while True:
            if conn is None:
                conn = self.connect()
            began = time.perf_counter()
            try:
                status, body = self._get(conn, uid, began)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and isinstance(exc, _STALE):
                    conn, reused = None, False
                    continue
                return None, self._event(uid, 0, (), self._error_text(exc), _millis(began))
            return conn, self._answer(uid, began, status, body)

    def _get(self, conn: http.client.HTTPConnection, uid: int, began: float) -> tuple[int, bytes]:
        """Status and body (at most ``MAX_BODY + 1`` bytes). Reading the body is bounded by
        the request's total time, so a server that trickles bytes cannot stall the probe."""
        conn.request("GET", f"{self.prefix}/recommend/{uid}")
        sock = conn.sock  # the response keeps using it even when the connection lets go
        response = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        try:
            while size <= MAX_BODY:
                left = self.timeout_s - (time.perf_counter() - began)
                if left <= 0:
                    raise TimeoutError("body not read in time")
                if sock is not None:
                    sock.settimeout(left)
                chunk = response.read1(MAX_BODY + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            if not response.isclosed():  # cut short: the connection cannot be reused
                response.close()
                conn.close()
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout_s)
        return response.status, b"".join(chunks)

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
