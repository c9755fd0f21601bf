"""What the hybrid's ranker sees: candidates from each first stage, and one feature row per
(user, candidate item). Pure numpy over plain arrays; the same code builds the rows the
ranker is trained on, the rows of an offline batch and the rows of one request, so the
three cannot disagree.

A block of ``b`` users arrives as dense score blocks (``b x n_items``) of the personal
stages (ALS, item-kNN), each user's popularity row (their demographic segment's, or the
global one), the items each user must never get (``banned``, b x n_items bool) and
per-user facts. Candidates are the union of each stage's top ``per_source[i]`` unbanned
items: ALS, kNN, the user's popularity row and recent popularity; the popularity stages
read precomputed orders, so a request sorts only its two personal score rows. A
candidate's features (``FEATURES``, in order) are:

- ``als_score``/``als_rank``: the factor model's score and its rank among the user's
  candidates (rank 0 = best): scores are not comparable across users, ranks are;
- ``knn_score``/``knn_rank``: item-item similarity summed over the user's history;
- ``seg_pop``/``seg_rank``: the user's demographic segment's decayed popularity;
- ``pop_long``/``pop_short``: log(1 + users) decayed with a long and a short half-life,
  and ``trend``, their difference: what is rising now (a film whose short-term
  popularity outruns its long-term one);
- ``item_users``: log(1 + all-time users), ``release_age``: years since the release year
  in the movie id (``UNKNOWN`` when the id has none);
- ``genre_match``: the cosine between the film's genres and the genres of the user's
  history (weighted by confidence; ``UNKNOWN`` when new), ``seg_genre_match``: the same
  against the genres the user's segment watches; ``vote`` and ``api_pop``: the movie
  API's vote average and log(1 + popularity) (``UNKNOWN`` when not known): content the
  log of a sparse day cannot give;
- ``user_items``: log(1 + the user's history length), ``user_new``: 1 when the user has
  no history (cold start), ``user_pop``: the mean ``item_users`` of the user's history
  (how mainstream the user is; ``UNKNOWN`` when new), ``pop_gap``: ``item_users -
  user_pop`` (``UNKNOWN`` when new).

No feature is ever NaN: an unknown value is the sentinel ``UNKNOWN`` (-1, below every
real value of these features), so the ranker can split it off on its own and its numpy
copy needs no missing-value rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

FEATURES: tuple[str, ...] = (
    "als_score", "als_rank", "knn_score", "knn_rank", "seg_pop", "seg_rank",
    "pop_long", "pop_short", "trend", "item_users", "release_age",
    "genre_match", "seg_genre_match", "vote", "api_pop",
    "user_items", "user_new", "user_pop", "pop_gap",
)
_YEAR = re.compile(r"\+(\d{4})$")
UNKNOWN = -1.0
"""The value of a feature that is not known (no release year, no history)."""


def release_years(item_ids: np.ndarray) -> np.ndarray:
    """float32 (n_items,): the release year a movie id ends with (``...+1999``), NaN when
    it has none or an implausible one."""
    out = np.full(len(item_ids), np.nan, dtype=np.float32)
    for i, movie in enumerate(item_ids):
        match = _YEAR.search(str(movie))
        if match and 1880 <= int(match.group(1)) <= 2100:
            out[i] = float(match.group(1))
    return out


@dataclass(frozen=True)
class ItemFacts:
    """Per-item arrays (float32, n_items) the features read; ``release_age`` is in years
    at the training cut; ``genres`` float32 (n_items, n_genres), unit rows (zero when
    unknown); ``vote`` and ``api_pop`` NaN when unknown."""

    pop_long: np.ndarray
    pop_short: np.ndarray
    item_users: np.ndarray
    release_age: np.ndarray
    genres: np.ndarray
    vote: np.ndarray
    api_pop: np.ndarray

    @property
    def trend(self) -> np.ndarray:
        return self.pop_short - self.pop_long


@dataclass(frozen=True)
class Popularity:
    """The popularity stages: ``table`` float32 (n_rows, n_items), one row per segment
    then the global row, log(1 + decayed users); ``orders`` int64 (n_rows, width) each
    row's items best first, and ``recent`` int64 (width,) the items by short-term
    popularity; ``width`` is what a candidate list may need past the banned items."""

    table: np.ndarray
    orders: np.ndarray
    recent: np.ndarray
    genres: np.ndarray
    """float32 (n_rows, n_genres): the unit genre profile each row's users watch."""

    @classmethod
    def build(cls, table: np.ndarray, recent_scores: np.ndarray, width: int,
              genres: np.ndarray) -> Popularity:
        width = min(width, table.shape[1])

        def order(scores: np.ndarray) -> np.ndarray:  # ties toward the lower index
            return np.lexsort((np.arange(len(scores)), -scores))[:width]

        return cls(table, np.stack([order(row) for row in table]) if len(table) else
                   np.zeros((0, width), np.int64), order(recent_scores), genres)


@dataclass(frozen=True)
class UserBlock:
    """``b`` users' inputs: the personal stages' score blocks (float32, b x n_items), each
    user's popularity row (int64, b: a segment, or the global row), the banned mask (bool,
    b x n_items) and per-user facts (float32, b)."""

    als: np.ndarray
    knn: np.ndarray
    pop_rows: np.ndarray
    banned: np.ndarray
    user_items: np.ndarray
    user_pop: np.ndarray
    user_genres: np.ndarray
    """float32 (b, n_genres): each user's unit genre profile (zero when new)."""


