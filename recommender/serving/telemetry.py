"""Telemetry of served lists: one record per answer, handed off without blocking and
published in batches by a background thread to a sink (Kafka, Redis for provenance; the
sinks are in ``sinks.py``). ``Lanes`` gives each sink a ``Telemetry`` of its own.

The request path only appends a record to a bounded buffer (``Telemetry.submit``, a few
microseconds under a lock that guards nothing but the append). When the buffer is full
the record is dropped and counted: a slow or dead sink costs telemetry, never latency or
answers. A daemon thread drains the buffer every ``flush_s`` seconds (sooner once a
batch's worth is waiting) and hands each batch to the sink. Outcomes are counted per
record through ``on_outcome(outcome, n)``:

- "published": the sink took the record;
- "failed": the sink raised on its batch;
- "dropped": the buffer was full, or the record was still waiting when ``close`` gave up.

After ``close`` returns (and any sink call still running returns) every submitted record
is counted exactly once: published + failed + dropped == submitted.

Fork safety: gunicorn may build the app in its master and fork the workers. The thread is
started on the first ``submit`` and again whenever ``os.getpid()`` differs from the pid
that started it; the child then gets a new buffer, lock and thread (the parent's waiting
records are the parent's to publish).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from recommender.serving.state import ServingError

log = logging.getLogger(__name__)

_JSON = "_json"
"""Where ``ServedRecord.keep_json`` keeps the encoding (an attribute, not a field)."""
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
"""A request id: 32 lowercase hex digits (128 random bits; older ids were uuid4s without dashes)."""
LOG_EVERY_S = 10.0
"""At most one warning per sink per this many seconds while it keeps failing."""


class TelemetryError(ServingError):
    """A sink could not publish a batch (broker or Redis down or slow). Counted as
    "failed" by ``Telemetry``; it never reaches a request."""


def new_request_id() -> str:
    """A fresh request id (see ``REQUEST_ID``): 128 random bits from the OS, as hex
    (what ``uuid.uuid4().hex`` holds, less its six fixed bits and its object)."""
    return os.urandom(16).hex()


@dataclass(frozen=True)
class ServedRecord:
    """One answer of /recommend, as telemetry and /provenance see it.

    - ``request_id``: 32 lowercase hex digits; ``time_ms``: epoch ms of the request.
    - ``arm``: the experiment arm (or "default"); ``model_version``: the registry version
      that ranked the list, None when no model answered.
    - ``items``: the movie ids sent, best first; ``path``: how the list was made (model,
      coldstart_profile, coldstart_demographic, popular); ``fallback``: why the answer was
      degraded, None when it was not.
    - ``latency_ms``: time from request start to answer, milliseconds; ``status``: HTTP.
    """

    request_id: str
    time_ms: int
    user_id: int
    arm: str
    model_version: str | None
    items: tuple[str, ...]
    path: str
    fallback: str | None
    latency_ms: float
    status: int

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON (no spaces), fields in declaration order (``vars``, not
        ``asdict``, which deep-copies every value first: ~7 us against ~44 us); the bytes
        kept by ``keep_json`` when it ran."""
        held = self.__dict__.get(_JSON)
        if held is not None:
            return held
        return json.dumps(vars(self), separators=(",", ":"), ensure_ascii=False).encode()

    def keep_json(self) -> ServedRecord:
        """Encode now and keep the bytes for every later ``to_json``: ``Lanes`` calls it
        before its threads see the record, so each sink reuses one encoding (not
        thread-safe itself: call it before sharing the record). Returns the record."""
        if _JSON not in self.__dict__:
            object.__setattr__(self, _JSON, self.to_json())  # frozen: no fields change
        return self

    @classmethod
    def from_json(cls, data: bytes | str) -> ServedRecord:
        """The inverse of ``to_json``; ``ValueError`` (naming the field) on anything else."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("served record: not a JSON object")

        def need(name: str, kinds: tuple[type, ...], *, nullable: bool = False) -> Any:
            value = raw.get(name)
            if value is None and nullable:
                return value
            if isinstance(value, kinds) and not isinstance(value, bool):
                return value
            raise ValueError(f"served record: bad or missing {name!r}: {value!r}")

        request_id = need("request_id", (str,))
        if not REQUEST_ID.fullmatch(request_id):
            raise ValueError(f"served record: request_id is not 32 lowercase hex: {request_id!r}")
        items = need("items", (list,))
        if not all(isinstance(m, str) for m in items):
            raise ValueError("served record: items must be movie id strings")
        return cls(request_id=request_id, time_ms=need("time_ms", (int,)),
                   user_id=need("user_id", (int,)), arm=need("arm", (str,)),
                   model_version=need("model_version", (str,), nullable=True),
                   items=tuple(items), path=need("path", (str,)),
                   fallback=need("fallback", (str,), nullable=True),
                   latency_ms=float(need("latency_ms", (int, float))),
                   status=need("status", (int,)))


def encode_served(records: Sequence[ServedRecord]) -> bytes:
    """One Kafka value holding ``records``: their ``to_json`` lines joined by newlines
    (JSON never holds a raw newline, so the lines split back unambiguously; one record is
    the served topic's original one-record value). Why many a value: kafka-python spends
    about as much of a worker's CPU on each record it sends as the service on answering
    it (docs/benchmarks.md), and the broker validates every record of a batch."""
    return b"\n".join(r.to_json() for r in records)


def decode_served(value: bytes | str | None) -> tuple[list[ServedRecord], int]:
    """The served records of one Kafka value of the served topic (``encode_served``:
    one record or several, a line each), and how many of its lines were not one (a
    tombstone's None, bad UTF-8 or JSON, a wrong field: one bad line each). Readers of the
    topic use this, never ``from_json`` on a whole value. Never raises."""
    if value is None:
        return [], 1
    records, bad = [], 0
    # split on the newline alone: str.splitlines would also split at U+2028 and U+0085,
    # which to_json (ensure_ascii=False) leaves raw inside strings
    lines = value.split(b"\n") if isinstance(value, bytes) else value.split("\n")
    for line in lines:
        try:
            records.append(ServedRecord.from_json(line))
        except (ValueError, TypeError):  # ValueError: also bad JSON and bad UTF-8
            bad += 1
    return records, bad


class Sink(Protocol):
    """Where batches of served records go; raising means the batch did not get there."""

    def publish(self, records: list[ServedRecord]) -> None: ...


class Telemetry:
    """The bounded, never-blocking hand-off from requests to one sink (module docstring).

    - ``capacity``: records held before new ones are dropped, >= 1.
    - ``batch_size``: most records per sink call, >= 1.
    - ``flush_s``: seconds a record waits at most (about) before its batch is sent, > 0.
    - ``on_outcome(outcome, n)``: counts "published", "failed" and "dropped" records;
      called from ``submit`` (drops) and from the publisher thread.
    """

    def __init__(self, sink: Sink, *, capacity: int, batch_size: int = 500,
                 flush_s: float = 0.05,
                 on_outcome: Callable[[str, int], None] | None = None) -> None:
        if capacity < 1 or batch_size < 1 or not flush_s > 0:
            raise ValueError(f"telemetry needs capacity >= 1, batch_size >= 1 and flush_s > 0; "
                             f"got {capacity}, {batch_size}, {flush_s}")
        self.sink = sink
        self.capacity, self.batch_size, self.flush_s = capacity, batch_size, flush_s
        self._on_outcome = on_outcome
        self._start_lock = threading.Lock()
        self._lock = threading.Lock()
        self._buffer: deque[ServedRecord] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._pid: int | None = None          # the process whose thread drains the buffer
        self._thread: threading.Thread | None = None
        self._logged_at, self._silenced = -LOG_EVERY_S, 0  # failure logs, rate-limited

    # -- the request side ------------------------------------------------------------

    def submit(self, record: ServedRecord) -> bool:
        """Queue ``record`` for publishing; False (and counted "dropped") when the buffer
        is full or telemetry is closed. Never blocks on a sink, never raises."""
        if self._closed or (self._pid != os.getpid() and not self._start()):
            self._count("dropped", 1)
            return False
        with self._lock:
            accepted = not self._closed and len(self._buffer) < self.capacity
            if accepted:
                self._buffer.append(record)
                waiting = len(self._buffer)
        if not accepted:
            self._count("dropped", 1)
            return False
        if waiting == self.batch_size:  # a full batch: no need to wait for the timer
            self._wake.set()
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting records, publish what is waiting within ``timeout`` seconds, and
        count what is still waiting then as dropped."""
        if self._pid != os.getpid():  # nothing submitted in this process: what waits is
            self._closed = True       # a parent's (and its lock may be a stale copy)
            return
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._count("dropped", len(self._take(None)))

    # -- the publisher thread -------------------------------------------------------------

    def _start(self) -> bool:
        """Start the publisher thread of this process; after a fork, with a fresh buffer,
        lock and wake-up (the parent's may be mid-use). False if no thread can start."""
        pid = os.getpid()
        with self._start_lock:
            if self._pid == pid:
                return True
            if self._pid is not None:
                self._lock, self._buffer, self._wake = threading.Lock(), deque(), threading.Event()
            thread = threading.Thread(target=self._run, name="movierec-telemetry", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no more threads: telemetry off, answers unaffected
                log.exception("telemetry thread could not start")
                return False
            self._thread, self._pid = thread, pid
        return True

    def _take(self, limit: int | None) -> list[ServedRecord]:
        """Pop up to ``limit`` (None: all) waiting records, oldest first."""
        with self._lock:
            n = len(self._buffer) if limit is None else min(limit, len(self._buffer))
            return [self._buffer.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            # Read before draining: once closed, no record can arrive (submit checks under
            # the lock), so this drain is the last one needed.
            closing = self._closed
            while batch := self._take(self.batch_size):
                self._publish(batch)
            if closing:
                return

    def _publish(self, batch: list[ServedRecord]) -> None:
        try:
            self.sink.publish(batch)
        except Exception as exc:  # any sink fault is telemetry's, never the service's
            self._log_failure(exc)
            self._count("failed", len(batch))
        else:
            self._count("published", len(batch))

    def _log_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._silenced += 1
            return
        log.warning("telemetry sink %s failed (%d failures not logged since): %s: %s",
                    type(self.sink).__name__, self._silenced, type(exc).__name__, exc)
        self._logged_at, self._silenced = now, 0

    def _count(self, outcome: str, n: int) -> None:
        if n and self._on_outcome is not None:
            try:
                self._on_outcome(outcome, n)
            except Exception:
                log.exception("telemetry on_outcome(%r, %d) failed", outcome, n)


class Lanes:
    """Several ``Telemetry`` behind one ``submit``, typically one per sink: each lane has
    its own buffer and thread, so a broker that stops answering delays and drops only its
    own records, and ``/provenance`` (the Redis lane) keeps working. Each lane counts its
    own outcomes (the caller labels them by sink)."""

    def __init__(self, lanes: Sequence[Telemetry]) -> None:
        self.lanes = list(lanes)

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self.lanes]

    def submit(self, record: ServedRecord) -> bool:
        """Hand ``record`` to every lane; True when all took it. Never blocks. Its JSON is
        made once, here, for every lane's sink (``ServedRecord.keep_json``)."""
        if len(self.lanes) > 1:
            record.keep_json()
        taken = [lane.submit(record) for lane in self.lanes]  # every lane, no short cut
        return all(taken)

    def close(self, timeout: float = 5.0) -> None:
        for lane in self.lanes:
            lane.close(timeout)

