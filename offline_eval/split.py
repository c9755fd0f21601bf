"""The leakage-free temporal split, and what each user engaged with after the cut.

``temporal_split`` cuts event rows at one instant: train rows strictly before ``cut``,
test rows at or after it (and before ``end`` if given). ``build_truth`` then turns the test
rows into the evaluation's ground truth against a ``TrainSet`` built from the train rows.

Why this is leakage-free: everything a model learns from (the training matrix, its
confidences, the runtimes estimated for them, popularity counts, the catalog of items
and users) is computed by ``recommender.dataset.build_trainset`` from the train rows
only, and ``build_trainset`` itself drops anything at or after its ``as_of``. The truth
comes only from the test rows, and ``build_truth`` refuses test rows from before the
train set's ``as_of``. So no test event can shape a feature, and no train event can count
as a hit. A random split would instead let the model learn a user's future to predict
their past.

"Relevant" (``RelevanceParams``): the truth holds, per user, the movies of the test period
the user liked:

- rated: the latest rating decides, relevant if at least ``min_rating_share`` of the
  scale (4 of 5, 8 of 10). Explicit feedback beats implicit: a film watched to the end
  and rated 1 star was not a good recommendation.
- unrated: relevant if the user watched at least ``min_minutes`` (60) minutes or
  ``min_fraction`` (50%) of the runtime, whichever is less (so short films count too).
  Less is a sampled start the user abandoned. The bar was first 20 min / 25%; on a
  simulated world that counted half-hearted organic picks of popular films as hits, and
  the offline ranking then put the popularity baseline above item-kNN while the oracle
  (the true utility users get from each model's lists) put it clearly last. At 50% the
  offline ranking of all three candidates agrees with the oracle's
  (tests/unit/test_pipeline.py; figures in docs/models.md).

Movies the user already had in the training period are left out: the models never
recommend seen items, so they could never be hits. Movies missing from the train
catalog cannot be recommended either; they are left out too, but counted
(``unknown_item_pairs``, ``unknown_items``), so a short train window that misses the new
releases shows in the report instead of silently flattering the scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from offline_eval.ranking_metrics import EvalError
from recommender.dataset import Events, aggregate, cut_ms, event_ms, item_runtimes
from recommender.models.base import TrainSet
from recommender.models.ids import positions


@dataclass(frozen=True)
class RelevanceParams:
    """When a test-period interaction counts as relevant (see the module docstring)."""

    min_minutes: float = 60.0  # minutes watched that always suffice
    min_fraction: float = 0.5  # share of the runtime that suffices (short films)
    min_rating_share: float = 0.8  # relevant ratings: >= ceil(share * scale), 4/5 or 8/10
    runtime_quantile: float = 0.95  # runtime estimate where none is given (as the dataset's)
    min_runtime: float = 20.0  # minutes; floor of an estimated runtime

    def __post_init__(self) -> None:
        if not (self.min_minutes > 0 and 0 < self.min_fraction <= 1 and 0 < self.min_rating_share <= 1
                and 0 < self.runtime_quantile <= 1 and self.min_runtime > 0):  # fmt: skip
            raise EvalError(f"bad relevance parameters: {self}")


@dataclass(frozen=True)
class Truth:
    """What each test user engaged with, as item indices of a ``TrainSet``.

    - ``user_ids``: int64 (n,), ascending: test users with at least one relevant item.
    - ``rows``: int64 (n,), each user's row in the train matrix, -1 for a new user.
    - ``items``: n int32 arrays, ascending item indices (columns of the train matrix) of
      the user's relevant test items, none of which the user had in training.
    - ``unknown_item_pairs``: relevant (user, movie) pairs dropped because the movie is
      not in the train catalog; ``unknown_items``: how many distinct such movies.
    - ``seen_pairs``: relevant pairs dropped because the user had the item in training.
    """

    user_ids: np.ndarray
    rows: np.ndarray
    items: tuple[np.ndarray, ...]
    unknown_item_pairs: int
    unknown_items: int
    seen_pairs: int

    @property
    def new_user(self) -> np.ndarray:
        """bool (n,): the user has no row in the train set (cold start)."""
        return self.rows < 0

    def __len__(self) -> int:
        return len(self.user_ids)


def temporal_split(events: Events, cut: datetime, *, end: datetime | None = None) -> tuple[Events, Events]:
    """(rows before ``cut``, rows in [``cut``, ``end``)) of an Arrow table or pandas frame,
    each of the input's type and row order. Times compare at the store's millisecond."""
    if any(t is not None and t.tzinfo is not None for t in (cut, end)):
        raise EvalError("cut and end are naive site-local times, like the log's")
    low = cut_ms(cut)
    high = None if end is None else cut_ms(end)
    if high is not None and high <= low:
        raise EvalError(f"the test period [{cut}, {end}) is empty")
    ms = event_ms(events)
    train, test = ms < low, ms >= low
    if high is not None:
        test &= ms < high
    if isinstance(events, pd.DataFrame):
        return events[train].reset_index(drop=True), events[test].reset_index(drop=True)
    return events.filter(pa.array(train)), events.filter(pa.array(test))


def build_truth(train: TrainSet, test_events: Events, *, runtimes: Mapping[str, object] | None = None,
                rating_scale: int = 5, params: RelevanceParams = RelevanceParams()) -> Truth:  # fmt: skip
    """The relevant test-period items of every test user, against ``train``.

    ``test_events`` must hold no row before ``train.as_of``. Runtimes come from
    ``runtimes`` where given, else are estimated from the test rows (the same estimator
    as the dataset's): the truth never looks at train rows beyond ``train`` itself.
    """
    if rating_scale < 2:
        raise EvalError(f"rating_scale must be at least 2, got {rating_scale}")
    ms = event_ms(test_events)
    if len(ms) and ms.min() < cut_ms(train.as_of):
        raise EvalError(f"test rows start before the train set's as_of {train.as_of}: that would leak")
    test = aggregate(test_events)
    runtime = item_runtimes(test, runtimes, quantile=params.runtime_quantile, floor=params.min_runtime)
    minutes = test.max_minute.astype(np.float32) + 1
    enough = np.minimum(np.float32(params.min_minutes), np.float32(params.min_fraction) * runtime[test.item])
    liked = test.rating >= math.ceil(params.min_rating_share * rating_scale - 1e-9)  # 0.7 * 10 = 7.000...1
    relevant = np.where(test.rating >= 1, liked, (test.max_minute >= 0) & (minutes >= enough))

    column = {movie: j for j, movie in enumerate(train.item_ids)}
    test_column = np.array([column.get(movie, -1) for movie in test.item_ids], dtype=np.int64)
    cols = test_column[test.item]
    unknown = relevant & (cols < 0)
    rows = positions(train.user_ids, test.user_ids)[test.user]
    seen = relevant & ~unknown & (rows >= 0) & _in_matrix(train, rows, cols)
    keep = relevant & ~unknown & ~seen

    users, cols = test.user[keep], cols[keep]
    order = np.lexsort((cols, users))  # entries come by movie id; columns may differ in order
    users, cols = users[order], cols[order].astype(np.int32)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
    present = users[starts]
    return Truth(
        user_ids=test.user_ids[present],
        rows=positions(train.user_ids, test.user_ids[present]),
        items=tuple(np.split(cols, starts[1:])) if len(users) else (),
        unknown_item_pairs=int(unknown.sum()),
        unknown_items=len(np.unique(test.item[unknown])),
        seen_pairs=int(seen.sum()),
    )


def _in_matrix(train: TrainSet, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether (rows[k], cols[k]) is a stored entry of ``train.matrix`` (False where either
    is -1). Vectorised through one sorted key per stored entry."""
    matrix = train.matrix
    n_items = max(train.n_items, 1)
    stored_rows = np.repeat(np.arange(train.n_users, dtype=np.int64), np.diff(matrix.indptr))
    stored = np.sort(stored_rows * n_items + matrix.indices)
    wanted = np.maximum(rows, 0) * n_items + np.maximum(cols, 0)
    if len(stored) == 0:
        return np.zeros(len(rows), dtype=bool)
    pos = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
    return (stored[pos] == wanted) & (rows >= 0) & (cols >= 0)
