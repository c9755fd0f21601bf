"""A circuit breaker for the request path's Redis calls: a pure state machine with an
injected clock.

Why: when Redis hangs, every request would wait out its socket timeout before falling
back, and the waiting requests would pile up in the workers. After ``failures``
consecutive failures the breaker refuses calls at once for ``reset_s`` seconds, then lets
exactly one trial call through (half-open); the trial's success closes the breaker, its
failure opens it for another ``reset_s``. The pattern is M. Nygard, *Release It!* (2nd
ed., 2018), "Circuit Breaker"; https://martinfowler.com/bliki/CircuitBreaker.html.

States and transitions (``now`` from the injected clock, seconds)::

    closed    --failure() x failures in a row-->  open (opened at now)
    open      --allow() once now >= opened + reset_s-->  half_open (that call is the trial)
    half_open --success()-->  closed         half_open --failure()-->  open (opened at now)

The move to half-open happens lazily, on the first ``allow()`` after ``reset_s``, so
``state`` stays "open" while nobody asks. A trial that never reports (its caller died
between ``allow()`` and ``success()``/``failure()``) would wedge the breaker half-open;
so once a trial is ``reset_s`` old, the next ``allow()`` becomes a new trial.

Thread-safe: gunicorn may run request threads. The lock guards a few attribute updates
and one clock read; ``on_change`` is called after the lock is released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of a dependency and refuses calls while it is down.

    - ``failures``: consecutive failures (while closed) that open the breaker, >= 1.
    - ``reset_s``: seconds the breaker stays open before one trial call, > 0.
    - ``clock``: monotonic seconds (injected for tests).
    - ``on_change``: called with the new state after every transition (e.g. to set the
      ``movierec_serve_redis_breaker_open`` gauge); an exception from it is logged, so
      the request path never sees it.
    """

    def __init__(self, failures: int, reset_s: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str], None] | None = None) -> None:
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        if not reset_s > 0:
            raise ValueError(f"reset_s must be > 0, got {reset_s}")
        self.failures = failures
        self.reset_s = float(reset_s)
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive = 0      # failures in a row while closed
        self._since = 0.0          # when it opened (open), or when the trial left (half_open)

    @property
    def state(self) -> str:
        """"closed", "open" or "half_open" (see the module docstring)."""
        return self._state

    def allow(self) -> bool:
        """May a call go to the dependency now? True while closed, and for the one trial."""
        with self._lock:
            if self._state == CLOSED:
                return True
            now = self._clock()
            if now - self._since < self.reset_s:
                return False  # open and cooling down, or a trial is out
            changed = self._state == OPEN
            self._state, self._since = HALF_OPEN, now
        if changed:
            self._notify(HALF_OPEN)
        return True

    def success(self) -> None:
        """An allowed call worked: reset the count; a trial's success closes the breaker.

        A success reported while open (a call let through before the breaker opened)
        changes nothing: only the breaker's own trial may close it."""
        with self._lock:
            self._consecutive = 0
            changed = self._state == HALF_OPEN
            if changed:
                self._state = CLOSED
        if changed:
            self._notify(CLOSED)

    def failure(self) -> None:
        """An allowed call failed: count it; open on the ``failures``-th in a row, or at
        once if it was the trial. A late failure while open does not extend the wait."""
        with self._lock:
            if self._state == OPEN:
                return
            if self._state == CLOSED:
                self._consecutive += 1
                if self._consecutive < self.failures:
                    return
            self._state, self._since, self._consecutive = OPEN, self._clock(), 0
        self._notify(OPEN)

    def _notify(self, state: str) -> None:
        if self._on_change is not None:
            try:
                self._on_change(state)
            except Exception:
                log.exception("circuit breaker on_change(%r) failed", state)
