"""The walk guard's rule in memory (``WalkTracker``) on sequences with known answers, and
``WalkGuard`` failing open behind its breaker. The same rule in Redis is held to this one
by tests/integration/test_serving_walks.py."""

from __future__ import annotations

import random

import pytest

from audit.scraping import enumerations
from recommender.serving.breaker import OPEN, CircuitBreaker
from recommender.serving.walks import WalkGuard, WalkTracker, WalkUnavailable
from stores.online import OnlineStoreError

MIN_RUN, GAP_S = 30, 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def runs(users: list[int], *, every_s: float = 0.25, gap_s: float = GAP_S) -> list[int]:
    clock = Clock()
    tracker = WalkTracker(gap_s, clock=clock)
    out = []
    for user in users:
        out.append(tracker.step(user))
        clock.now += every_s
    return out


def limited(users: list[int], **kwargs: float) -> list[int]:
    """The users whose request was a walk step (run >= MIN_RUN)."""
    return [u for u, n in zip(users, runs(users, **kwargs), strict=True) if n >= MIN_RUN]


def test_a_walk_of_40_ids_is_limited_from_its_30th_step() -> None:
    walk = list(range(40))
    assert runs(walk) == list(range(1, 41))
    assert limited(walk) == walk[29:]


def test_a_walk_down_from_any_start_is_limited_too() -> None:
    walk = list(range(500, 460, -1))
    assert runs(walk) == list(range(1, 41))
    assert limited(walk) == walk[29:]


def test_random_traffic_is_never_limited() -> None:
    """The demo's shape, 2,000 users at 20 requests/s for 10 minutes: ~0.45 of the users
    are asked within any minute, so a run of 30 has a chance of ~0.45**29, 1e-10, a
    request; the longest run here is 13 (0.45**12: a few in 24,000 chances)."""
    rng = random.Random(7)
    users = [rng.randrange(2000) for _ in range(12_000)]
    found = runs(users, every_s=0.05)
    assert max(found) <= 15 and limited(users, every_s=0.05) == []


def test_a_pause_longer_than_the_gap_ends_a_walk() -> None:
    clock = Clock()
    tracker = WalkTracker(GAP_S, clock=clock)
    first = [tracker.step(u) for u in range(25)]
    clock.now += GAP_S  # exactly the gap: the walk goes on
    assert tracker.step(25) == 26 and first[-1] == 25
    clock.now += GAP_S + 0.01  # past it: a new run starts
    assert [tracker.step(u) for u in range(26, 60)] == list(range(1, 35))


def test_a_slow_walk_within_the_gap_is_a_walk_whatever_its_rate() -> None:
    walk = list(range(100, 140))
    assert limited(walk, every_s=59.0) == walk[29:]
    assert limited(walk, every_s=61.0) == []


def test_a_user_asked_again_lengthens_nothing() -> None:
    """A user who reloads, or two users asked by turns, never build a run."""
    assert max(runs([5] * 100)) == 1
    assert max(runs([5, 6] * 100)) == 2


def test_asking_a_user_again_does_not_keep_a_walk_alive_past_the_gap() -> None:
    """A run extends once: the run ending at 27 moved on to 28, so asking 28 again 50 s
    later finds nothing to extend, and the run ending at 28 keeps its time; 29, asked
    61 s after the walk reached 28, starts afresh."""
    clock = Clock()
    tracker = WalkTracker(GAP_S, clock=clock)
    for u in range(29):
        tracker.step(u)
        clock.now += 1.0
    clock.now += 49.0
    assert tracker.step(28) == 1
    clock.now += 11.0
    assert tracker.step(29) == 1


def test_a_walk_goes_on_past_an_organic_request_for_its_next_id() -> None:
    """An organic request for id 30 comes before the crawler gets there: the walk's run
    still reaches 30 at id 29 and goes on through 30 (the longer run wins)."""
    users = [*range(29), 30, 29, 30, 31]
    assert runs(users)[-4:] == [1, 30, 31, 32]
    assert limited(users) == [29, 30, 31]


def test_the_walk_steps_are_what_the_audit_finds_afterwards() -> None:
    """A walk planted among random traffic: the guard limits exactly the walk's steps from
    its 30th on, and audit/scraping.py, reading the same requests, finds that walk and
    nothing else."""
    rng = random.Random(3)
    walk = iter(range(5000, 5080))
    users: list[int] = []
    for i in range(3000):
        users.append(rng.randrange(100_000))
        if i >= 1000 and i % 10 == 0:
            users.append(next(walk, rng.randrange(100_000)))
    every_s = 0.05
    found = limited(users, every_s=every_s)
    assert found == list(range(5029, 5080))
    times = [(round(i * every_s * 1000), u) for i, u in enumerate(users)]
    [run] = enumerations(times, gap_s=GAP_S, min_run=MIN_RUN)
    assert (run.first, run.last) == (5000, 5079)


def test_expired_runs_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    import recommender.serving.walks as walks

    monkeypatch.setattr(walks, "PRUNE_AT", 100)
    clock = Clock()
    tracker = WalkTracker(1.0, clock=clock)
    for u in range(0, 1000, 2):  # no neighbours: each makes two runs of 1
        tracker.step(u)
        clock.now += 0.1
    assert len(tracker._ends) <= 100 + 2


class FailingState:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = True

    def step(self, user: int) -> int:
        self.calls += 1
        if self.fail:
            raise OnlineStoreError("redis walk step failed: TimeoutError")
        return 40


def test_the_guard_says_walk_from_min_run_on() -> None:
    clock = Clock()
    guard = WalkGuard(WalkTracker(GAP_S, clock=clock), min_run=MIN_RUN)
    assert [guard.is_step(u) for u in range(31)] == [False] * 29 + [True, True]
    with pytest.raises(ValueError, match="min_run"):
        WalkGuard(WalkTracker(GAP_S), min_run=1)


def test_a_failing_store_raises_walk_unavailable_then_the_breaker_spares_it() -> None:
    clock = Clock()
    state, breaker = FailingState(), CircuitBreaker(2, 5.0, clock=clock)
    guard = WalkGuard(state, min_run=MIN_RUN, breaker=breaker)
    for _ in range(2):
        with pytest.raises(WalkUnavailable) as failed:
            guard.is_step(1)
        assert failed.value.reason == "redis"
    assert breaker.state == OPEN and state.calls == 2
    with pytest.raises(WalkUnavailable) as refused:
        guard.is_step(1)
    assert refused.value.reason == "breaker_open" and state.calls == 2  # not touched
    clock.now += 5.0
    state.fail = False
    assert guard.is_step(1) is True and breaker.state == "closed"  # the trial closed it
