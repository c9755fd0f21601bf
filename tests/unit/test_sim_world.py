"""The simulated world: deterministic, MLiP-shaped, realistic where it matters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from movierec.wire import MOVIE_FIELDS, USER_FIELDS, is_movie_id
from simulator.catalog import CONTENT_RATINGS, GENRES, RATED_R, movie_id_from_title
from simulator.population import K12, OCCUPATIONS, misspell
from simulator.world import World, WorldSpec

SPEC = WorldSpec(seed=7, n_users=20_000, n_movies=3_000)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build(SPEC)


@pytest.mark.parametrize(("title", "year", "expected"), [
    ("The Lord of the Rings: The Return of the King", 2003,
     "the+lord+of+the+rings+the+return+of+the+king+2003"),
    ("Kill Bill: Vol. 1", 2003, "kill+bill+vol.+1+2003"),
    ("Spider-Man 3", 2007, "spider-man+3+2007"),
    ("Monsters, Inc.", 2001, "monsters_+inc.+2001"),
    ("Willy Wonka & the Chocolate Factory", 1971, "willy+wonka++the+chocolate+factory+1971"),
    ("1900", 1976, "1900+1976"),
    ("I, Robot", 2004, "i_+robot+2004"),
    ("Schindler's List", 1993, "schindlers+list+1993"),
])
def test_movie_ids_follow_the_mlip_rules(title: str, year: int, expected: str) -> None:
    assert movie_id_from_title(title, year) == expected


def test_same_spec_same_world_other_seed_other_world(world: World) -> None:
    again = World.build(SPEC)
    assert again.catalog.ids == world.catalog.ids
    assert np.array_equal(again.population.taste, world.population.taste)
    assert again.user_record(123) == world.user_record(123)
    other = World.build(WorldSpec(seed=8, n_users=SPEC.n_users, n_movies=SPEC.n_movies))
    assert other.catalog.ids != world.catalog.ids


def test_catalog_ids_are_valid_and_unique(world: World) -> None:
    ids = world.catalog.ids
    assert len(ids) == SPEC.n_movies == len(set(ids))
    assert all(is_movie_id(m) for m in ids)
    assert any("++" in m for m in ids) or any("_" in m for m in ids)  # punctuation shapes occur


def test_catalog_distributions_are_realistic(world: World) -> None:
    c = world.catalog
    appeal = np.sort(c.appeal)[::-1]
    assert appeal[: len(appeal) // 100].sum() / appeal.sum() > 0.10  # long tail: top 1% > 10%
    assert 90 <= np.median(c.runtime) <= 115 and c.runtime.min() >= 60
    assert stats.spearmanr(c.appeal, c.license_cost).statistic > 0.5  # popular films cost more
    recent, old = c.license_cost[c.year >= 2015], c.license_cost[c.year < 1990]
    assert recent.mean() > old.mean()
    kids = (c.genres[:, 2] | c.genres[:, 7]) & ~c.genres[:, 10]  # Animation/Family, not Horror
    assert (c.content_rating[kids & ~c.adult] < RATED_R).all()
    assert (c.content_rating[c.genres[:, 10]] >= RATED_R).all()  # Horror is R or worse
    assert (c.content_rating[c.adult] == CONTENT_RATINGS.index("NC-17")).all()


def test_population_is_plausible(world: World) -> None:
    p = world.population
    assert p.age.min() >= 13 and p.age.max() <= 90
    assert (p.occupation[p.age < 18] == K12).all()
    assert np.percentile(p.activity, 99) / np.median(p.activity) > 10  # heavy-tailed
    assert abs(p.describes.mean() - SPEC.describe_share) < 0.02
    assert abs((p.joined >= 0).mean() - SPEC.new_share) < 0.02
    assert set(np.unique(p.gender)) == {0, 1}


def test_user_records(world: World) -> None:
    plain = next(i for i in range(100) if not world.population.describes[i])
    record = world.user_record(plain)
    assert record is not None
    assert {k: type(v) for k, v in record.items()} == USER_FIELDS
    assert record["occupation"] in OCCUPATIONS and record["gender"] in ("M", "F")
    assert world.user_record(-1) is None and world.user_record(SPEC.n_users) is None


def test_self_descriptions_name_movies_the_user_likes(world: World) -> None:
    describers = np.flatnonzero(world.population.describes)[:40]
    pool = world.describe_pool
    found = top_tenth = 0
    for user in describers:
        record = world.user_record(int(user))
        assert record["likes"] and record["dislikes"]
        u = world.utilities_for(int(user), pool)
        cutoff = np.quantile(u, 0.9)
        text = record["likes"].lower()
        # the longest pool title named (typos aside: a misspelled title is not found)
        named = [j for j, i in enumerate(pool) if world.catalog.titles[i].lower() in text]
        if named:
            j = max(named, key=lambda j: len(world.catalog.titles[pool[j]]))
            found += 1
            top_tenth += u[j] >= cutoff
    # liked titles are the user's top 3 of the pool; by chance only 10% would be
    assert found >= 20 and top_tenth >= 0.8 * found


def test_misspellings_change_one_letter_position() -> None:
    rng = np.random.default_rng(0)
    typos = [misspell("chocolate", rng) for _ in range(50)]
    assert "chocolate" not in typos  # no two neighbouring letters alike: every typo shows
    assert all(abs(len(t) - len("chocolate")) <= 1 for t in typos)
    assert len(set(typos)) > 10




def test_movie_records_have_every_documented_field(world: World) -> None:
    record = world.movie_record(world.catalog.ids[5])
    assert record is not None
    assert {k: type(v) for k, v in record.items()} == MOVIE_FIELDS
    assert {g["name"] for g in record["genres"]} <= {name for _, name in GENRES}
    assert record["content_rating"] in CONTENT_RATINGS
    assert world.movie_record("no+such+movie+1999") is None
