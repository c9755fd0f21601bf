"""Recommendations change behaviour: an oracle list beats a random one, significantly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from simulator import oracle
from simulator.behaviour import (
    BehaviourParams,
    OrganicSampler,
    ratings,
    react,
    watch_minutes,
)
from simulator.world import World, WorldSpec

PARAMS = BehaviourParams()


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(WorldSpec(seed=3, n_users=5_000, n_movies=2_000))


def _lists(world: World, users: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        return rng.integers(0, world.n_movies, (len(users), 20))
    index = world.movie_index
    return np.array([[index[m] for m in oracle.best_list(world, int(u))] for u in users])


def test_oracle_lists_raise_watch_time_and_ratings(world: World) -> None:
    rng = np.random.default_rng(11)
    users = rng.integers(0, world.n_users, 1500)
    sampler = OrganicSampler(world)
    good = react(world, users, _lists(world, users, "oracle", rng), sampler, rng, PARAMS, 5)
    bad = react(world, users, _lists(world, users, "random", rng), sampler, rng, PARAMS, 5)
    assert good.from_list.mean() > 0.9 > bad.from_list.mean()
    test = stats.ttest_ind(good.minutes, bad.minutes, equal_var=False, alternative="greater")
    assert good.minutes.mean() > 1.1 * bad.minutes.mean()
    assert test.pvalue < 1e-6
    rated_good, rated_bad = good.stars[good.stars > 0], bad.stars[bad.stars > 0]
    assert stats.mannwhitneyu(rated_good, rated_bad, alternative="greater").pvalue < 1e-3


def test_empty_lists_fall_back_to_organic_choice(world: World) -> None:
    rng = np.random.default_rng(1)
    users = np.arange(200)
    none = react(world, users, np.full((200, 20), -1), OrganicSampler(world), rng, PARAMS, 5)
    assert not none.from_list.any()
    assert (none.minutes >= 1).all()


def test_watch_minutes_and_ratings_stay_in_range(world: World) -> None:
    rng = np.random.default_rng(2)
    u = rng.normal(0, 3, 5000)
    runtime = rng.integers(60, 200, 5000)
    minutes = watch_minutes(u, runtime, rng, PARAMS)
    assert (minutes >= 1).all() and (minutes <= runtime).all()
    for scale in (5, 10):
        stars = ratings(u, rng, scale, PARAMS)
        assert stars.min() == 0 and stars.max() == scale
        assert np.corrcoef(u[stars > 0], stars[stars > 0])[0, 1] > 0.5


def test_oracle_values_lists_by_the_cascade(world: World) -> None:
    rng = np.random.default_rng(4)
    better = 0
    for user in range(50):
        best = oracle.best_list(world, user)
        random_list = [world.catalog.ids[i] for i in rng.integers(0, world.n_movies, 20)]
        p = oracle.take_probabilities(world, user, best)
        assert 0 <= p.sum() <= 1 and len(p) == 20
        better += oracle.list_value(world, user, best) > oracle.list_value(world, user, random_list)
        assert oracle.mean_utility(world, user, best) >= oracle.mean_utility(world, user, random_list)
    assert better == 50
    assert oracle.list_value(world, 0, ["not+a+movie+2000"]) == 0.0
    assert oracle.list_value(world, 0, []) == 0.0
    excluded = set(oracle.best_list(world, 0, k=5))
    assert not excluded & set(oracle.best_list(world, 0, k=20, exclude=excluded))


def test_the_oracle_values_many_lists_at_once_as_one_at_a_time(world: World) -> None:
    rng = np.random.default_rng(8)
    users = np.arange(30)
    lists = rng.integers(0, world.n_movies, (30, 20))
    lists[::3, 5] = -1  # a hole where an unknown id would be
    one = [oracle.list_value(world, int(u), [world.catalog.ids[m] if m >= 0 else "not+a+movie+2000"
                                             for m in row]) for u, row in zip(users, lists, strict=True)]
    assert oracle.list_values(world, users, lists) == pytest.approx(one, rel=1e-5)  # float32 factors
