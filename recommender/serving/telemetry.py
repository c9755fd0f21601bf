"""Telemetry of served lists: one record per answer, handed off without blocking and
published in batches by a background thread to Kafka and to Redis (provenance).

The request path only appends a record to a bounded buffer (``Telemetry.submit``, a few
microseconds under a lock that guards nothing but the append). When the buffer is full
the record is dropped and counted: a slow or dead sink costs telemetry, never latency or
answers. A daemon thread drains the buffer every ``flush_s`` seconds (sooner once a
batch's worth is waiting) and hands each batch to every sink. Outcomes are counted per
record through ``on_outcome(outcome, n)``:

- "published": every sink took the record;
- "failed": at least one sink raised on its batch (the others still got it);
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
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from recommender.serving.state import ServingError
from stream_consumer.keys import Keys

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[0-9a-f]{32}")
"""A request id: 32 lowercase hex digits (a uuid4 without dashes)."""
PROVENANCE_PER_USER = 200
"""Newest served records kept per user in the by-user index."""
LOG_EVERY_S = 10.0
"""At most one warning per sink per this many seconds while it keeps failing."""


class TelemetryError(ServingError):
    """A sink could not publish a batch (broker or Redis down or slow). Counted as
    "failed" by ``Telemetry``; it never reaches a request."""


def new_request_id() -> str:
    """A fresh request id (see ``REQUEST_ID``)."""
    return uuid.uuid4().hex


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
        ``asdict``, which deep-copies every value first: ~7 us against ~44 us)."""
        return json.dumps(vars(self), separators=(",", ":"), ensure_ascii=False).encode()

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


class Sink(Protocol):
    """Where batches of served records go; raising means the batch did not get there."""

    def publish(self, records: list[ServedRecord]) -> None: ...


class Telemetry:
    """The bounded, never-blocking hand-off from requests to sinks (module docstring).

    - ``capacity``: records held before new ones are dropped, >= 1.
    - ``batch_size``: most records per sink call, >= 1.
    - ``flush_s``: seconds a record waits at most (about) before its batch is sent, > 0.
    - ``on_outcome(outcome, n)``: counts "published", "failed" and "dropped" records;
      called from ``submit`` (drops) and from the publisher thread.
    """

    def __init__(self, sinks: Sequence[Sink], *, capacity: int, batch_size: int = 500,
                 flush_s: float = 0.05,
                 on_outcome: Callable[[str, int], None] | None = None) -> None:
        if capacity < 1 or batch_size < 1 or not flush_s > 0:
            raise ValueError(f"telemetry needs capacity >= 1, batch_size >= 1 and flush_s > 0; "
                             f"got {capacity}, {batch_size}, {flush_s}")
        self.sinks = list(sinks)
        self.capacity, self.batch_size, self.flush_s = capacity, batch_size, flush_s
        self._on_outcome = on_outcome
        self._start_lock = threading.Lock()
        self._lock = threading.Lock()
        self._buffer: deque[ServedRecord] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._pid: int | None = None          # the process whose thread drains the buffer
        self._thread: threading.Thread | None = None
        self._last_log: dict[int, tuple[float, int]] = {}  # sink index -> (logged at, silenced)

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
        failed = False
        for index, sink in enumerate(self.sinks):
            try:
                sink.publish(batch)
            except Exception as exc:  # any sink fault is telemetry's, never the service's
                failed = True
                self._log_failure(index, sink, exc)
        self._count("failed" if failed else "published", len(batch))

    def _log_failure(self, index: int, sink: Sink, exc: Exception) -> None:
        now = time.monotonic()
        logged_at, silenced = self._last_log.get(index, (-LOG_EVERY_S, 0))
        if now - logged_at < LOG_EVERY_S:
            self._last_log[index] = (logged_at, silenced + 1)
            return
        log.warning("telemetry sink %s failed (%d failures not logged since): %s: %s",
                    type(sink).__name__, silenced, type(exc).__name__, exc)
        self._last_log[index] = (now, 0)

    def _count(self, outcome: str, n: int) -> None:
        if n and self._on_outcome is not None:
            try:
                self._on_outcome(outcome, n)
            except Exception:
                log.exception("telemetry on_outcome(%r, %d) failed", outcome, n)


