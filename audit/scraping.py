"""Scraping by enumeration, found in the served records. Pure: (time, user id) in, runs out.

A crawler that wants every user's list walks the user ids: 0, 1, 2, ... (or down, or
from any start), at whatever rate it likes, from one address or many. Organic traffic
asks for the users who happen to be active, in no order. So the signature is not the
rate but the order: a request for user ``u`` shortly after one for ``u - 1`` (or
``u + 1``), again and again. For random traffic the chance that ``u - 1`` was asked in
the last ``gap_s`` is about the share of users active in that time, ``p``; a run of
``min_run`` such steps has chance about ``p ** (min_run - 1)``: with ``p`` = 0.3 and 30
steps, 1e-15 per request. A run of ``min_run`` is therefore an enumeration, whatever
its rate, as long as ``p`` stays well below 1: a service whose users are all active
within ``gap_s`` cannot tell a walk from its own traffic. Organic requests for the
walk's next ids can lengthen a run by a step or two at its end. Runs are followed in both
directions; a crawler striding by more than one id (every tenth user) is out of scope.

The detector sees neither addresses nor headers (the served records hold neither), so it
finds the walk, not the walker; ``movierec audit security`` reports the runs, their ids,
times and rates, and the share of the traffic they took.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    """One enumeration: users ``first`` to ``last`` (inclusive; ``first > last`` for a
    walk down), asked from ``start_ms`` to ``end_ms``."""

    first: int
    last: int
    start_ms: int
    end_ms: int
    requests: int

    @property
    def rate_per_s(self) -> float:
        span = (self.end_ms - self.start_ms) / 1000.0
        return (self.requests - 1) / span if span > 0 else float("inf")


def enumerations(requests: Iterable[tuple[int, int]], *, gap_s: float = 60.0,
                 min_run: int = 30) -> list[Run]:
    """Runs of at least ``min_run`` consecutive user ids, each asked within ``gap_s`` of
    its neighbour, in ``requests`` of (epoch ms, user id) sorted by time."""
    gap_ms = gap_s * 1000
    # per direction: the open run that ends at user u -> (first user, start ms, last ms, n)
    ends: dict[tuple[int, int], tuple[int, int, int, int]] = {}
    found: list[Run] = []
    for t, user in requests:
        for step in (1, -1):
            before = ends.pop((step, user - step), None)
            if before is not None and t - before[2] <= gap_ms:
                grown = (before[0], before[1], t, before[3] + 1)
            else:
                if before is not None:
                    _close(before, user - step, min_run, found)
                grown = (user, t, t, 1)
            # a run may already end at this user (an organic request for the walk's next
            # id came first and took the walk's run one step ahead): the longer one wins
            here = ends.get((step, user))
            if here is None or here[3] <= grown[3]:
                ends[(step, user)] = grown
        if len(ends) > 1_000_000:  # bounded memory: drop runs that can no longer grow
            stale = [k for k, v in ends.items() if t - v[2] > gap_ms]
            for key in stale:
                _close(ends.pop(key), key[1], min_run, found)
    for (_, user), run in ends.items():
        _close(run, user, min_run, found)
    return sorted(found, key=lambda r: (r.start_ms, r.first))


def _close(run: tuple[int, int, int, int], last: int, min_run: int, found: list[Run]) -> None:
    first, start, end, n = run
    if n >= min_run:
        found.append(Run(first, last, start, end, n))
