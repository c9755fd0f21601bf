"""The hybrid: a learning-to-rank second stage over ALS, item-kNN and popularity.

ALS learns tastes but misses what is new and trending now; decayed popularity knows what
is trending but nothing of the user; item-kNN knows what goes with what the user just
watched. Under a temporal split each wins somewhere, so a ranker learns how to weigh them
per (user, film) from features of all three (``hybrid_features``), in the spirit of the
two-stage recommenders of production systems (candidate generation, then ranking;
Covington et al. 2016, "Deep Neural Networks for YouTube Recommendations", RecSys).

**Fit** (``fit(train)``), with no look at the future:

1. The last ``validation_share`` of the training span (by each interaction's latest event,
   ``TrainSet.last_time``) is held out: the first stages are fitted on what came before
   (``validation_base``), as if that were all there was.
2. For up to ``max_train_users`` users with an interaction in the held-out period (new
   users included: the segment's cold-start vector, no kNN scores), the first stages
   propose candidates; a
   candidate the user went on to interact with is a positive. A LightGBM ranker learns to
   score them from the features, the content ones included (genres, the movie API's vote
   average and popularity, ``recommender.models.item_meta``): on a sparse day the log
   says little of a user, what a film is says more. The objective is pointwise
   (``binary``, logistic loss on every candidate) by default: with about one positive
   among about 130 candidates per user, LambdaRank's pairwise gradients (Burges 2010,
   "From RankNet to LambdaRank to LambdaMART: An Overview") were noisier; at full scale
   (1M users, 2 days; 12k sampled test users) the pointwise ranker beat popularity by 20%
   against 4% for LambdaRank, on the demo's world they tied (docs/models.md).
   ``objective`` selects.
3. The first stages are fitted again on the whole training set (the freshest interactions
   are the ones trending now), and the ranker is kept.

With too little held-out data to learn from (fewer than ``MIN_RANKER_USERS`` users with a
held-out interaction among their candidates: a tiny log, a log with no time spread), the
candidates are ordered by reciprocal rank fusion of the three stages instead, the sum of
``1 / (60 + rank)`` (Cormack, Clarke & Buettcher 2009, "Reciprocal rank fusion outperforms
Condorcet and individual rank learning methods", SIGIR): no parameters to learn, and no
stage can dominate by the scale of its scores. ``fit_facts`` says which was used (the
registry keeps it with the version).

**Answer**: the first stages score every film for the user (ALS by request-time fold-in
of the current history, item-kNN from the history, the user's segment's popularity), the
union of their top films are the candidates, the ranker orders them. New users: the
ALS cold-start vector (liked titles from the self-description, else the segment's mean),
liked titles as the kNN history, the segment's popularity. (The ranker learns new users
without their liked titles, which the training set does not carry matched to films; so
a new user who named some is scored by what it learned from established users. At full scale the
hybrid ties popularity for new users.) The ranker serves through a numpy copy of its
trees (``trees``): LightGBM is only needed to train.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import scipy.sparse as sp

from recommender.models.als import ALSRecommender
from recommender.models.base import History, ModelError, Recommender, TrainSet, top_n
from recommender.models.foldin import batch_inputs, never_recommend, pseudo_history, take
from recommender.models.hybrid_features import (
    FEATURES,
    ItemFacts,
    Popularity,
    UserBlock,
    candidates,
    feature_rows,
    release_years,
    top_per_row,
)
from recommender.models.item_meta import ItemMeta
from recommender.models.itemknn import ItemKNNRecommender, fill_rows
from recommender.models.popularity import (
    SECONDS_PER_DAY,
    decay_weights,
    decayed_scores,
    interaction_counts,
    ranking,
    segment_sums,
    shrunk_segment_scores,
    top_unseen,
)
from recommender.models.profiles import N_SEGMENTS, Profile, segment_onehot
from recommender.models.trees import TreeArrays, from_lightgbm

OBJECTIVES = ("binary", "lambdarank", "rank_xendcg")
MIN_RANKER_USERS = 50
RRF_K = 60.0
"""The constant of reciprocal rank fusion (Cormack et al. 2009 use 60)."""
BLOCK = 512
"""Users per block of the batch paths: bounds the dense b x n_items score blocks."""
ALS_KEYS = ("factors", "iterations", "regularization", "alpha", "cg_steps", "item_cg_steps")


def validation_base(train: TrainSet, share: float) -> tuple[TrainSet, sp.csr_matrix]:
    """(the training set as it stood ``share`` of its span before its cut, the held-out
    interactions as a users x items matrix of the same shape). The span is the oldest
    interaction's age; an interaction whose latest event falls in the held-out stretch
    leaves the base whole (the base cannot see that the user came back to it)."""
    span = float(train.last_time.max()) if train.matrix.nnz else 0.0
    held = span * share
    keep = train.last_time >= held  # aligned with the CSR's data, row by row
    matrix = train.matrix
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))

    def part(mask: np.ndarray) -> sp.csr_matrix:
        # built from (row, col) pairs in CSR order, so rows and columns stay sorted
        out = sp.csr_matrix((matrix.data[mask], (rows[mask], matrix.indices[mask])),
                            shape=matrix.shape, dtype=np.float32)
        out.sort_indices()
        return out

    base = TrainSet(part(keep), train.user_ids, train.item_ids, train.last_time[keep] - held,
                    train.as_of - timedelta(seconds=held), train.profiles, train.item_meta)
    return base, part(~keep)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.where(norms > 0, matrix / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def segment_genres(matrix: sp.csr_matrix, row_segments: np.ndarray, genres: np.ndarray) -> np.ndarray:
    """float32 (N_SEGMENTS + 1, n_genres): the unit genre profile of what each segment's
    users watched, then everyone's (the row of a user without a profile)."""
    watched = sp.csr_matrix((np.ones_like(matrix.data), matrix.indices, matrix.indptr),
                            shape=matrix.shape) @ genres
    by_segment = segment_onehot(row_segments) @ watched
    return unit_rows(np.vstack([np.asarray(by_segment), np.asarray(watched).sum(axis=0, keepdims=True)]))