class KafkaSink:
    """Served records to a Kafka topic (kafka-python), keyed by user id so one user's
    records stay in order within a partition; the value is ``ServedRecord.to_json()``.

    The producer is created on the publisher thread at the first batch (never at import
    or construction), and again on the next batch after a failure, unless records of the
    failed batch are still in flight: kafka-python's ``close`` then raises before it stops
    its sender thread, so the producer is kept (it reconnects on its own) rather than
    leaking a thread per failure. A plain TCP connect to the first bootstrap address comes
    before each creation: a down broker is reported in milliseconds and kafka-python never
    sees the refused connection (it leaks a socket on each one, see docs/architecture.md).
    Each batch is flushed and every send checked, so a batch that raises did not (all)
    get there.
    """

    CONNECT_TIMEOUT_S = 1.0
    MAX_BLOCK_MS = 500        # longest send() waits for metadata or buffer space
    FLUSH_TIMEOUT_S = 10.0    # longest wait for a batch's acks

    PARTITIONS = 4  # of the served topic when this sink creates it

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self._topic_checked = False
        self._producer: Any = None
        self._pid: int | None = None
        self._inherited: Any = None  # a forked child's copy of its parent's producer

    def _connect(self) -> Any:
        if self._producer is not None and self._pid == os.getpid():
            return self._producer
        from kafka import KafkaProducer

        if self._producer is not None:
            # forked: the copy's sockets and thread are the parent's. Keep a reference, or
            # its __del__ would close it (and flush, and close the parent's sockets).
            self._inherited, self._producer = self._producer, None
        host, _, port = self.bootstrap.split(",")[0].strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=self.CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            raise TelemetryError(f"no Kafka broker at {self.bootstrap}: {exc}") from None
        if not self._topic_checked:
            self._ensure_topic()
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, client_id="movierec-serve-telemetry",
                acks=1, linger_ms=20, compression_type="lz4", max_block_ms=self.MAX_BLOCK_MS,
                bootstrap_timeout_ms=2000, request_timeout_ms=5000, delivery_timeout_ms=8000,
            )
        except Exception as exc:
            raise TelemetryError(f"Kafka producer for {self.bootstrap} failed: {exc}") from None
        self._pid = os.getpid()
        return self._producer

    def _ensure_topic(self) -> None:
        """Create the served topic once (brokers often refuse auto-creation). A refusal
        (no rights on a shared broker) is logged, not fatal: the topic may exist."""
        from movierec.kafka_admin import ensure_topic

        try:
            ensure_topic(self.bootstrap, self.topic, self.PARTITIONS, timeout_ms=3000)
        except Exception as exc:
            log.warning("could not create or check topic %s: %s", self.topic, exc)
        self._topic_checked = True

    def publish(self, records: list[ServedRecord]) -> None:
        producer = self._connect()
        try:
            futures = [producer.send(self.topic, key=str(r.user_id).encode(), value=r.to_json())
                       for r in records]
            producer.flush(timeout=self.FLUSH_TIMEOUT_S)  # afterwards every future is done
            error = next((f.exception for f in futures if f.failed()), None)
            if error is not None:
                raise error
        except Exception as exc:
            self._drop(producer)
            raise TelemetryError(
                f"Kafka send to {self.topic} failed: {type(exc).__name__}: {exc}") from None

    def _drop(self, producer: Any) -> None:
        """Close a failed producer so the next batch makes a new one; keep it if records
        are still in flight (see the class docstring)."""
        try:
            producer.close(timeout=0)
        except Exception as exc:
            log.debug("failed Kafka producer kept, records in flight: %s", exc)
            return
        self._producer = None

    def close(self, timeout: float = 5.0) -> None:
        """Flush and close the producer (shutdown)."""
        if self._producer is not None and self._pid == os.getpid():
            self._producer.close(timeout=timeout)
        self._producer = None


# ARGV: served-key prefix and suffix, by-user-key prefix and suffix, TTL (ms), records kept
# per user, then the records, one a line: "<request id>\t<user>\t<time ms>\t<json>\n"
# (compact JSON escapes tabs and newlines, so neither occurs raw in it).
_PROVENANCE = r"""
local ttl, keep = tonumber(ARGV[5]), tonumber(ARGV[6])
local touched = {}
for rid, user, ms, json in string.gmatch(ARGV[7], "([^\t\n]+)\t(%d+)\t(%d+)\t([^\n]*)\n") do
  redis.call('SET', ARGV[1] .. rid .. ARGV[2], json, 'PX', ttl)
  local index = ARGV[3] .. user .. ARGV[4]
  redis.call('ZADD', index, ms, rid)
  touched[index] = true
end
for index in pairs(touched) do
  redis.call('ZREMRANGEBYRANK', index, 0, -keep - 1)
  redis.call('PEXPIRE', index, ttl)
end
return 1
"""
PROVENANCE_CHUNK = 50
"""Records per script call: Redis serves no one else while a script runs, and a record
costs it ~20 us, so a call stays near a millisecond."""


class RedisProvenanceSink:
    """Served records to Redis, for /provenance (``provenance.ProvenanceLookup``): per
    record ``SET served(rid) <json> PX ttl`` and ``ZADD served_by_user(user) time_ms rid``;
    each touched index is trimmed to the newest ``PROVENANCE_PER_USER`` and expires after
    the TTL too (it is refreshed by every new record).

    One pipeline per batch, of one script call per ``PROVENANCE_CHUNK`` records (plus the
    SCRIPT EXISTS check redis-py sends first). Four plain commands a record cost this
    thread ~58 us of CPU per record, and the thread shares the GIL with the requests;
    the script's arguments cost ~12 us (measured with hiredis, batches of 500)."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.client, self.keys = client, keys
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._write = client.register_script(_PROVENANCE)
        mark = "\x00"  # key templates from Keys itself, so the layout keeps one home
        self._head = [*keys.served(mark).split(mark), *keys.served_by_user(mark).split(mark),
                      str(self.ttl_ms), str(PROVENANCE_PER_USER)]

    def publish(self, records: list[ServedRecord]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i in range(0, len(records), PROVENANCE_CHUNK):
            lines = b"".join(b"%s\t%d\t%d\t%s\n" % (r.request_id.encode(), r.user_id, r.time_ms,
                                                       r.to_json())
                             for r in records[i:i + PROVENANCE_CHUNK])
            self._write(keys=[], args=[*self._head, lines], client=pipe)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise TelemetryError(f"provenance write failed: {type(exc).__name__}: {exc}") from None