def _top_mask(scores: np.ndarray, banned: np.ndarray, n: int) -> np.ndarray:
    """bool (b x n_items): each row's ``n`` best unbanned items (ties: any of them)."""
    b, n_items = scores.shape
    n = min(n, n_items)
    mask = np.zeros((b, n_items), dtype=bool)
    if n <= 0 or b == 0:
        return mask
    open_scores = np.where(banned, -np.inf, scores)
    top = np.argpartition(-open_scores, n - 1, axis=1)[:, :n]
    rows = np.repeat(np.arange(b), n)
    keep = np.isfinite(open_scores[rows, top.ravel()])
    mask[rows[keep], top.ravel()[keep]] = True
    return mask


def _first_open(orders: np.ndarray, banned: np.ndarray, n: int, mask: np.ndarray) -> None:
    """Mark in ``mask`` each row's first ``n`` items of its order (b x width) not banned."""
    if n <= 0 or orders.shape[1] == 0:
        return
    rows = np.arange(len(orders))[:, None]
    ok = ~banned[rows, orders]
    keep = ok & (np.cumsum(ok, axis=1) <= n)
    r, c = np.nonzero(keep)
    mask[r, orders[r, c]] = True


def candidates(block: UserBlock, pop: Popularity, per_source: tuple[int, int, int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items) int64 of every candidate, rows ascending: the union of the top
    ``per_source`` (ALS, kNN, the user's popularity row, recent popularity) unbanned
    items of each user. kNN only proposes items it scored above zero."""
    n_als, n_knn, n_seg, n_recent = per_source
    mask = _top_mask(block.als, block.banned, n_als)
    mask |= _top_mask(np.where(block.knn > 0, block.knn, -np.inf), block.banned, n_knn)
    _first_open(pop.orders[block.pop_rows], block.banned, n_seg, mask)
    _first_open(np.broadcast_to(pop.recent, (len(block.banned), len(pop.recent))), block.banned,
                n_recent, mask)
    rows, items = np.nonzero(mask)
    return rows.astype(np.int64), items.astype(np.int64)


def row_ranks(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float32: the rank of each value among its row's (0 = highest; rows ascending).
    Equal values share the best of their ranks ("1224" competition ranking): most
    candidates have no kNN score at all, and numbering those zeros apart would give the
    ranker a feature that only follows the movie ids' order."""
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    order = np.lexsort((-values, rows))
    sorted_rows, sorted_values = rows[order], values[order]
    position = np.arange(len(rows))
    starts = np.searchsorted(sorted_rows, sorted_rows)  # first position of each row
    new_value = np.ones(len(rows), dtype=bool)
    new_value[1:] = (sorted_rows[1:] != sorted_rows[:-1]) | (sorted_values[1:] != sorted_values[:-1])
    first_of_tie = np.maximum.accumulate(np.where(new_value, position, 0))
    ranks = np.empty(len(rows), np.float32)
    ranks[order] = first_of_tie - starts
    return ranks


def feature_rows(block: UserBlock, items_facts: ItemFacts, pop: Popularity, rows: np.ndarray,
                 items: np.ndarray) -> np.ndarray:
    """float32 (n_candidates, len(FEATURES)): the features of each (row, item) pair."""
    als = block.als[rows, items]
    knn = block.knn[rows, items]
    seg = pop.table[block.pop_rows[rows], items]
    item_users = items_facts.item_users[items]
    user_pop = block.user_pop[rows]
    known = ~np.isnan(user_pop)
    user_pop = np.where(known, user_pop, UNKNOWN)
    release_age = items_facts.release_age[items]
    item_genres = items_facts.genres[items]
    genre_match = np.where(known, np.einsum("ij,ij->i", block.user_genres[rows], item_genres), UNKNOWN)
    seg_genre_match = np.einsum("ij,ij->i", pop.genres[block.pop_rows[rows]], item_genres)
    vote, api_pop = items_facts.vote[items], items_facts.api_pop[items]
    columns = [
        als, row_ranks(rows, als), knn, row_ranks(rows, knn), seg, row_ranks(rows, seg),
        items_facts.pop_long[items], items_facts.pop_short[items], items_facts.trend[items],
        item_users, np.where(np.isnan(release_age), UNKNOWN, release_age),
        genre_match, seg_genre_match, np.where(np.isnan(vote), UNKNOWN, vote),
        np.where(np.isnan(api_pop), UNKNOWN, api_pop),
        block.user_items[rows], (block.user_items[rows] == 0).astype(np.float32),
        user_pop, np.where(known, item_users - user_pop, UNKNOWN),
    ]
    return np.stack([np.asarray(c, dtype=np.float32) for c in columns], axis=1)


def top_per_row(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, b: int,
                n: int) -> np.ndarray:
    """int32 (b, n): each row's ``n`` items with the highest ``scores``, best first, -1
    padded (ties toward the lower item index)."""
    out = np.full((b, n), -1, dtype=np.int32)
    if len(rows) == 0 or n <= 0:
        return out
    order = np.lexsort((items, -scores, rows))
    r, c = rows[order], items[order]
    rank = np.arange(len(r)) - np.searchsorted(r, r)
    keep = rank < n
    out[r[keep], rank[keep]] = c[keep]
    return out
