"""Ranking metrics of top-k lists against held-out items, per user, plus catalog-level
measures (coverage, popularity bias, novelty).

Pure and vectorised: a whole population is judged with a few sorts, no Python loop over
users. The inputs everywhere:

- ``recs``: int (n_users, width) item indices, best first, ``-1`` padding at the end of a
  row (``Recommender.recommend_batch`` returns exactly this);
- ``truth``: a list of ``n_users`` integer arrays, the relevant (held-out) items of each
  user, in any order.

The accuracy metrics (binary relevance, cutoff ``k``; ``rel_j`` = 1 if the item at rank
``j`` (1-based) is relevant, ``R`` = number of distinct relevant items, ``m = min(R, k)``):

- ``precision@k = sum_j rel_j / k``. The denominator is ``k`` even when a model returns
  fewer items: an empty slot is a miss.
- ``recall@k = sum_j rel_j / m``. The truncated denominator of Liang et al. 2018
  ("Variational Autoencoders for Collaborative Filtering", WWW, sec. 4.2): with plain
  ``/ R`` a user with 100 held-out films could never score above 0.2 at k = 20, so the
  mean would measure how active the test users were. Identical to plain recall when
  ``R <= k``; 1.0 means the list is as full of relevant items as it can be.
- ``ndcg@k = DCG / IDCG`` with ``DCG = sum_j rel_j / log2(j + 1)`` and ``IDCG`` the DCG of
  a list whose first ``m`` items are relevant (Järvelin & Kekäläinen 2002, "Cumulated
  gain-based evaluation of IR techniques", TOIS 20(4), with the log2 discount from rank 1).
- ``map@k``: mean over users of ``AP@k = sum_j P@j * rel_j / m`` (Manning, Raghavan &
  Schütze 2008, "Introduction to Information Retrieval", sec. 8.4, truncated at ``k`` and
  normalised by ``m`` as in the common ``apk`` of Hamner's ml_metrics, so a perfect list
  scores 1).
- ``hit_rate@k = 1`` if any of the top ``k`` is relevant.

**Users with no relevant item** (every held-out item was unknown to the model, say) have
no defined recall, NDCG or AP; their per-user values are NaN for every accuracy metric and
they are left out of the means (``nanmean``), so a model is neither punished nor rewarded
for users nobody can judge. ``Judged.evaluable`` says who counts.

A repeated item in one list counts once, at its first rank: a buggy model cannot score
twice with one good guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from movierec.errors import MovierecError

ACCURACY: tuple[str, ...] = ("precision", "recall", "ndcg", "map", "hit_rate")
"""Names of the per-user accuracy metrics, in report order."""


class EvalError(MovierecError):
    """Offline-evaluation inputs that do not fit together (shapes, lengths, cutoffs, ids),
    or a model that breaks its interface during evaluation."""


@dataclass(frozen=True)
class Judged:
    """Top-k lists judged against the truth.

    ``hits``: bool (n_users, k), the item at that rank is relevant (padding and repeats
    never are); ``n_relevant``: int64 (n_users,), distinct relevant items per user.
    """

    hits: np.ndarray
    n_relevant: np.ndarray

    @property
    def k(self) -> int:
        return self.hits.shape[1]

    @property
    def evaluable(self) -> np.ndarray:
        """bool (n_users,): users with at least one relevant item."""
        return self.n_relevant > 0

    @property
    def ideal(self) -> np.ndarray:
        """int64 (n_users,): ``m = min(R, k)``, the most hits a list could hold."""
        return np.minimum(self.n_relevant, self.k)


def first_occurrence(recs: np.ndarray) -> np.ndarray:
    """bool, same shape as ``recs`` (2-d): the entry is a real item (>= 0) seen for the
    first time in its row."""
    first = recs >= 0
    ranked = np.sort(recs, axis=1)
    rows = np.flatnonzero(((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] >= 0)).any(axis=1))
    if len(rows):  # repeats are rare: locate them only in the rows that have some
        sub = recs[rows]
        order = np.argsort(sub, axis=1, kind="stable")  # stable: the first rank comes first
        ordered = np.take_along_axis(sub, order, axis=1)
        repeat = np.zeros(sub.shape, dtype=bool)
        repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
        unrepeated = np.empty_like(repeat)
        np.put_along_axis(unrepeated, order, ~repeat, axis=1)
        first[rows] &= unrepeated
    return first


def flatten(truth: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The truth as two aligned int64 arrays: (user position, item), users ascending."""
    lengths = np.fromiter((len(t) for t in truth), dtype=np.int64, count=len(truth))
    items = (np.concatenate(list(truth)).astype(np.int64, copy=False) if lengths.sum()
             else np.zeros(0, np.int64))  # one concatenate, not a conversion per user
    return np.repeat(np.arange(len(truth), dtype=np.int64), lengths), items


