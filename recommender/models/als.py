"""Implicit-feedback matrix factorisation (ALS, ``implicit`` on the CPU): the main candidate.

Training is ``implicit``'s native conjugate-gradient ALS solver (Takács et al. 2011),
driven one half-iteration at a time by ``als_solve.alternate``, on the confidence matrix
of Hu, Koren & Volinsky (2008): c_ui = 1 + alpha * r_ui. ``implicit`` itself would use
c_ui = alpha * r_ui, so we hand it the Hu confidences with its own alpha at 1; the
objective trained is then exactly the one ``foldin.fold_in`` solves at request time, and
a fold-in of a training user's history reproduces their trained factor.

Serving:
- ``recommend(history)``: fold the current history into a user vector (``fold_in``, an
  exact f x f solve), score every item with Y x, ban what was seen.
- ``recommend_new(profile)``: (a) liked titles from the self-description, folded in as a
  pseudo-history of confidence ``liked_weight``; else (b) the mean trained vector of the
  profile's demographic segment when it has at least ``min_segment_users`` training
  users; else (c) global popularity (users per item). Liked and disliked titles are banned.
- ``recommend_batch(rows)``: the trained user factors through ``implicit``'s top-k kernel.

BLAS runs one thread during fit and batch scoring (``threadpool_limits``): ``implicit``'s
own threads do the parallel work, and a threaded BLAS under them is slower (measured on 2
cores, 27k items x 64 factors: 22k users/s with one BLAS thread against 13.9k with two).
``recommend`` does not touch the limits (about 0.5 ms per call with ``threadpool_limits``):
a serving process should pin BLAS to one thread once at start, because a threaded
Y x behind busy cores stalls (p99 8 ms against 0.19 ms single-threaded).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk
from threadpoolctl import threadpool_limits

from recommender.models.als_solve import alternate
from recommender.models.base import History, ModelError, Recommender, TrainSet, top_n
from recommender.models.foldin import (
    batch_inputs,
    fold_in,
    gram,
    hu_confidence,
    never_recommend,
    pseudo_history,
    take,
)
from recommender.models.popularity import interaction_counts
from recommender.models.profiles import N_SEGMENTS, Profile, segment_onehot

BATCH_ROWS = 4096
"""Users per call of the top-k kernel in ``recommend_batch``."""

FILTERED = -np.finfo(np.float32).max
"""The score ``implicit``'s top-k gives a filtered item; such slots become -1."""


class SeenRows:
    """The rows of a CSR matrix as ``implicit.cpu.topk`` reads its ``filter_query_items``:
    ``rows[i].indices`` (implicit 0.7, ``_topk_batch`` in ``cpu/topk.pyx``).

    A scipy row lookup costs tens of microseconds and runs under the GIL, which halved the
    batch throughput (12k against 22k users/s on 2 cores); slicing the index arrays here
    costs about one. If a later implicit reads another attribute, this fails loudly.
    """

    def __init__(self, matrix: sp.csr_matrix) -> None:
        self._indptr, self._indices = matrix.indptr, matrix.indices

    def __getitem__(self, row: int) -> SimpleNamespace:
        return SimpleNamespace(indices=self._indices[self._indptr[row]:self._indptr[row + 1]])


