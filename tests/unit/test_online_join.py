"""The join of arms with outcomes: small hand-made logs with known answers, and random logs
against a brute-force reading of the definitions (docs/online_eval.md)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import pytest

from movierec.wire import Account, Rate, Recommendation, Watch
from online_eval.join import UNASSIGNED, ArmOutcome, OnlineEvalError, OutcomeJoin

T0 = datetime(2025, 3, 1, 12, 0)
A, B, C = "a+2001", "b+2002", "c+2003"
SERVER = "svc:8082"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rec(minute: float, user: int, items: tuple[str, ...] = (A, B), status: int = 200,
        server: str = SERVER) -> Recommendation:
    return Recommendation(at(minute), user, server, status, items if status == 200 else (),
                          "" if status == 200 else "Connection refused", 40)


def session(start: float, user: int, movie: str, minutes: int) -> list[Watch]:
    """One line per minute watched, half a minute into each minute (as the simulator)."""
    return [Watch(at(start + k + 0.5), user, movie, k) for k in range(minutes)]


def tick(minute: float) -> Watch:
    """Another user's line: moves the clock (so windows close) and nothing else."""
    return Watch(at(minute), 999_999, "z+1999", 0)


def run(events: Iterable[object], arms: Mapping[int, str], **options: object) -> dict[str, ArmOutcome]:
    join = OutcomeJoin(arms, **options)  # type: ignore[arg-type]
    for event in sorted(events, key=lambda e: e.time):  # type: ignore[attr-defined]
        join.add(event)
    return join.finish()


def test_a_list_is_taken_when_a_listed_movie_starts_inside_the_window() -> None:
    events = [rec(0, 1), *session(5, 1, B, 3),   # taken
              rec(0, 2), *session(5, 2, C, 3),   # C was not listed
              rec(0, 3), *session(31, 3, A, 3),  # started after the 30-minute window
              rec(0, 4), *session(5, 5, A, 3),   # user 5 watched, user 4 was shown
              tick(200)]
    got = run(events, {1: "als", 2: "als", 3: "pop", 4: "pop"})
    assert (got["als"].eligible, got["als"].taken) == (2, 1)
    assert (got["pop"].eligible, got["pop"].taken) == (2, 0)
    assert got["als"].take_rate == 0.5 and got["pop"].take_rate == 0.0


def test_the_window_bounds_are_inclusive_and_configurable() -> None:
    edge = [rec(0, 1), Watch(at(30), 1, A, 0), tick(200)]
    assert run(edge, {1: "x"})["x"].taken == 1
    assert run(edge, {1: "x"}, window=timedelta(minutes=29))["x"].taken == 0
    before = [Watch(at(-1), 1, A, 0), rec(0, 1), tick(200)]
    assert run(before, {1: "x"})["x"].taken == 0


def test_a_film_started_before_the_list_is_not_taken_but_a_lost_first_line_is() -> None:
    continued = [rec(0, 1), Watch(at(2), 1, A, 50), Watch(at(3), 1, A, 51), tick(300)]
    assert run(continued, {1: "x"})["x"].taken == 0
    no_minute_zero = [rec(0, 1), *session(4, 1, A, 10)[1:], tick(300)]
    assert run(no_minute_zero, {1: "x"})["x"].taken == 1


def test_status_and_list_size_decide_success() -> None:
    too_long = tuple(f"m{i}+2000" for i in range(21))
    events = [rec(0, 1), rec(1, 1, status=0), rec(2, 1, status=0), rec(3, 1, too_long),
              rec(4, 1, ()), tick(200)]
    got = run(events, {1: "x"})["x"]
    assert (got.requests, got.successes, got.eligible, got.taken) == (5, 2, 2, 0)


def test_users_without_an_arm_are_counted_apart() -> None:
    events = [rec(0, 1), *session(1, 1, A, 2), rec(0, 7), *session(1, 7, A, 2), tick(200)]
    got = run(events, {1: "als"})
    assert got[UNASSIGNED].requests == 1 and got[UNASSIGNED].taken == 1
    assert got["als"].requests == 1


def test_minutes_and_ratings_of_taken_movies_are_followed_up() -> None:
    events = [rec(0, 1), *session(2, 1, A, 90), *session(2, 1, A, 40),  # replayed lines
              Rate(at(93), 1, A, 2), Rate(at(94), 1, A, 4),              # the latest counts
              Rate(at(95), 1, B, 5),                                     # B was not taken
              rec(0, 2), *session(1, 2, C, 20), Rate(at(22), 2, C, 1),   # not taken at all
              rec(0, 3), *session(1, 3, B, 300), tick(600)]              # cut at 4 h
    got = run(events, {1: "x", 2: "x", 3: "x"})["x"]
    assert got.taken == 2
    assert got.minutes == 90 + 239  # user 3's minute 238 (at 239.5 min) is the last in 4 h
    assert (got.ratings, got.mean_rating) == (1, 4.0)


