"""The walk guard of /recommend: is this request a step of a walk over the user ids?

A crawler that wants every user's list asks for the ids in order (0, 1, 2, ... or down,
from any start, at any rate, from any address); organic traffic asks for the users who
happen to be active, in no order. The signature is the order, not the rate, so the guard
looks at the order (``audit/scraping.py`` finds the same walks afterwards in the served
records, and its docstring has the argument): the run of consecutive ids ending at the
requested one, each asked within ``gap_s`` of its neighbour, in either direction. For
random traffic a run of ``min_run`` has a chance of about ``p ** (min_run - 1)``, ``p``
the share of users active within ``gap_s``; a request whose run reaches ``min_run`` (30
by default) is a walk step.

The rule, per direction ``d`` (+1 up, -1 down), when user ``u`` is asked at time ``t``::

    before = the run ending at u - d, if it was last extended within gap_s; it moves on
             (it is taken away: one run extends once, as in audit/scraping.py)
    grown  = before + 1, or 1 without one
    the run ending at u becomes grown, unless a longer one still ends there (kept as is)
    this request's run = the larger grown of the two directions

Taking the run away keeps a user asked twice from lengthening anything; keeping a longer
run that already ends at ``u`` lets a walk go on past an organic request for its next id
that came first. ``WalkTracker`` is the rule in memory (the reference, and what unit
tests use); ``stores.redis_walks.RedisWalkStore`` is the same rule as one Lua script in
Redis, so every gunicorn worker sees the same walk (a crawler's requests are spread over
the workers), with Redis's key expiry as the ``gap_s``.

``WalkGuard`` puts the store behind a circuit breaker of its own and turns a store
failure into ``WalkUnavailable``, which the handler counts and answers as if no walk were
seen: the guard fails open, it never costs an answer. Its own breaker, not the feature
reads': both talk to the same Redis, but a failure only the guard meets (its SET refused
by a read-only replica, say) must not open the breaker of the features and so cost every
user the personalized list; when Redis is down both breakers open within a few requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from recommender.serving.breaker import CircuitBreaker
from recommender.serving.state import ServingError
from stores.online import OnlineStoreError

FAILURE_REASONS = ("redis", "breaker_open", "error")
"""Why a walk check failed open: the store timed out, refused or erred; the breaker was
open (Redis is known to be down); anything unexpected (a bug, logged)."""

PRUNE_AT = 100_000
"""``WalkTracker`` drops expired runs once it holds this many."""


class WalkState(Protocol):
    def step(self, user: int) -> int:
        """Record a request for ``user`` now; the length of the run it makes (>= 1).
        Raises ``OnlineStoreError`` when the store does not answer."""
        ...


class WalkUnavailable(ServingError):
    """The walk check could not be made (``reason``: one of ``FAILURE_REASONS``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"walk check failed ({reason}): {detail}")
        self.reason = reason


class WalkTracker:
    """The rule of the module docstring over a dict, for one process (``WalkState``).

    ``clock``: seconds (injected for tests); expired runs are dropped once ``PRUNE_AT``
    are held. Not thread-safe: the service uses the Redis store."""

    def __init__(self, gap_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not gap_s > 0:
            raise ValueError(f"gap_s must be > 0, got {gap_s}")
        self.gap_s = gap_s
        self._clock = clock
        self._ends: dict[tuple[int, int], tuple[int, float]] = {}  # (d, user) -> (run, time)

    def _live(self, key: tuple[int, int], now: float) -> int | None:
        entry = self._ends.get(key)
        return entry[0] if entry is not None and now - entry[1] <= self.gap_s else None

    def step(self, user: int) -> int:
        now = self._clock()
        longest = 0
        for d in (1, -1):
            before = self._live((d, user - d), now)
            if before is not None:
                del self._ends[(d, user - d)]
            grown = 1 if before is None else before + 1
            here = self._live((d, user), now)
            if here is None or here <= grown:
                self._ends[(d, user)] = (grown, now)
            longest = max(longest, grown)
        if len(self._ends) >= PRUNE_AT:
            self._ends = {k: v for k, v in self._ends.items() if now - v[1] <= self.gap_s}
        return longest


class WalkGuard:
    """``is_step(user)``: does this request make a run of at least ``min_run`` (>= 2)?
    ``state``: where runs live; ``breaker``: the guard's own circuit breaker, or None."""

    def __init__(self, state: WalkState, *, min_run: int,
                 breaker: CircuitBreaker | None = None) -> None:
        if min_run < 2:
            raise ValueError(f"min_run must be >= 2, got {min_run}")
        self.state, self.min_run, self.breaker = state, min_run, breaker

    @property
    def rides(self) -> bool:
        """Does the check ride the feature read (a state in Redis, ``keys_of``), instead
        of ``is_step``'s call of its own?"""
        return hasattr(self.state, "keys_of")

    def ride(self, user: int) -> tuple[list[str], int]:
        """The walk keys and gap (ms) for ``user``'s step to ride the feature read
        (``OnlineStore.read_user_if_changed``); ``WalkUnavailable`` when the breaker is
        open. Only when ``rides``."""
        if self.breaker is not None and not self.breaker.allow():
            raise WalkUnavailable("breaker_open", "redis circuit breaker is open")
        state: Any = self.state
        return state.keys_of(user), int(state.gap_ms)

    def judge(self, run: int | None, error: str | None) -> bool:
        """A ridden step's result -> walk step or not; ``WalkUnavailable`` when it failed
        (``error``), counted by the breaker as ``is_step`` counts its own calls."""
        if error is not None:
            return self._failed(error)
        if self.breaker is not None:
            self.breaker.success()
        return (run or 0) >= self.min_run

    def _failed(self, detail: str) -> NoReturn:
        if self.breaker is not None:
            self.breaker.failure()
        raise WalkUnavailable("redis", detail)

    def failed(self, detail: str) -> NoReturn:
        """The read a step rode failed: counted as the step's failure."""
        self._failed(detail)

    def is_step(self, user: int) -> bool:
        """True for a walk step; ``WalkUnavailable`` when it cannot be told (fail open)."""
        if self.breaker is not None and not self.breaker.allow():
            raise WalkUnavailable("breaker_open", "redis circuit breaker is open")
        try:
            run = self.state.step(user)
        except OnlineStoreError as exc:
            if self.breaker is not None:
                self.breaker.failure()
            raise WalkUnavailable("redis", str(exc)) from None
        if self.breaker is not None:
            self.breaker.success()
        return run >= self.min_run
