"""The shilling detector on small worlds with known answers: a campaign of young accounts
pushing an obscure movie is found with exactly its accounts, and a nuke likewise; a
popular release that draws new users, a campaign too small to matter, and old accounts
rating in a burst are not."""

from __future__ import annotations

import numpy as np

from recommender.shilling import NUKE, PUSH, BurstRule, Detection, births, detect

DAY, HOUR = 86_400.0, 3_600.0
rng = np.random.default_rng(7)


def organic(n_users: int = 2_000, n_ratings: int = 20_000, days: float = 30) -> list[tuple]:
    """Old accounts (born before the data) rating 200 movies over ``days`` days."""
    popularity = 1 / np.arange(1, 201)
    movies = rng.choice(200, size=n_ratings, p=popularity / popularity.sum())
    return [(int(rng.integers(0, n_users)), f"m{m}", float(rng.uniform(0, days * DAY)),
             int(rng.integers(1, 6))) for m in movies]


def campaign(first: int, n: int, target: str, at_s: float, stars: int = 5) -> list[tuple]:
    """``n`` fresh accounts rate ``target`` ``stars`` within two hours, plus filler."""
    rows = []
    for u in range(first, first + n):
        t = at_s + float(rng.uniform(0, 2 * HOUR))
        rows.append((u, target, t, stars))
        rows += [(u, f"m{int(m)}", t + 60 * (i + 1), int(rng.integers(1, 6)))
                 for i, m in enumerate(rng.choice(20, size=4, replace=False))]
    return rows


def run(rows: list[tuple], born: dict[int, float], rule: BurstRule | None = None) -> Detection:
    users, movies, times, stars = (np.array(c) for c in zip(*rows, strict=True))
    return detect(users, movies.astype(object), times, stars, born, scale_max=5,
                  rule=rule or BurstRule())


BORN_OLD = {u: -365 * DAY for u in range(2_000)}


def test_a_push_campaign_on_an_obscure_movie_is_found_with_exactly_its_accounts() -> None:
    attackers = range(10_000, 10_030)
    rows = organic() + campaign(10_000, 30, "m190", 12 * DAY)
    born = {**BORN_OLD, **{u: 12 * DAY for u in attackers}}
    found = run(rows, born)
    assert found.targets == ["m190"]
    (c,) = found.campaigns
    assert c.direction == PUSH and c.accounts == frozenset(attackers)
    assert c.p_value < 1e-6 and c.expected < 5


def test_accounts_without_a_sign_up_line_are_born_at_their_first_event() -> None:
    rows = organic() + campaign(10_000, 30, "m190", 12 * DAY)
    first: dict[int, float] = {}
    for user, _, t, _ in rows:
        first[user] = min(t, first.get(user, np.inf))
    born = births({}, first, data_start_s=0.0)
    assert run(rows, born).accounts == frozenset(range(10_000, 10_030))
    # the same campaign in the data's first week: its accounts' first events cannot be
    # told from old accounts appearing for the first time, and are not taken as births
    early = organic() + campaign(10_000, 30, "m190", 2 * DAY)
    assert births({}, {10_000: 2 * DAY}, data_start_s=0.0) == {}
    assert births({10_000: 2 * DAY}, {10_000: 2 * DAY}, data_start_s=0.0) == {10_000: 2 * DAY}
    assert run(early, {}).campaigns == []


def test_a_nuke_campaign_is_found_too() -> None:
    rows = organic() + campaign(20_000, 25, "m3", 5 * DAY, stars=1)
    found = run(rows, {**BORN_OLD, **{u: 5 * DAY for u in range(20_000, 20_025)}})
    assert [(c.movie, c.direction) for c in found.campaigns] == [("m3", NUKE)]
    assert found.accounts == frozenset(range(20_000, 20_025))


def test_a_popular_release_drawing_new_users_is_not_a_campaign() -> None:
    """300 ratings of a new release in six hours, 40 of them from accounts born that day
    (13%, against about 1% young elsewhere): new users, but no dominance of the window."""
    rows = organic()
    born = dict(BORN_OLD)
    for n in range(300):
        user = 30_000 + n if n < 40 else int(rng.integers(0, 2_000))
        if n < 40:
            born[user] = 20 * DAY - HOUR
        rows.append((user, "release", 20 * DAY + float(rng.uniform(0, 6 * HOUR)), 5))
    assert run(rows, born).campaigns == []


def test_too_small_or_old_account_bursts_are_not_campaigns() -> None:
    small = organic() + campaign(10_000, 6, "m150", 3 * DAY)
    assert run(small, {**BORN_OLD, **{u: 3 * DAY for u in range(10_000, 10_006)}}).campaigns == []
    # 30 old accounts (born a year ago) rating one movie in a burst: not young, not flagged
    old = organic() + [(u, "m170", 8 * DAY + float(rng.uniform(0, HOUR)), 5) for u in range(30)]
    assert run(old, BORN_OLD).campaigns == []


def test_nothing_to_judge() -> None:
    empty = detect(np.array([]), np.array([]), np.array([]), np.array([]), {}, scale_max=5)
    assert empty.campaigns == [] and empty.accounts == frozenset()
