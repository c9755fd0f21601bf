"""The simulated world: catalog + population, the hidden utility, and the records the
user/movie API serves.

The utility of movie m for user u is the hidden truth everything else is measured
against::

    utility = taste[u] . factors[m]  +  genre_pref[u] . genres[m] / |genres[m]|  +  quality[m]

with sd about 1.4-1.5 over random pairs; a user's best 20 of 27,000 movies average
about +4.6 to +4.8.
Only the simulator and evaluation tools that say so may look at it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator.catalog import (
    CONTENT_RATINGS,
    GENRES,
    LANGUAGES,
    Catalog,
    generate_catalog,
    language_name,
)
from simulator.population import OCCUPATIONS, Population, describe, generate_population, genre_matrix

FACTORS = 16
DESCRIBE_POOL = 2000
"""Users name titles from among this many most appealing movies (people name films
others have heard of)."""


@dataclass(frozen=True)
class WorldSpec:
    """Everything a world is drawn from: the same spec always gives the same world."""

    seed: int = 42
    n_users: int = 1_000_000
    n_movies: int = 27_000
    describe_share: float = 0.3
    new_share: float = 0.1
    horizon_days: float = 30.0


class World:
    """A catalog and a population drawn from one ``WorldSpec``."""

    def __init__(self, spec: WorldSpec, catalog: Catalog, population: Population) -> None:
        self.spec = spec
        self.catalog = catalog
        self.population = population
        self.movie_index = catalog.index_of()
        self._genre_norm = genre_matrix(catalog)

    @classmethod
    def build(cls, spec: WorldSpec) -> World:
        catalog = generate_catalog(spec.n_movies, FACTORS, spec.seed)
        population = generate_population(
            spec.n_users, FACTORS, spec.seed, describe_share=spec.describe_share,
            new_share=spec.new_share, horizon_days=spec.horizon_days,
        )
        return cls(spec, catalog, population)

    @property
    def n_users(self) -> int:
        return len(self.population)

    @property
    def n_movies(self) -> int:
        return len(self.catalog)

    # -- the hidden truth --------------------------------------------------------------

    def utility(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        """Utility of each (user, movie) pair; ``users`` (B,) with ``movies`` (B,) or (B, C)."""
        users = np.asarray(users)
        movies = np.asarray(movies)
        p, c = self.population, self.catalog
        if movies.ndim == 1:
            dot = np.einsum("bk,bk->b", p.taste[users], c.factors[movies])
            genre = np.einsum("bg,bg->b", p.genre_pref[users], self._genre_norm[movies])
        else:
            dot = np.einsum("bk,bck->bc", p.taste[users], c.factors[movies])
            genre = np.einsum("bg,bcg->bc", p.genre_pref[users], self._genre_norm[movies])
        return dot + genre + c.quality[movies]

    def utilities_for(self, user: int, movies: np.ndarray | None = None) -> np.ndarray:
        """Utility of every movie (or of ``movies``) for one user, shape (M,)."""
        p, c = self.population, self.catalog
        idx = np.arange(self.n_movies) if movies is None else np.asarray(movies)
        return (c.factors[idx] @ p.taste[user] + self._genre_norm[idx] @ p.genre_pref[user]
                + c.quality[idx])

    @cached_property
    def describe_pool(self) -> np.ndarray:
        """The most appealing movies, from which users name favourites."""
        return np.argsort(-self.catalog.appeal)[:DESCRIBE_POOL]

    # -- what the user and movie APIs serve ------------------------------------------

    def user_record(self, user_id: int) -> dict | None:
        """The user API's clean record, or None for an unknown id."""
        if not 0 <= user_id < self.n_users:
            return None
        p = self.population
        record: dict = {
            "user_id": int(user_id),
            "age": int(p.age[user_id]),
            "occupation": OCCUPATIONS[int(p.occupation[user_id])],
            "gender": "F" if p.gender[user_id] else "M",
        }
        if p.describes[user_id]:
            pool = self.describe_pool
            order = np.argsort(-self.utilities_for(user_id, pool))
            titles = self.catalog.titles
            liked = [titles[pool[i]] for i in order[:3]]
            disliked = [titles[pool[i]] for i in order[-2:]]
            record["likes"], record["dislikes"] = describe(user_id, liked, disliked, p.seed)
        return record

    def movie_record(self, movie_id: str) -> dict | None:
        """The movie API's clean, TMDB-shaped record, or None for an unknown id."""
        i = self.movie_index.get(movie_id)
        if i is None:
            return None
        c = self.catalog
        digest = int.from_bytes(hashlib.blake2b(movie_id.encode(), digest_size=8).digest(), "big")
        rng = np.random.default_rng([self.spec.seed, 5, digest])
        lang = LANGUAGES[int(c.language[i])]
        budget = int(round(float(c.appeal[i]) * rng.uniform(2e6, 2e7), -3))
        return {
            "id": movie_id,
            "tmdb_id": 10_000 + i,
            "imdb_id": f"tt{1_000_000 + i * 37:07d}",
            "title": c.titles[i],
            "original_title": c.titles[i],
            "adult": bool(c.adult[i]),
            "belongs_to_collection": {},
            "budget": budget,
            "genres": [{"id": GENRES[g][0], "name": GENRES[g][1]} for g in np.flatnonzero(c.genres[i])],
            "homepage": "",
            "original_language": lang,
            "overview": f"A {GENRES[int(np.flatnonzero(c.genres[i])[0])][1].lower()} film.",
            "popularity": round(float(c.appeal[i]) * 4.0, 3),
            "poster_path": f"/{digest:016x}.jpg",
            "production_companies": [{"id": int(digest % 9973), "name": "Studio " + str(digest % 97)}],
            "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
            "release_date": f"{int(c.year[i])}-{1 + int(c.release_day[i] - 1) // 31:02d}"
                            f"-{1 + int(c.release_day[i] - 1) % 28:02d}",
            "revenue": int(budget * rng.uniform(0, 4)),
            "runtime": int(c.runtime[i]),
            "spoken_languages": [{"iso_639_1": lang, "name": language_name(lang)}],
            "status": "Released",
            "vote_average": round(float(c.vote_average[i]), 1),
            "vote_count": int(c.vote_count[i]),
            "license_cost": round(float(c.license_cost[i]), 4),
            "content_rating": CONTENT_RATINGS[int(c.content_rating[i])],
        }
