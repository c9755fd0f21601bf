"""Item-item nearest neighbours (``implicit.nearest_neighbours``): the memory-based candidate.

Fit: the item-item similarity S (n_items x n_items, sparse, at most ``k`` neighbours per
row, the item itself usually among them) from ``implicit``'s ``all_pairs_knn`` over the
training matrix weighted as its ``BM25Recommender`` (``kind="bm25"``, Robertson's BM25
with ``k1``, ``b``) or ``CosineRecommender`` (``kind="cosine"``) do. We call the weighting
and ``all_pairs_knn`` directly, since those classes' ``fit`` warns about a COO matrix it
builds itself, and warnings are errors in our tests.

**Input of the similarity** (``similarity_input``): by default the *binary* matrix (who
interacted with what), not the confidences. BM25's term weight ``tf (k1 + 1) / (tf + k1
(1 - b + b dl / avgdl))`` and the cosine assume counts; our confidences are fractions of
a film watched, times a rating factor, times a recency decay (``recommender.confidence``:
values in (0, 1.75], most well under 1). Fed those, a pair of films co-watched long ago
counted a tenth of a pair co-watched last week, and a 2-minute sample as much as a
finished film, so S measured when and how much more than *whether* people watch both;
item-kNN fell far below popularity in the demo (NDCG@20 0.0245 against 0.0512) while the
same code on binary input did better. So S comes from co-occurrence, and the confidences
weigh the user's history at scoring time, where "how much, how recently" belongs.
``similarity_input="confidence"`` keeps the old behaviour for comparison.

**Defaults** (``benchmarks/candidates.py`` on the demo's world, 6,000 users x 3,000 movies
x 25 days, seed 42, docs/models.md): binary input, the cosine (BM25's length
normalisation favours films seen by light users, which hurt here) and 300 neighbours
(with about 6 films a user, 100 neighbours leave most candidates unscored): NDCG@20
0.0539, against 0.0266 for the old BM25 with 100 neighbours on binary input, 0.0244 on
confidences, and popularity's 0.0512.

Score of item j for a history (items i, confidences w_i): sum_i w_i S[i, j], the same sum
``implicit``'s scorer computes. Items with a positive score rank first by score; when
fewer than n have one, the rest are filled by popularity (users per item). Both the
single and the batch path compute the sum as a sparse product of a CSR history row with
S, so they agree to the bit. (implicit's own ``NearestNeighboursScorer`` is faster per
user, 77 against ~250 us in batch on 2 cores, but it serialises all callers on one lock,
needs writable int32 buffers, so no memory-mapped arrays, and breaks ties toward the
higher index.)

Persistence: S as its CSR arrays (``sim_data`` float32, ``sim_indices`` int32,
``sim_indptr`` int64) plus the popularity; no pickle.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from implicit.nearest_neighbours import bm25_weight, normalize

from recommender.models.base import History, ModelError, Recommender, TrainSet, top_n
from recommender.models.foldin import (
    batch_inputs,
    never_recommend,
    pseudo_history,
    take,
)
from recommender.models.implicit_private import private
from recommender.models.popularity import (
    interaction_counts,
    ranking,
    seen_mask,
    top_unseen,
)
from recommender.models.profiles import Profile

KINDS = ("bm25", "cosine")
INPUTS = ("binary", "confidence")
BATCH_ROWS = 256
"""Users per chunk of the batch path: a dense float32 chunk x n_items score block."""


def weighted_matrix(matrix: sp.csr_matrix, kind: str, k1: float, b: float) -> sp.csr_matrix:
    """The users x items matrix whose column dot products are the item similarities
    (the weighting of implicit's ``BM25Recommender`` / ``CosineRecommender``)."""
    weighted = bm25_weight(matrix.T, k1, b) if kind == "bm25" else normalize(matrix.T)
    return weighted.T.tocsr().astype(np.float64)   # all_pairs_knn reads doubles


def item_neighbours(weighted: sp.csr_matrix, k: int, num_threads: int) -> sp.csr_matrix:
    """The item-item similarity (items x items CSR, at most ``k`` per row) of the weighted
    users x items matrix: implicit's ``all_pairs_knn``, or on a release we did not check,
    its public ``ItemItemRecommender.fit``, which calls the same function."""
    knn = private("all_pairs_knn")
    if knn is not None:
        return knn(weighted, k, num_threads=num_threads, show_progress=False).tocsr()
    from implicit.nearest_neighbours import ItemItemRecommender

    model = ItemItemRecommender(K=k, num_threads=num_threads)
    with warnings.catch_warnings():  # its fit's note about the COO matrix it builds
        warnings.simplefilter("ignore")
        model.fit(weighted, show_progress=False)
    return model.similarity.tocsr()


def history_row(history: History, n_items: int) -> sp.csr_matrix:
    """``history`` as one CSR row (float32), indices sorted, repeated items summed: the
    layout of a training row, so its product with S matches the batch path's."""
    row = sp.csr_matrix((np.asarray(history.weights, np.float32),
                         (np.zeros(len(history), np.int64),
                          np.asarray(history.items, np.int64))), shape=(1, n_items))
    row.sum_duplicates()
    return row


def top_positive_rows(scores: np.ndarray, n: int) -> np.ndarray:
    """``base.top_n`` over the positive entries of every row of ``scores`` (float32,
    rows x items): int32 (rows, n), best first, ties toward the lower index, -1 padded.

    The n-th largest value of each row bounds the candidates; every entry at or above
    it (ties at the n-th place included) is then ordered exactly. Partitioning the
    negated scores is ~9x faster here than partitioning at index n_items - n: rows that
    are mostly zeros are a slow case of introselect's high end.
    """
    rows, n_items = scores.shape
    out = np.full((rows, n), -1, dtype=np.int32)
    k = min(n, n_items)
    if k <= 0 or rows == 0:
        return out
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    r, c = np.nonzero((scores >= kth[:, None]) & (scores > 0))
    order = np.lexsort((c, -scores[r, c], r))
    r, c = r[order], c[order]
    rank = np.arange(len(r)) - np.searchsorted(r, r)
    keep = rank < n
    out[r[keep], rank[keep]] = c[keep]
    return out


def fill_rows(picks: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Each row of ``picks`` (-1 padded at the end) completed by the leading items of the
    same row of ``fill``: int32, same shape."""
    counts = (picks >= 0).sum(axis=1, keepdims=True)
    offset = np.arange(picks.shape[1])[None, :] - counts
    spill = np.take_along_axis(fill, np.maximum(offset, 0), axis=1)
    return np.where(offset < 0, picks, spill).astype(np.int32)


class ItemKNNRecommender(Recommender):
    """Item-item kNN over implicit's BM25 or cosine similarity.

    Params: ``kind`` "cosine" (default) or "bm25"; ``k`` 300 neighbours per item;
    ``k1`` 1.2 and ``b`` 0.75 (BM25 term saturation and length normalisation, implicit's
    defaults); ``similarity_input`` "binary" (default) or "confidence" (what S is computed
    from: the module docstring says why binary); ``num_threads`` 0 (all cores, fit only);
    ``liked_weight`` 1.0 (confidence of a liked title in a cold-start history, in the
    training matrix's units).
    """

    name = "itemknn"
    # versions registered before the binary input existed computed S from confidence
    absent_params: ClassVar[dict[str, Any]] = {"similarity_input": "confidence"}

    def __init__(self, *, kind: str = "cosine", k: int = 300, k1: float = 1.2, b: float = 0.75,
                 similarity_input: str = "binary", num_threads: int = 0,
                 liked_weight: float = 1.0) -> None:
        if (kind not in KINDS or similarity_input not in INPUTS or k < 1 or num_threads < 0
                or liked_weight <= 0):
            raise ModelError(f"{self.name}: invalid params kind={kind!r} (one of {KINDS}) "
                             f"similarity_input={similarity_input!r} (one of {INPUTS}) k={k} "
                             f"num_threads={num_threads} liked_weight={liked_weight}")
        super().__init__(kind=kind, k=int(k), k1=float(k1), b=float(b),
                         similarity_input=similarity_input, num_threads=int(num_threads),
                         liked_weight=float(liked_weight))
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)
        self._popularity = np.zeros(0, np.float32)
        self._train: sp.csr_matrix | None = None

    def fit(self, train: TrainSet) -> None:
        if train.n_users == 0 or train.n_items == 0:
            raise ModelError(f"{self.name}: empty training matrix {train.matrix.shape}")
        p = self.params
        source = train.matrix
        if p["similarity_input"] == "binary":
            source = sp.csr_matrix((np.ones_like(source.data), source.indices, source.indptr),
                                   shape=source.shape)
        weighted = weighted_matrix(source, p["kind"], p["k1"], p["b"])
        sim = item_neighbours(weighted, p["k"], p["num_threads"]).astype(np.float32)
        sim.sort_indices()
        self.similarity = sim
        self._popularity = interaction_counts(train.matrix)
        self._train = train.matrix
        self.item_ids = train.item_ids

    # -- answering --------------------------------------------------------------------------

    def _rank(self, history: History, n: int, banned: np.ndarray) -> np.ndarray:
        scores = (history_row(history, len(self.item_ids)) @ self.similarity).toarray()[0]
        picks = top_n(np.where(scores > 0, scores, -np.inf), n, banned)
        if len(picks) == n:
            return picks
        fill = top_n(self._popularity, n - len(picks), np.concatenate([banned, picks]))
        return np.concatenate([picks, fill]).astype(np.int32)

    def recommend(self, history: History, n: int = 20, *, exclude: np.ndarray | None = None,
                  profile: Profile | None = None) -> np.ndarray:
        self._require_fitted()
        if len(history) == 0:
            return self.recommend_new(profile, n, exclude=exclude)
        return self._rank(history, n, never_recommend(history, exclude, profile))

    def recommend_new(self, profile: Profile | None, n: int = 20, *,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        banned = never_recommend(History.empty(), exclude, profile)
        if profile is not None and profile.liked:
            return self._rank(pseudo_history(profile.liked, self.params["liked_weight"]), n,
                              banned)
        return top_n(self._popularity, n, banned)

    def recommend_batch(self, rows: np.ndarray, n: int = 20, *,
                        seen: sp.csr_matrix | None = None) -> np.ndarray:
        """As the base, by sparse products in chunks; ``seen`` (users x items) is the
        training matrix, needed after load (it is not saved). Row by row the same as
        ``recommend`` with the training row as history."""
        self._require_fitted()
        rows, matrix = batch_inputs(rows, seen, self._train, None, len(self.item_ids),
                                    self.name)
        out = np.full((len(rows), n), -1, dtype=np.int32)
        order = ranking(self._popularity)
        for start in range(0, len(rows), BATCH_ROWS):
            history = matrix[rows[start:start + BATCH_ROWS]]
            history.sort_indices()
            scores = (history @ self.similarity).toarray()
            scores[np.repeat(np.arange(history.shape[0]), np.diff(history.indptr)),
                   history.indices] = 0.0          # seen items: no score, as in ``_rank``
            picks = top_positive_rows(scores, n)
            taken = seen_mask(history)
            r, c = np.nonzero(picks >= 0)
            taken[r, picks[r, c]] = True
            out[start:start + history.shape[0]] = fill_rows(picks, top_unseen(order, taken, n))
        return out

    # -- persistence ------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        self._require_fitted()
        return {"sim_data": self.similarity.data.astype(np.float32, copy=False),
                "sim_indices": self.similarity.indices.astype(np.int32, copy=False),
                "sim_indptr": self.similarity.indptr.astype(np.int64, copy=False),
                "popularity": self._popularity}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        n_items = len(self.item_ids)
        data = take(arrays, "sim_data", (None,), self.name)
        indices = take(arrays, "sim_indices", (len(data),), self.name)
        indptr = take(arrays, "sim_indptr", (n_items + 1,), self.name)
        try:
            self.similarity = sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items))
            self.similarity.check_format(full_check=True)
        except ValueError as exc:
            raise ModelError(f"{self.name}: corrupt similarity matrix: {exc}") from exc
        self._popularity = take(arrays, "popularity", (n_items,), self.name)
        self._train = None