def segment_means(user_factors: np.ndarray,
                  user_segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean user vector per demographic segment (float32, N_SEGMENTS x f; zero for an
    empty segment) and training users per segment (int64, N_SEGMENTS)."""
    onehot = segment_onehot(user_segments)
    counts = np.bincount(user_segments, minlength=N_SEGMENTS).astype(np.int64)
    sums = np.asarray(onehot @ user_factors, dtype=np.float64)
    means = sums / np.maximum(counts, 1)[:, None]
    return means.astype(np.float32), counts


class ALSRecommender(Recommender):
    """ALS with request-time fold-in and a three-step cold start.

    Params (defaults are starting points for the offline tuning):
    ``factors`` 64; ``regularization`` 0.1 (lambda, added to the f x f diagonal);
    ``alpha`` 20 (confidence per unit of the training matrix's values); ``iterations`` 15;
    ``cg_steps`` 3 (conjugate-gradient steps per user per iteration); ``item_cg_steps``
    None (steps per item per iteration; None: ``cg_steps``; see ``als_solve``);
    ``random_state`` 0
    (seed of the initial factors; None for a fresh one); ``num_threads`` 0 (all cores);
    ``liked_weight`` 1.0 (the confidence a liked title gets in a cold-start fold-in, in the
    training matrix's units, as if the user had watched it once fully);
    ``min_segment_users`` 20 (fewest training users for a segment's mean vector).
    """

    name = "als"

    def __init__(self, *, factors: int = 64, regularization: float = 0.1, alpha: float = 20.0,
                 iterations: int = 15, cg_steps: int = 3, item_cg_steps: int | None = None,
                 random_state: int | None = 0, num_threads: int = 0, liked_weight: float = 1.0,
                 min_segment_users: int = 20) -> None:
        item_cg_steps = cg_steps if item_cg_steps is None else item_cg_steps
        if (factors < 1 or iterations < 1 or cg_steps < 1 or item_cg_steps < 1 or num_threads < 0
                or regularization < 0 or alpha < 0 or liked_weight <= 0
                or min_segment_users < 0):
            raise ModelError(f"{self.name}: invalid params factors={factors} "
                             f"iterations={iterations} cg_steps={cg_steps}/{item_cg_steps} "
                             f"num_threads={num_threads} regularization={regularization} "
                             f"alpha={alpha} liked_weight={liked_weight} "
                             f"min_segment_users={min_segment_users}")
        super().__init__(factors=int(factors), regularization=float(regularization),
                         alpha=float(alpha), iterations=int(iterations),
                         cg_steps=int(cg_steps), item_cg_steps=int(item_cg_steps),
                         random_state=random_state,
                         num_threads=int(num_threads), liked_weight=float(liked_weight),
                         min_segment_users=int(min_segment_users))
        self.user_factors = np.zeros((0, factors), np.float32)
        self.item_factors = np.zeros((0, factors), np.float32)
        self._segment_factors = np.zeros((N_SEGMENTS, factors), np.float32)
        self._segment_users = np.zeros(N_SEGMENTS, np.int64)
        self._popularity = np.zeros(0, np.float32)
        self._warm: tuple[np.ndarray, np.ndarray, int] | None = None
        self._train: sp.csr_matrix | None = None
        self._yty: np.ndarray | None = None

    # -- learning ---------------------------------------------------------------------------

    def warm_from(self, item_ids: np.ndarray, item_factors: np.ndarray, *,
                  iterations: int) -> bool:
        """Start the next ``fit`` from known item factors (a previous model's, by movie id)
        with ``iterations`` instead of ``params["iterations"]``: a retraining after one
        more day of log starts where the last one ended. False (and nothing changes)
        when the factor counts differ: a warm start needs the same shape of taste space."""
        if item_factors.ndim != 2 or item_factors.shape[1] != self.params["factors"]:
            return False
        if iterations < 1:
            raise ModelError(f"{self.name}: warm iterations must be >= 1, got {iterations}")
        self._warm = (np.asarray(item_ids, dtype=object), np.asarray(item_factors, np.float32),
                      int(iterations))
        return True

    def _item_init(self, train: TrainSet) -> tuple[np.ndarray | None, int]:
        """The warm start's item factors aligned to ``train``'s items (movies the previous
        model did not know start random, as a cold fit's do) and its iterations; (None,
        the params' iterations) without a warm start."""
        if self._warm is None:
            self.fit_facts.pop("warm_start", None)
            return None, self.params["iterations"]
        ids, factors, iterations = self._warm
        position = {m: i for i, m in enumerate(ids.tolist())}
        known = np.array([position.get(m, -1) for m in train.item_ids.tolist()], np.int64)
        rng = np.random.default_rng(self.params["random_state"])
        init = rng.random((train.n_items, self.params["factors"]), dtype=np.float32) * 0.01
        init[known >= 0] = factors[known[known >= 0]]
        self.fit_facts = {**self.fit_facts, "warm_start": {
            "items_known": int(np.count_nonzero(known >= 0)), "items": int(train.n_items),
            "iterations": iterations}}
        return init, iterations

    def fit(self, train: TrainSet) -> None:
        if train.n_users == 0 or train.n_items == 0:
            raise ModelError(f"{self.name}: empty training matrix {train.matrix.shape}")
        p = self.params
        confidence = sp.csr_matrix(train.matrix, dtype=np.float32, copy=True)
        confidence.data = hu_confidence(confidence.data, p["alpha"])
        item_init, iterations = self._item_init(train)
        with threadpool_limits(1, "blas"):
            users, items = alternate(
                confidence, factors=p["factors"], iterations=iterations,
                regularization=p["regularization"], user_cg_steps=p["cg_steps"],
                item_cg_steps=p["item_cg_steps"], num_threads=p["num_threads"],
                random_state=p["random_state"], item_init=item_init)
        self._warm = None  # one fit only: the next starts cold unless told again
        self.user_factors = np.ascontiguousarray(users, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(items, dtype=np.float32)
        self._segment_factors, self._segment_users = segment_means(self.user_factors,
                                                                   train.user_segments())
        self._popularity = interaction_counts(train.matrix)
        self._train = train.matrix
        self._yty = None
        self.item_ids = train.item_ids

    # -- answering --------------------------------------------------------------------------

    @property
    def yty(self) -> np.ndarray:
        """Y^T Y (float64, f x f), computed on first use and kept."""
        if self._yty is None:
            self._yty = gram(self.item_factors)
        return self._yty

    def user_vector(self, history: History) -> np.ndarray:
        """The fold-in of ``history`` (float32, f); see ``foldin.fold_in``."""
        self._require_fitted()
        return fold_in(self.item_factors, self.yty, history, alpha=self.params["alpha"],
                       regularization=self.params["regularization"])

    def recommend(self, history: History, n: int = 20, *, exclude: np.ndarray | None = None,
                  profile: Profile | None = None) -> np.ndarray:
        self._require_fitted()
        if len(history) == 0:
            return self.recommend_new(profile, n, exclude=exclude)
        scores = self.item_factors @ self.user_vector(history)
        return top_n(scores, n, never_recommend(history, exclude, profile))

    def recommend_new(self, profile: Profile | None, n: int = 20, *,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        banned = never_recommend(History.empty(), exclude, profile)
        if profile is not None and profile.liked:
            liked = pseudo_history(profile.liked, self.params["liked_weight"])
            scores = self.item_factors @ self.user_vector(liked)
        elif (profile is not None
              and self._segment_users[profile.segment] >= self.params["min_segment_users"]):
            scores = self.item_factors @ self._segment_factors[profile.segment]
        else:
            scores = self._popularity
        return top_n(scores, n, banned)

    def recommend_batch(self, rows: np.ndarray, n: int = 20, *,
                        seen: sp.csr_matrix | None = None) -> np.ndarray:
        """As the base, from the trained user factors; ``seen`` (users x items) is the
        training matrix, needed after load (it is not saved)."""
        self._require_fitted()
        rows, matrix = batch_inputs(rows, seen, self._train, len(self.user_factors),
                                    len(self.item_ids), self.name)
        out = np.full((len(rows), n), -1, dtype=np.int32)
        k = min(n, len(self.item_ids))   # implicit pads k > n_items with item 0
        if k <= 0:
            return out
        items = np.ascontiguousarray(self.item_factors)
        with threadpool_limits(1, "blas"):
            for start in range(0, len(rows), BATCH_ROWS):
                part = rows[start:start + BATCH_ROWS]
                ids, scores = topk(items, self.user_factors[part], k,
                                   filter_query_items=SeenRows(matrix[part]),
                                   num_threads=self.params["num_threads"])
                out[start:start + len(part), :k] = np.where(scores > FILTERED, ids, -1)
        return out

    # -- persistence ------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        self._require_fitted()
        return {"user_factors": self.user_factors, "item_factors": self.item_factors,
                "segment_factors": self._segment_factors,
                "segment_users": self._segment_users, "popularity": self._popularity}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        f, n_items = self.params["factors"], len(self.item_ids)
        self.user_factors = take(arrays, "user_factors", (None, f), self.name)
        self.item_factors = take(arrays, "item_factors", (n_items, f), self.name)
        self._segment_factors = take(arrays, "segment_factors", (N_SEGMENTS, f), self.name)
        self._segment_users = take(arrays, "segment_users", (N_SEGMENTS,), self.name)
        self._popularity = take(arrays, "popularity", (n_items,), self.name)
        self._train = None
        self._yty = None