def judge(recs: np.ndarray, truth: Sequence[np.ndarray], k: int | None = None) -> Judged:
    """Mark the relevant entries of the top ``k`` of each list (``k`` defaults to the
    width of ``recs``; narrower lists are padded with misses)."""
    if len(recs) != len(truth):
        raise EvalError(f"{len(recs)} lists for {len(truth)} users: need one per user")
    return judge_flat(recs, *flatten(truth), k)


def judge_flat(recs: np.ndarray, users: np.ndarray, items: np.ndarray,
               k: int | None = None) -> Judged:
    """``judge`` with the truth given as ``flatten`` returns it: ``users`` positions into
    ``recs`` (any order; ascending, as ``flatten`` gives them, sorts fastest), ``items``
    aligned."""
    recs = np.asarray(recs)
    if recs.ndim != 2:
        raise EvalError(f"recs must be (n_users, width), got shape {recs.shape}")
    k = recs.shape[1] if k is None else int(k)
    if k < 1:
        raise EvalError(f"cutoff k must be >= 1, got {k}")
    top = np.full((len(recs), k), -1, dtype=np.int64)
    width = min(k, recs.shape[1])
    top[:, :width] = recs[:, :width]
    if len(items) and (items.min() < 0 or users.min() < 0 or users.max() >= len(recs)):
        raise EvalError("truth holds negative item indices or users without a list")
    # One int64 key per (user, item): user * span + item. 1M users x 30k items = 3e10, far
    # inside int64. Padding (-1) makes keys that collide with the previous user's last
    # item; ``first_occurrence`` masks padding out, so those never count.
    span = max(int(max(items.max(initial=-1), top.max(initial=-1))) + 1, 1)
    # Sort + adjacent compare, not np.unique: 60x faster here on 4.5M keys (numpy 2.4).
    keys = np.sort(users * span + items, kind="stable")  # runs by user already: timsort
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
    n_relevant = np.bincount(keys // span, minlength=len(recs)).astype(np.int64)
    rec_keys = np.arange(len(top), dtype=np.int64)[:, None] * span + top
    # Membership by binary search in the sorted keys (np.isin is ~7x slower at 20M).
    found = np.zeros(top.shape, dtype=bool)
    if len(keys):
        pos = np.minimum(np.searchsorted(keys, rec_keys), len(keys) - 1)
        found = keys[pos] == rec_keys
    return Judged(found & first_occurrence(top), n_relevant)


def _masked(values: np.ndarray, judged: Judged) -> np.ndarray:
    """float64 per-user values, NaN for users without relevant items."""
    return np.where(judged.evaluable, values, np.nan)


def _ideal_safe(judged: Judged) -> np.ndarray:
    return np.maximum(judged.ideal, 1)  # unevaluable users are masked afterwards


def precision_at_k(judged: Judged) -> np.ndarray:
    """float64 (n_users,): hits in the top k / k."""
    return _masked(judged.hits.sum(axis=1) / judged.k, judged)


def recall_at_k(judged: Judged) -> np.ndarray:
    """float64 (n_users,): hits in the top k / min(R, k)."""
    return _masked(judged.hits.sum(axis=1) / _ideal_safe(judged), judged)


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def ndcg_at_k(judged: Judged) -> np.ndarray:
    """float64 (n_users,): DCG@k / ideal DCG@k, binary relevance, log2 discount."""
    disc = _discounts(judged.k)
    dcg = judged.hits @ disc
    idcg = np.concatenate([[0.0], np.cumsum(disc)])[_ideal_safe(judged)]
    return _masked(dcg / idcg, judged)


def map_at_k(judged: Judged) -> np.ndarray:
    """float64 (n_users,): AP@k = sum over relevant ranks j of precision@j, / min(R, k)."""
    hits = judged.hits.astype(np.float64)
    precision_at_j = np.cumsum(hits, axis=1) / np.arange(1, judged.k + 1)
    return _masked((precision_at_j * hits).sum(axis=1) / _ideal_safe(judged), judged)


def hit_rate_at_k(judged: Judged) -> np.ndarray:
    """float64 (n_users,): 1.0 if any of the top k is relevant, else 0.0."""
    return _masked(np.asarray(judged.hits.any(axis=1), dtype=np.float64), judged)


def accuracy(recs: np.ndarray, truth: Sequence[np.ndarray],
             k: int | None = None) -> dict[str, np.ndarray]:
    """Every metric of ``ACCURACY``, per user (float64, NaN where not evaluable)."""
    judged = judge(recs, truth, k)
    return {"precision": precision_at_k(judged), "recall": recall_at_k(judged),
            "ndcg": ndcg_at_k(judged), "map": map_at_k(judged),
            "hit_rate": hit_rate_at_k(judged)}


def mean_over_users(values: np.ndarray) -> tuple[float, int]:
    """(mean of the finite values, how many there were); (NaN, 0) when none are."""
    finite = np.isfinite(values)
    n = int(finite.sum())
    return (float(values[finite].mean()) if n else float("nan")), n


# -- catalog-level measures -----------------------------------------------------------------

def item_user_counts(matrix: sp.csr_matrix) -> np.ndarray:
    """int64 (n_items,): distinct training users who interacted with each item (the CSR
    matrix holds one stored entry per (user, item))."""
    return np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.int64)