class HybridRecommender(Recommender):
    """See the module docstring. Params: the ALS ones (``factors``, ``iterations``,
    ``regularization``, ``alpha``, ``cg_steps``, ``item_cg_steps``), ``knn_k`` (item-kNN
    neighbours), ``half_life_days`` and ``short_half_life_days`` (the long and the
    trending popularity), ``shrinkage`` (segment blend), the candidates each first stage
    proposes (``n_als``, ``n_knn``, ``n_seg``, ``n_recent``), ``validation_share``,
    ``max_train_users``, the ranker's ``objective`` (``OBJECTIVES``; the module docstring
    says why binary), ``trees``, ``leaves``, ``max_depth`` (the numpy predictor walks
    every tree to this depth), ``learning_rate`` and ``min_leaf``,
    ``num_threads`` (0: all cores, fit only), ``random_state``, ``liked_weight``."""

    name = "hybrid"

    def __init__(self, *, factors: int = 16, iterations: int = 15, regularization: float = 1.0,
                 alpha: float = 20.0, cg_steps: int = 3, item_cg_steps: int | None = None,
                 knn_k: int = 300, half_life_days: float = 7.0, short_half_life_days: float = 1.0,
                 shrinkage: float = 100.0, n_als: int = 100, n_knn: int = 50, n_seg: int = 50,
                 n_recent: int = 30, validation_share: float = 0.15, max_train_users: int = 200_000,
                 trees: int = 100, leaves: int = 15, max_depth: int = 6, learning_rate: float = 0.08,
                 min_leaf: int = 50, objective: str = "binary",
                 num_threads: int = 0, random_state: int = 0, liked_weight: float = 1.0) -> None:
        item_cg_steps = cg_steps if item_cg_steps is None else item_cg_steps
        counts = (n_als, n_knn, n_seg, n_recent)
        if (min(counts) < 0 or sum(counts) < 1 or not 0 < validation_share < 1 or trees < 1
                or leaves < 2 or max_depth < 1 or objective not in OBJECTIVES
                or not learning_rate > 0 or min_leaf < 1 or max_train_users < 1
                or not half_life_days > 0 or not short_half_life_days > 0 or knn_k < 1):
            raise ModelError(f"{self.name}: invalid params (candidates {counts}, "
                             f"validation_share {validation_share}, objective {objective!r}, "
                             f"trees {trees}, leaves {leaves}, max_depth {max_depth}, "
                             f"learning_rate {learning_rate}, min_leaf {min_leaf}, "
                             f"max_train_users {max_train_users}, half lives {half_life_days}/"
                             f"{short_half_life_days}, knn_k {knn_k})")
        super().__init__(
            factors=int(factors), iterations=int(iterations), regularization=float(regularization),
            alpha=float(alpha), cg_steps=int(cg_steps), item_cg_steps=int(item_cg_steps),
            knn_k=int(knn_k), half_life_days=float(half_life_days),
            short_half_life_days=float(short_half_life_days), shrinkage=float(shrinkage),
            n_als=int(n_als), n_knn=int(n_knn), n_seg=int(n_seg), n_recent=int(n_recent),
            validation_share=float(validation_share), max_train_users=int(max_train_users),
            trees=int(trees), leaves=int(leaves), max_depth=int(max_depth),
            learning_rate=float(learning_rate), objective=str(objective),
            min_leaf=int(min_leaf), num_threads=int(num_threads), random_state=int(random_state),
            liked_weight=float(liked_weight))
        self._als = self._new_als()
        self._knn = self._new_knn()
        empty = np.zeros(0, np.float32)
        self._facts = ItemFacts(empty, empty, empty, empty, np.zeros((0, 0), np.float32), empty, empty)
        self._pop = Popularity(np.zeros((N_SEGMENTS + 1, 0), np.float32),
                               np.zeros((N_SEGMENTS + 1, 0), np.int64), np.zeros(0, np.int64),
                               np.zeros((N_SEGMENTS + 1, 0), np.float32))
        self._row_segments = np.zeros(0, np.int16)
        self._ranker: TreeArrays | None = None
        self._train: sp.csr_matrix | None = None

    def _new_als(self) -> ALSRecommender:
        p = self.params
        return ALSRecommender(**{k: p[k] for k in ALS_KEYS}, num_threads=p["num_threads"],
                              random_state=p["random_state"], liked_weight=p["liked_weight"])

    def _new_knn(self) -> ItemKNNRecommender:
        p = self.params
        return ItemKNNRecommender(k=p["knn_k"], num_threads=p["num_threads"],
                                  liked_weight=p["liked_weight"])

    @property
    def _order_width(self) -> int:
        """How much of each popularity order to keep: the most candidates asked of it,
        plus room for the banned items of a heavy history."""
        p = self.params
        return max(p["n_seg"], p["n_recent"]) + 1000

    @property
    def _per_source(self) -> tuple[int, int, int, int]:
        p = self.params
        return p["n_als"], p["n_knn"], p["n_seg"], p["n_recent"]

    # -- learning -----------------------------------------------------------------------------

    def fit(self, train: TrainSet) -> None:
        if train.n_users == 0 or train.n_items == 0:
            raise ModelError(f"{self.name}: empty training matrix {train.matrix.shape}")
        base, held = validation_base(train, self.params["validation_share"])
        self._fit_stages(base)
        x, y, groups = self._ranking_examples(base, held)
        self._ranker = self._train_ranker(x, y, groups) if len(groups) >= MIN_RANKER_USERS else None
        self._fit_stages(train)
        self.fit_facts = {"ranker": self.params["objective"] if self._ranker is not None
                          else "rank fusion",
                          "ranker_users": len(groups), "ranker_rows": int(len(y)),
                          "ranker_positives": int(y.sum()), "held_out_interactions": int(held.nnz)}

    def _fit_stages(self, train: TrainSet) -> None:
        p = self.params
        self._als = self._new_als()
        self._als.fit(train)
        self._knn = self._new_knn()
        self._knn.fit(train)
        long_decay = decay_weights(train.last_time, p["half_life_days"] * SECONDS_PER_DAY)
        short_decay = decay_weights(train.last_time, p["short_half_life_days"] * SECONDS_PER_DAY)
        long_scores = decayed_scores(train.matrix, long_decay)
        self._row_segments = train.user_segments().astype(np.int16)
        sums, counts = segment_sums(train.matrix, long_decay, self._row_segments)
        segment_pop = np.log1p(shrunk_segment_scores(
            sums, counts, long_scores, train.n_users, p["shrinkage"]) * max(train.n_users, 1))
        global_pop = np.log1p(long_scores)
        short = np.log1p(decayed_scores(train.matrix, short_decay))
        meta = train.item_meta if train.item_meta is not None else ItemMeta.empty(train.n_items)
        genres = np.asarray(meta.genres.todense(), dtype=np.float32)
        # popularity rows: the segments', then the global one (a user with no profile)
        self._pop = Popularity.build(np.vstack([segment_pop, global_pop]).astype(np.float32),
                                     short, self._order_width,
                                     segment_genres(train.matrix, self._row_segments, genres))
        years = release_years(train.item_ids)
        self._facts = ItemFacts(
            pop_long=global_pop.astype(np.float32),
            pop_short=short.astype(np.float32),
            item_users=np.log1p(interaction_counts(train.matrix)).astype(np.float32),
            release_age=(train.as_of.year - years).astype(np.float32),
            genres=genres, vote=meta.vote.astype(np.float32), api_pop=meta.api_pop.astype(np.float32))
        self._train = train.matrix
        self.item_ids = train.item_ids

    @property
    def _order(self) -> np.ndarray:
        """All items by all-time users, ties toward the lower index (the fill order)."""
        return ranking(self._facts.item_users)

    def _ranking_examples(self, base: TrainSet, held: sp.csr_matrix
                          ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Feature rows, labels and query sizes of the users with held-out interactions."""
        users = np.flatnonzero(np.diff(held.indptr) > 0)
        rng = np.random.default_rng(self.params["random_state"])
        if len(users) > self.params["max_train_users"]:
            users = np.sort(rng.choice(users, self.params["max_train_users"], replace=False))
        xs, ys, groups = [], [], []
        for start in range(0, len(users), BLOCK):
            part = users[start:start + BLOCK]
            block = self._train_block(part, base.matrix)
            rows, items = candidates(block, self._pop, self._per_source)
            labels = np.asarray(held[part][rows, items]).ravel() > 0
            sizes = np.bincount(rows, minlength=len(part))
            hits = np.bincount(rows, weights=labels, minlength=len(part))
            keep_user = hits > 0  # a query with no positive teaches nothing
            keep = keep_user[rows]
            if keep.any():
                xs.append(feature_rows(block, self._facts, self._pop, rows[keep], items[keep]))
                ys.append(labels[keep].astype(np.int32))
                groups += sizes[keep_user].tolist()
        if not groups:
            return np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.int32), []
        return np.concatenate(xs), np.concatenate(ys), groups

    def _train_ranker(self, x: np.ndarray, y: np.ndarray, groups: list[int]) -> TreeArrays:
        import lightgbm  # training only: it imports pandas, which serving must not

        p = self.params
        # use_missing off: no feature is ever NaN (sentinels stand for "unknown"), and the
        # numpy predictor (``trees``) implements exactly that decision rule
        data = lightgbm.Dataset(x, y, group=groups, feature_name=list(FEATURES),
                                params={"verbosity": -1, "use_missing": False})
        booster = lightgbm.train(
            {"objective": p["objective"], "metric": "None",
             "use_missing": False, "num_leaves": p["leaves"], "max_depth": p["max_depth"],
             "learning_rate": p["learning_rate"],
             "min_data_in_leaf": p["min_leaf"], "feature_fraction": 0.9,
             "lambdarank_truncation_level": 40, "num_threads": p["num_threads"],
             "seed": p["random_state"], "deterministic": True, "force_row_wise": True,
             "verbosity": -1},
            data, num_boost_round=p["trees"])
        return from_lightgbm(booster.dump_model())

    # -- the blocks the features read ---------------------------------------------------------

    def _block(self, vectors: np.ndarray, history: sp.csr_matrix, segments: np.ndarray,
               banned: np.ndarray, *, new: bool = False) -> UserBlock:
        """The first stages' scores of ``b`` users (user vectors for ALS, histories as a
        b x n_items confidence matrix for kNN, segments for popularity, -1: none known,
        the global row). ``new``: the history is a cold-start pseudo-history (liked
        titles), not the users' own, so their own-history features say "new"."""
        counts = np.diff(history.indptr) * (not new)
        item_users = self._facts.item_users
        sums = np.asarray(history.sign() @ item_users.astype(np.float64)).ravel()
        user_pop = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)
        return UserBlock(
            als=(vectors @ self._als.item_factors.T).astype(np.float32),
            user_genres=unit_rows(np.asarray(history @ self._facts.genres, dtype=np.float32))
            if not new else np.zeros((len(vectors), self._facts.genres.shape[1]), np.float32),
            knn=np.asarray((history @ self._knn.similarity).todense(), dtype=np.float32),
            pop_rows=np.where(segments >= 0, segments, N_SEGMENTS).astype(np.int64),
            banned=banned,
            user_items=np.log1p(counts).astype(np.float32),
            user_pop=user_pop)

    def _train_block(self, rows: np.ndarray, matrix: sp.csr_matrix) -> UserBlock:
        """Training users ``rows`` of ``matrix`` (the matrix the stages were fitted on):
        trained ALS factors, or the segment's cold-start vector for a user without any."""
        history = matrix[rows]
        segments = self._row_segments[rows]
        vectors = self._als.user_factors[rows].copy()
        empty = np.diff(history.indptr) == 0
        if empty.any():
            vectors[empty] = self._cold_vectors(segments[empty])
        return self._block(vectors, history, segments, history.toarray() > 0)

    def _cold_vectors(self, segments: np.ndarray) -> np.ndarray:
        """ALS's cold-start vector of each segment (zeros where the segment is too small)."""
        als = self._als
        enough = als._segment_users[segments] >= als.params["min_segment_users"]
        return np.where(enough[:, None], als._segment_factors[segments], 0.0).astype(np.float32)

    def _rank(self, block: UserBlock, n: int) -> np.ndarray:
        rows, items = candidates(block, self._pop, self._per_source)
        features = feature_rows(block, self._facts, self._pop, rows, items)
        if self._ranker is not None:
            scores = self._ranker.predict(features)
        else:  # reciprocal rank fusion of the ALS, kNN and segment ranks
            ranks = features[:, [FEATURES.index(f) for f in ("als_rank", "knn_rank", "seg_rank")]]
            scores = (1.0 / (RRF_K + ranks)).sum(axis=1)
        picks = top_per_row(rows, items, scores, len(block.banned), n)
        if (picks >= 0).all():
            return picks
        # fewer candidates than n: the rest by all-time popularity, as the other candidates
        # fill (the list comes short only when the catalog runs out)
        banned = block.banned.copy()
        r, c = np.nonzero(picks >= 0)
        banned[r, picks[r, c]] = True
        return fill_rows(picks, top_unseen(self._order, banned, n))

    # -- answering ----------------------------------------------------------------------------

    def _one(self, vector: np.ndarray, history: History, banned: np.ndarray, segment: int,
             n: int, *, new: bool = False) -> np.ndarray:
        mask = np.zeros((1, len(self.item_ids)), dtype=bool)
        mask[0, banned] = True
        block = self._block_one(vector.astype(np.float32), history, segment, mask, new=new)
        out = self._rank(block, n)[0]
        return out[out >= 0]

    def _block_one(self, vector: np.ndarray, history: History, segment: int,
                   banned: np.ndarray, *, new: bool) -> UserBlock:
        """``_block`` for one user at request time, without building sparse matrices
        (at the demo's scale their construction cost more than the arithmetic: about 0.3 of
        1.4 ms a request, docs/benchmarks.md). Equal
        to ``_block`` of the history's row up to float rounding; a history with a repeated
        item (which a sparse row would sum) takes the sparse path."""
        items = np.asarray(history.items, np.int64)
        weights = np.asarray(history.weights, np.float32)
        if len(np.unique(items)) != len(items):
            row = sp.csr_matrix((weights, (np.zeros(len(items), np.int64), items)),
                                shape=(1, len(self.item_ids)))
            return self._block(vector[None, :], row, np.array([segment]), banned, new=new)
        nonzero = weights != 0
        count = int(np.count_nonzero(nonzero)) * (not new)
        facts, sim = self._facts, self._knn.similarity
        mainstream = float(np.sign(weights) @ facts.item_users[items].astype(np.float64))
        starts, ends = sim.indptr[items], sim.indptr[items + 1]
        lengths = ends - starts
        at = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        knn = np.bincount(sim.indices[at], weights=np.repeat(weights, lengths) * sim.data[at],
                          minlength=len(self.item_ids))
        genres = weights @ facts.genres[items] if not new else np.zeros(facts.genres.shape[1])
        return UserBlock(
            als=(vector @ self._als.item_factors.T).astype(np.float32)[None, :],
            user_genres=unit_rows(np.asarray(genres, np.float32)[None, :]),
            knn=knn.astype(np.float32)[None, :],
            pop_rows=np.array([segment if segment >= 0 else N_SEGMENTS], np.int64),
            banned=banned,
            user_items=np.log1p(np.array([count], np.float32)),
            user_pop=np.array([mainstream / count if count else np.nan], np.float32))

    def recommend(self, history: History, n: int = 20, *, exclude: np.ndarray | None = None,
                  profile: Profile | None = None) -> np.ndarray:
        self._require_fitted()
        if len(history) == 0:
            return self.recommend_new(profile, n, exclude=exclude)
        segment = profile.segment if profile is not None else -1
        return self._one(self._als.user_vector(history), history,
                         never_recommend(history, exclude, profile), segment, n)

    def recommend_new(self, profile: Profile | None, n: int = 20, *,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        self._require_fitted()
        banned = never_recommend(History.empty(), exclude, profile)
        if profile is None:  # nothing known of the user: the most popular, as ALS does
            return top_n(self._facts.item_users, n, banned)
        segment = profile.segment
        if profile.liked:
            liked = pseudo_history(profile.liked, self.params["liked_weight"])
            vector = self._als.user_vector(liked)
        else:
            liked = History.empty()
            vector = self._cold_vectors(np.array([segment]))[0]
        # the liked titles feed kNN and ALS, but the user has no history of their own
        return self._one(vector, liked, banned, segment, n, new=True)

    def recommend_batch(self, rows: np.ndarray, n: int = 20, *,
                        seen: sp.csr_matrix | None = None) -> np.ndarray:
        self._require_fitted()
        rows, matrix = batch_inputs(rows, seen, self._train, len(self._row_segments),
                                    len(self.item_ids), self.name)
        out = np.full((len(rows), n), -1, dtype=np.int32)
        for start in range(0, len(rows), BLOCK):
            part = rows[start:start + BLOCK]
            out[start:start + len(part)] = self._rank(self._train_block(part, matrix), n)
        return out

    # -- persistence --------------------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        self._require_fitted()
        ranker = self._ranker.arrays("ranker_") if self._ranker is not None else {}
        return {**{f"als_{k}": v for k, v in self._als.arrays().items()},
                **{f"knn_{k}": v for k, v in self._knn.arrays().items()},
                "pop_table": self._pop.table, "pop_orders": self._pop.orders,
                "pop_recent": self._pop.recent, "pop_genres": self._pop.genres,
                "genres": self._facts.genres, "vote": self._facts.vote,
                "api_pop": self._facts.api_pop, "pop_long": self._facts.pop_long,
                "pop_short": self._facts.pop_short, "item_users": self._facts.item_users,
                "release_age": self._facts.release_age, "row_segments": self._row_segments,
                **ranker}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        n_items = len(self.item_ids)
        for part, prefix in ((self._als, "als_"), (self._knn, "knn_")):
            part.item_ids = self.item_ids
            part.restore({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        genres = take(arrays, "genres", (n_items, None), self.name)
        self._pop = Popularity(take(arrays, "pop_table", (N_SEGMENTS + 1, n_items), self.name),
                               take(arrays, "pop_orders", (N_SEGMENTS + 1, None), self.name),
                               take(arrays, "pop_recent", (None,), self.name),
                               take(arrays, "pop_genres", (N_SEGMENTS + 1, genres.shape[1]), self.name))
        per_item = {k: take(arrays, k, (n_items,), self.name)
                    for k in ("pop_long", "pop_short", "item_users", "release_age", "vote", "api_pop")}
        self._facts = ItemFacts(**per_item, genres=genres)
        self._row_segments = take(arrays, "row_segments", (None,), self.name)
        self._ranker = TreeArrays.from_arrays(arrays, "ranker_") if "ranker_feature" in arrays else None
        self._train = None
