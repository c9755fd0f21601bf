"""How the simulated user/movie API misbehaves, as pure, testable pieces.

The course's real API (../shared/mlip-interface.md, section 3) is rate-limited, serves
field types that are "not always clean", and has bad days. The simulator reproduces
all three so that the team's consumer is built against them:

- ``dirty``: a deterministic share of records comes back with numbers and booleans as
  strings, and empty optional values as ``null``. Which records, and which of their
  fields, follows a keyed hash of the record's id (never Python's salted ``hash()``),
  so the same record is dirty the same way in every request and every run.
- ``TokenBucket`` / ``RateLimiter``: requests per client address, answered with 429
  once the bucket is empty.
- ``FaultSwitch`` / ``parse_faults`` / ``plan``: faults injected on demand (slow
  answers, 5xx), which expire on their own.

Nothing here does I/O, sleeps or reads the wall clock: time comes from an injected
``clock`` (seconds, monotonic) and chance from an injected ``random.Random``.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]

INT_FIELDS = ("user_id", "age", "tmdb_id", "budget", "revenue", "runtime", "vote_count")
"""Integer fields that may arrive as decimal strings ("34")."""
FLOAT_FIELDS = ("popularity", "vote_average", "license_cost")
"""Float fields that may arrive as strings ("7.3", Python's shortest round-trip form)."""
BOOL_FIELDS = ("adult",)
"""Boolean fields that may arrive as "True" / "False"."""
NULL_WHEN_EMPTY = ("homepage", "poster_path", "overview", "belongs_to_collection",
                   "likes", "dislikes")
"""Optional fields that may arrive as null when their clean value is empty ("" or {})."""

MAX_SLOW_MS = 30_000
"""Longest injectable delay, milliseconds."""
MAX_FAULT_DURATION_S = 7 * 86_400.0
"""Longest fault duration, seconds."""
ERROR_STATUSES = (500, 503)
"""Statuses an injected error answers with, drawn with equal chance."""


def _unit(*parts: str) -> float:
    """A stable pseudo-random number in [0, 1) from ``parts`` (same input, same output)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _dirty_value(field: str, value: Any) -> tuple[bool, Any]:
    """(applies, dirty form) for one field; applies is False where the field has no dirty form."""
    if field in INT_FIELDS and type(value) is int:
        return True, str(value)
    if field in FLOAT_FIELDS and type(value) in (int, float):
        return True, repr(float(value))
    if field in BOOL_FIELDS and type(value) is bool:
        return True, str(value)
    if field in NULL_WHEN_EMPTY and value in ("", {}):
        return True, None
    return False, value


def dirty(record: dict, key: str, rate: float, *, salt: str = "") -> dict:
    """``record`` as the API serves it: clean, or (for a share ``rate`` of keys) dirty.

    ``key`` names the record (e.g. ``"movie/the+matrix+1999"``); ``salt`` varies the
    choice between worlds. A dirty record has at least one, typically half, of its
    dirtiable fields changed (see ``INT_FIELDS`` ...). The input is never modified;
    a clean record is returned as is, a dirty one as a new dict.
    """
    if rate <= 0 or _unit(salt, key) >= rate:
        return record
    changes: dict[str, Any] = {}
    first: tuple[float, str, Any] | None = None
    for field, value in record.items():
        applies, new = _dirty_value(field, value)
        if not applies:
            continue
        u = _unit(salt, key, field)
        if u < 0.5:
            changes[field] = new
        if first is None or u < first[0]:
            first = (u, field, new)
    if not changes and first is not None:
        changes[first[1]] = first[2]
    return {**record, **changes} if changes else record


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; a request takes one."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._tokens = self.burst
        self._stamp = clock()

    def take(self) -> float:
        """0.0 if a token was taken; otherwise the seconds until one will be there."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0 - 1e-9:  # tolerate float drift in clock arithmetic
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """One ``TokenBucket`` per client, at most ``max_clients`` of them (thread-safe).

    When the table is full the least recently seen client is forgotten; it comes back
    with a full bucket, so eviction can only err on the lenient side. ``rate`` 0 turns
    limiting off.
    """

    def __init__(self, rate: float, burst: int, clock: Clock, max_clients: int = 10_000) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self.max_clients = max(1, max_clients)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, client: str) -> float:
        """0.0 if ``client`` may go ahead; otherwise the seconds it should wait."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                while len(self._buckets) >= self.max_clients:
                    self._buckets.popitem(last=False)
                bucket = self._buckets[client] = TokenBucket(self.rate, self.burst, self._clock)
            else:
                self._buckets.move_to_end(client)
            return bucket.take()


@dataclass(frozen=True)
class Faults:
    """Faults in force: a delay (ms) and a share of 5xx answers, until clock time ``until``."""

    slow_ms: int = 0
    error_rate: float = 0.0
    until: float | None = None
    """Clock time (s) when they end; None: until cleared."""

    @property
    def active(self) -> bool:
        return self.slow_ms > 0 or self.error_rate > 0


NO_FAULTS = Faults()


def _number(body: dict, name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) not in (int, float) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number from {lo:g} to {hi:g}")
    return float(value)


def parse_faults(body: object) -> tuple[int, float, float | None]:
    """(slow_ms, error_rate, duration_s) from a JSON body such as ``{"slow_ms": 800}``.

    Every key is optional; a missing one means "none of that fault", a missing
    ``duration_s`` means "until cleared". Raises ``ValueError`` with a message for the
    client on anything else.
    """
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    unknown = set(body) - {"slow_ms", "error_rate", "duration_s"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(map(str, unknown)))}")
    slow = _number(body, "slow_ms", 0, MAX_SLOW_MS) or 0.0
    rate = _number(body, "error_rate", 0, 1) or 0.0
    duration = _number(body, "duration_s", 0, MAX_FAULT_DURATION_S)
    if duration == 0:
        raise ValueError("duration_s must be positive (leave it out: until cleared)")
    return round(slow), rate, duration


class FaultSwitch:
    """The faults in force now; they lapse by themselves at their end time.

    The state is one immutable ``Faults`` value, replaced whole, so readers on other
    threads never see half an update.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._faults = NO_FAULTS

    def set(self, slow_ms: int = 0, error_rate: float = 0.0,
            duration_s: float | None = None) -> Faults:
        """Replace the faults in force (all zero clears them); returns the new value."""
        until = None if duration_s is None else self._clock() + duration_s
        faults = Faults(int(slow_ms), float(error_rate), until)
        self._faults = faults if faults.active else NO_FAULTS
        return self._faults

    def clear(self) -> None:
        self._faults = NO_FAULTS

    def current(self) -> Faults:
        faults = self._faults
        if faults.until is not None and self._clock() >= faults.until:
            return NO_FAULTS
        return faults

    def describe(self) -> dict[str, Any]:
        """JSON view: active, slow_ms, error_rate, remaining_s (null: until cleared)."""
        faults = self.current()
        remaining = None if faults.until is None else round(faults.until - self._clock(), 3)
        return {"active": faults.active, "slow_ms": faults.slow_ms,
                "error_rate": faults.error_rate, "remaining_s": remaining}


def plan(faults: Faults, rng: random.Random) -> tuple[float, int | None]:
    """What one request suffers: (delay in seconds, injected status or None)."""
    status = None
    if faults.error_rate > 0 and rng.random() < faults.error_rate:
        status = rng.choice(ERROR_STATUSES)
    return faults.slow_ms / 1000.0, status