def coverage(recs: np.ndarray, n_items: int) -> float:
    """Catalog coverage: share of the ``n_items`` recommended to at least one user
    (Ge, Delgado-Battenfeld & Jannach 2010, "Beyond accuracy", RecSys, prediction
    coverage over the lists actually served)."""
    if n_items < 1:
        raise EvalError("coverage needs a catalog of at least one item")
    shown = np.unique(recs[recs >= 0])
    return len(shown) / n_items


def popularity_percentile(counts: np.ndarray) -> np.ndarray:
    """float64 (n_items,): each item's training popularity as a percentile in [0, 1], 1 =
    the most popular, ties sharing their mean rank. Percentiles rather than raw counts
    (the "average recommendation popularity" of Abdollahpouri et al. 2019) so the number
    does not depend on the size of the training window."""
    if len(counts) < 2:
        return np.ones(len(counts))
    return (rankdata(counts, method="average") - 1.0) / (len(counts) - 1)


def self_information(counts: np.ndarray, n_users: int) -> np.ndarray:
    """float64 (n_items,): ``-log2(p_i)`` with ``p_i`` = share of the ``n_users`` training
    users who interacted with item i (Zhou et al. 2010, "Solving the apparent
    diversity-accuracy dilemma of recommender systems", PNAS 107(10), novelty). An item
    nobody interacted with is counted as one user's, so its novelty is the finite maximum
    ``log2(n_users)``."""
    if n_users < 1:
        raise EvalError("novelty needs at least one training user")
    return np.log2(n_users / np.maximum(counts, 1))


def mean_item_value(recs: np.ndarray, per_item: np.ndarray) -> np.ndarray:
    """float64 (n_users,): mean of ``per_item`` over each list's items (padding ignored);
    NaN for an empty list. With ``popularity_percentile`` this is the popularity bias of
    each user's list, with ``self_information`` its novelty."""
    valid = recs >= 0
    values = np.where(valid, per_item[np.where(valid, recs, 0)], 0.0)
    n = valid.sum(axis=1)
    return np.where(n > 0, values.sum(axis=1) / np.maximum(n, 1), np.nan)