def test_a_rating_tie_goes_to_the_higher_score() -> None:
    events = [rec(0, 1), *session(1, 1, A, 5), Rate(at(7), 1, A, 5), Rate(at(7), 1, A, 3),
              tick(600)]
    assert run(events, {1: "x"})["x"].rating_sum == 5


def test_the_latest_open_list_gets_the_credit() -> None:
    events = [rec(0, 1, (A, B)), rec(5, 1, (A, C)), *session(6, 1, A, 3), tick(200)]
    got = run(events, {1: "x"})["x"]
    assert (got.eligible, got.taken) == (2, 1)


def test_lists_younger_than_the_window_at_the_end_of_the_log_are_censored() -> None:
    # the log ends at 40: the list at 10 closes exactly then, the one at 15 (taken) later
    events = [rec(0, 1), rec(10, 2), rec(15, 3), *session(16, 3, A, 3), rec(40, 4)]
    arms = dict.fromkeys((1, 2, 3, 4), "x")
    got = run(events, arms)["x"]
    assert (got.successes, got.eligible, got.censored, got.taken) == (4, 2, 2, 0)
    assert got.take_rate == 0.0
    shorter = run(events, arms, window=timedelta(minutes=20))["x"]
    assert (shorter.eligible, shorter.censored, shorter.taken) == (3, 1, 1)


def test_filters_select_recommendations_but_every_watch_still_counts() -> None:
    events = [rec(0, 1), rec(10, 2), rec(20, 3), rec(20, 4, server="other:1"),
              *session(25, 3, A, 2), tick(200)]
    arms = dict.fromkeys((1, 2, 3, 4), "x")
    join = OutcomeJoin(arms, since=at(10), until=at(25), server=SERVER)
    for event in sorted(events, key=lambda e: e.time):
        join.add(event)
    got = join.finish()["x"]
    assert (got.requests, got.taken, join.filtered) == (2, 1, 2)


def test_other_event_kinds_are_ignored() -> None:
    events = [Account(at(0), 1), rec(0, 1), Account(at(1), 1), tick(200)]
    assert run(events, {1: "x"})["x"].requests == 1


def test_memory_holds_only_lists_inside_their_horizon() -> None:
    join = OutcomeJoin({}, window=timedelta(minutes=30), lateness=timedelta(minutes=60))
    for i in range(5000):  # ten lists a minute, for 500 minutes
        join.add(rec(i / 10, i))
    assert join.pending <= (30 + 60 + 1) * 10
    got = join.finish()[UNASSIGNED]
    assert (got.eligible, got.censored) == (4700, 300)  # the last 30 minutes are cut


def test_lateness_lets_a_lagging_partition_catch_up() -> None:
    late = [rec(0, 1), tick(80), Watch(at(10), 1, A, 0), tick(300)]  # user 1's line lags

    def taken(lateness: timedelta) -> int:
        join = OutcomeJoin({1: "x"}, lateness=lateness)
        for event in late:  # in arrival order, not sorted
            join.add(event)
        return join.finish()["x"].taken

    assert taken(timedelta(hours=1)) == 1
    assert taken(timedelta(0)) == 0


def test_a_user_holds_at_most_max_pending_lists() -> None:
    events = [rec(0, 1, (A,)), rec(1, 1, (B,)), rec(2, 1, (C,)), *session(3, 1, A, 2), tick(200)]
    join = OutcomeJoin({1: "x"}, max_pending=2)
    for event in events:
        join.add(event)
    got = join.finish()["x"]
    assert (join.overflow, got.eligible, got.taken) == (1, 3, 0)


@pytest.mark.parametrize("options", [{"window": timedelta(0)},
                                     {"window": timedelta(hours=5)},  # longer than follow-up
                                     {"lateness": timedelta(minutes=-1)},
                                     {"max_pending": 0},
                                     {"since": at(10), "until": at(10)}])
def test_inconsistent_options_are_refused(options: dict) -> None:
    with pytest.raises(OnlineEvalError):
        OutcomeJoin({}, **options)


# -- random logs against a brute-force reading of the definitions -------------------------

WINDOW, FOLLOW = timedelta(minutes=30), timedelta(hours=4)
MOVIES = [f"m{i}+2000" for i in range(10)]


def random_log(seed: int) -> tuple[list[object], dict[int, str]]:
    """Users alternate lists and one session each (which may start before the list, miss
    its first line, or be of an unlisted movie), far enough apart not to overlap; the log
    is cut at 400 minutes."""
    rng = random.Random(seed)
    events: list[object] = []
    for user in range(60):
        t = rng.uniform(0, 120)
        for _ in range(rng.randint(1, 3)):
            status = 200 if rng.random() < 0.9 else 0
            items = tuple(rng.sample(MOVIES, rng.randint(0, 4)))
            events.append(rec(t, user, items, status))
            movie = rng.choice(items if items and rng.random() < 0.6 else MOVIES)
            start, n = t + rng.uniform(-20, 45), rng.randint(1, 150)
            lines = session(start, user, movie, n)
            events += lines[rng.random() < 0.2:]
            if rng.random() < 0.6:
                events.append(Rate(at(start + n + 1), user, movie, rng.randint(1, 5)))
            t = max(t + 250, start + n + 30) + rng.uniform(0, 60)
    arms = {u: rng.choice(["a", "b"]) for u in range(55)}  # users 55.. have no arm
    cut = at(400)  # the log's hard end: later lists are censored, follow-ups cut short
    return sorted((e for e in events if e.time <= cut),  # type: ignore[attr-defined]
                  key=lambda e: e.time), arms  # type: ignore[attr-defined]


