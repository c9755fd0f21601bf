"""What the movie API says of each film, as arrays aligned with a training catalog.

The consumer's enrichment stores each movie's metadata as strings (``stream_consumer.
enrich.clean_movie``: genres as names joined by ``|``, ``vote_average``, ``popularity``);
training reads them with the runtimes and titles (``recommender.training.inputs``). A
content signal the log cannot give on a sparse day: two films of the same genres suit
the same user, and the API's vote average and popularity say how well a film is liked
by people outside the log. Pure parsing; a value that is missing or not a number is NaN
(``UNKNOWN`` for the features that read it), never an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def _number(text: object) -> float:
    try:
        value = float(str(text))
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


@dataclass(frozen=True)
class ItemMeta:
    """Per item of a catalog: ``genres`` float32 CSR (n_items x n_genres), each row a unit
    vector over the film's genres (empty when unknown); ``genre_names`` the columns;
    ``vote`` float32 (n_items,), the API's vote average; ``api_pop`` float32, log(1 + the
    API's popularity). NaN where unknown."""

    genres: sp.csr_matrix
    genre_names: tuple[str, ...]
    vote: np.ndarray
    api_pop: np.ndarray

    @classmethod
    def empty(cls, n_items: int) -> ItemMeta:
        nan = np.full(n_items, np.nan, np.float32)
        return cls(sp.csr_matrix((n_items, 0), dtype=np.float32), (), nan, nan.copy())

    @classmethod
    def from_fields(cls, item_ids: np.ndarray, movies: Mapping[str, Mapping[str, str]]) -> ItemMeta:
        """From stored metadata by movie id (``OnlineStore.movies``); movies without any
        are unknown."""
        names: dict[str, int] = {}
        rows, cols = [], []
        vote = np.full(len(item_ids), np.nan, np.float32)
        api_pop = np.full(len(item_ids), np.nan, np.float32)
        for i, movie in enumerate(item_ids):
            fields = movies.get(str(movie))
            if not fields:
                continue
            for genre in filter(None, (g.strip() for g in str(fields.get("genres", "")).split("|"))):
                rows.append(i)
                cols.append(names.setdefault(genre, len(names)))
            vote[i] = _number(fields.get("vote_average"))
            popularity = _number(fields.get("popularity"))
            api_pop[i] = math.log1p(popularity) if popularity >= 0 else math.nan
        genres = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                               shape=(len(item_ids), len(names)), dtype=np.float32)
        genres.sum_duplicates()
        genres.data[:] = 1.0
        norms = np.sqrt(np.asarray(genres.multiply(genres).sum(axis=1)).ravel())
        genres = sp.csr_matrix(sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0)) @ genres,
                               dtype=np.float32)
        return cls(genres, tuple(sorted(names, key=names.__getitem__)), vote, api_pop)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The numeric arrays to save (genre names are not needed to score)."""
        g = self.genres
        return {f"{prefix}genre_data": g.data, f"{prefix}genre_indices": g.indices,
                f"{prefix}genre_indptr": g.indptr,
                f"{prefix}genre_count": np.array([g.shape[1]], np.int64),
                f"{prefix}vote": self.vote, f"{prefix}api_pop": self.api_pop}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str, n_items: int) -> ItemMeta:
        count = int(np.asarray(arrays[f"{prefix}genre_count"])[0])
        genres = sp.csr_matrix((np.asarray(arrays[f"{prefix}genre_data"]),
                                np.asarray(arrays[f"{prefix}genre_indices"]),
                                np.asarray(arrays[f"{prefix}genre_indptr"])), shape=(n_items, count))
        return cls(genres, (), np.asarray(arrays[f"{prefix}vote"]), np.asarray(arrays[f"{prefix}api_pop"]))