def brute_force(events: list[object], arms: Mapping[int, str]) -> dict[str, ArmOutcome]:
    end = max(e.time for e in events)  # type: ignore[attr-defined]
    out: dict[str, ArmOutcome] = {}
    for r in events:
        if not isinstance(r, Recommendation):
            continue
        o = out.setdefault(arms.get(r.user_id, UNASSIGNED), ArmOutcome())
        o.requests += 1
        if r.status != 200:
            continue
        o.successes += 1
        if r.time + WINDOW > end:
            o.censored += 1
            continue
        o.eligible += 1
        mine = [e for e in events if getattr(e, "user_id", None) == r.user_id]
        starts = [w for w in mine if isinstance(w, Watch) and w.movie_id in r.items
                  and r.time <= w.time <= r.time + WINDOW
                  and w.time - timedelta(minutes=w.minute) >= r.time - timedelta(minutes=1)]
        if not starts:
            continue
        first = starts[0]
        o.taken += 1
        o.minutes += 1 + max(w.minute for w in mine if isinstance(w, Watch)
                             and w.movie_id == first.movie_id
                             and first.time <= w.time <= r.time + FOLLOW)
        rated = [x for x in mine if isinstance(x, Rate) and x.movie_id == first.movie_id
                 and first.time <= x.time <= r.time + FOLLOW]
        if rated:
            o.ratings += 1
            o.rating_sum += rated[-1].rating
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_logs_match_the_definitions(seed: int) -> None:
    events, arms = random_log(seed)
    want = brute_force(events, arms)
    assert sum(o.taken for o in want.values()) > 10  # the logs exercise takes and the cut
    assert sum(o.censored for o in want.values()) > 0
    for lateness in (timedelta(0), timedelta(days=30)):  # sweeping must not change answers
        assert run(events, arms, window=WINDOW, follow_up=FOLLOW, lateness=lateness) == want


def test_per_user_tallies_give_each_user_one_take_rate() -> None:
    events = [rec(0, 1), *session(5, 1, B, 3), rec(60, 1), rec(120, 1),  # user 1: 1 of 3
              rec(0, 2), *session(2, 2, A, 2),                            # user 2: 1 of 1
              rec(0, 3), rec(500, 3),                                     # user 3: 1 eligible
              tick(520)]
    join = OutcomeJoin({1: "als", 2: "als", 3: "pop"}, per_user=True)
    for event in sorted(events, key=lambda e: e.time):
        join.add(event)
    outcomes = join.finish()
    assert sorted(join.user_take_rates("als")) == [pytest.approx(1 / 3), 1.0]
    assert join.user_take_rates("pop") == [0.0]  # the list at 500 is censored
    assert outcomes["pop"].censored == 1
    assert join.user_take_rates("nobody") == []
    assert join.plays == {"als": {B: 1, A: 1}}
    with pytest.raises(OnlineEvalError, match="per_user"):
        OutcomeJoin({}).user_take_rates("als")


def test_a_restored_join_goes_on_as_if_never_stopped() -> None:
    """Checkpoint a join mid-log (open lists, taken films, ratings pending), restore it in
    a fresh join from its JSON, feed the rest: the same outcomes as one uninterrupted
    pass."""
    import json

    rng = random.Random(5)
    events: list = []
    for user in range(1, 40):
        t = rng.uniform(0, 300)
        events.append(rec(t, user, (A, B, C)))
        if rng.random() < 0.6:
            movie = rng.choice((A, B, C))
            events += session(t + rng.uniform(0, 20), user, movie, rng.randint(1, 90))
            if rng.random() < 0.5:
                events.append(Rate(at(t + 100), user, movie, rng.randint(1, 5)))
    events = sorted(events + [tick(900)], key=lambda e: e.time)
    arms = {u: ("als" if u % 2 else "pop") for u in range(1, 40)}
    whole = OutcomeJoin(arms)
    for e in events:
        whole.add(e)
    expected = whole.finish()
    for stop in (len(events) // 3, len(events) // 2, len(events) - 2):
        first = OutcomeJoin(arms)
        for e in events[:stop]:
            first.add(e)
        second = OutcomeJoin(arms)
        second.restore(json.loads(json.dumps(first.state())))
        assert second.pending == first.pending
        for e in events[stop:]:
            second.add(e)
        assert second.finish() == expected, stop
        assert second.plays == whole.plays
