"""Time-decayed popularity, globally or per demographic segment: the baseline candidate,
and the ranking pieces the other candidates fall back on.

Score of item i (``decayed_scores``): sum over the users u who interacted with i of
0.5 ** (age_ui / half_life), age_ui being the seconds from the interaction's latest event
to the training cut (``TrainSet.last_time``). A user counts once per item however much
they watched; recent interest counts fully, interest one half-life old counts half.

Per segment (``by_segment=True``), the segment's scores are shrunk toward the global ones
in proportion to its size (``shrunk_segment_scores``), an additive-smoothing (Bayesian
average) blend with prior strength k = ``shrinkage`` users:

    score_s,i = (n_s * seg_s,i / n_s + k * global_i / N) / (n_s + k)
              = (seg_s,i + k * global_i / N) / (n_s + k),

where seg_s,i is the segment's decayed sum, n_s its training users and N all training
users. Both terms are per-user rates, so a segment of a few users ranks nearly as the
whole population does and a segment of thousands nearly as itself.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommender.models.base import History, ModelError, Recommender, TrainSet, top_n
from recommender.models.foldin import batch_inputs, never_recommend, take
from recommender.models.profiles import N_SEGMENTS, Profile, segment_onehot

SECONDS_PER_DAY = 86_400.0
BATCH_ROWS = 1024
"""Users per chunk of the batch path; bounds its dense masks to ~BATCH_ROWS x n_items bytes."""


# -- pure scoring ------------------------------------------------------------------------


def interaction_counts(matrix: sp.csr_matrix) -> np.ndarray:
    """Users per item (float32, n_items): the undecayed popularity the other candidates
    fall back on when nothing else is known."""
    return np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float32)


def decay_weights(last_time: np.ndarray, half_life_s: float) -> np.ndarray:
    """0.5 ** (age / half_life) per interaction (float64, same shape as ``last_time``, s)."""
    return np.exp2(-np.asarray(last_time, dtype=np.float64) / half_life_s)


def decayed_scores(matrix: sp.csr_matrix, decay: np.ndarray) -> np.ndarray:
    """Sum of ``decay`` (aligned with ``matrix.data``) per item (float64, n_items)."""
    return np.bincount(matrix.indices, weights=decay, minlength=matrix.shape[1])


def segment_sums(matrix: sp.csr_matrix, decay: np.ndarray,
                 user_segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decayed sums per segment (float64, N_SEGMENTS x n_items) and training users per
    segment (int64, N_SEGMENTS)."""
    onehot = segment_onehot(user_segments)
    decayed = sp.csr_matrix((decay, matrix.indices, matrix.indptr), shape=matrix.shape)
    sums = (onehot @ decayed).toarray()
    return sums, np.bincount(user_segments, minlength=N_SEGMENTS).astype(np.int64)


def shrunk_segment_scores(sums: np.ndarray, counts: np.ndarray, global_scores: np.ndarray,
                          n_users: int, shrinkage: float) -> np.ndarray:
    """(seg + k * global / N) / (n_s + k) per segment row (see the module docstring);
    a segment with neither users nor shrinkage gets the global rate."""
    rate = global_scores / max(n_users, 1)
    denom = counts[:, None] + shrinkage
    blended = (sums + shrinkage * rate[None, :]) / np.where(denom > 0, denom, 1.0)
    return np.where(denom > 0, blended, rate[None, :])


def ranking(scores: np.ndarray) -> np.ndarray:
    """All items best first (int64), ties toward the lower index, as ``base.top_n`` does."""
    scores = np.asarray(scores, dtype=np.float32)
    return np.lexsort((np.arange(len(scores)), -scores))


def seen_mask(rows: sp.csr_matrix) -> np.ndarray:
    """Dense bool (n_rows, n_items): True where the row has a stored entry."""
    mask = np.zeros(rows.shape, dtype=bool)
    mask[np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr)), rows.indices] = True
    return mask


def top_unseen(order: np.ndarray, banned: np.ndarray, n: int) -> np.ndarray:
    """Per row, the first ``n`` items of ``order`` (items best first) not ``banned``
    (bool, n_rows x n_items); int32 (n_rows, n), -1 padded."""
    width = min(len(order), n + int(banned.sum(axis=1).max(initial=0)))
    candidates = order[:width]
    ok = ~banned[:, candidates]
    rank = np.cumsum(ok, axis=1)
    r, c = np.nonzero(ok & (rank <= n))
    out = np.full((banned.shape[0], n), -1, dtype=np.int32)
    out[r, rank[r, c] - 1] = candidates[c]
    return out


# -- the candidate ---------------------------------------------------------------------------


class PopularityRecommender(Recommender):
    """Most popular unseen items, by time-decayed popularity (optionally per segment).

    Params: ``half_life_days`` (days, default 7: a week-old view counts half),
    ``by_segment`` (default False), ``shrinkage`` (k of the segment blend, in users,
    default 100).
    """

    name = "popularity"

    def __init__(self, *, half_life_days: float = 7.0, by_segment: bool = False,
                 shrinkage: float = 100.0) -> None:
        if not half_life_days > 0 or not shrinkage >= 0:
            raise ModelError(f"{self.name}: need half_life_days > 0 and shrinkage >= 0, got "
                             f"{half_life_days}, {shrinkage}")
        super().__init__(half_life_days=float(half_life_days), by_segment=bool(by_segment),
                         shrinkage=float(shrinkage))
        self._scores = np.zeros(0, np.float32)
        self._segment_scores = np.zeros((N_SEGMENTS, 0), np.float32)
        self._user_segments = np.zeros(0, np.int16)
        self._train: sp.csr_matrix | None = None

    def fit(self, train: TrainSet) -> None:
        if train.n_users == 0 or train.n_items == 0:
            raise ModelError(f"{self.name}: empty training matrix {train.matrix.shape}")
        decay = decay_weights(train.last_time, self.params["half_life_days"] * SECONDS_PER_DAY)
        global_scores = decayed_scores(train.matrix, decay)
        self._scores = global_scores.astype(np.float32)
        if self.params["by_segment"]:
            self._user_segments = train.user_segments().astype(np.int16)
            sums, counts = segment_sums(train.matrix, decay, self._user_segments)
            self._segment_scores = shrunk_segment_scores(
                sums, counts, global_scores, train.n_users, self.params["shrinkage"],
            ).astype(np.float32)
        self._train = train.matrix
        self.item_ids = train.item_ids

    def _scores_for(self, profile: Profile | None) -> np.ndarray:
        if self.params["by_segment"] and profile is not None:
            return self._segment_scores[profile.segment]
        return self._scores

    def recommend(self, history: History, n: int = 20, *, exclude: np.ndarray | None = None,
                  profile: Profile | None = None) -> np.ndarray:
        self._require_fitted()
        return top_n(self._scores_for(profile), n, never_recommend(history, exclude, profile))

    def recommend_new(self, profile: Profile | None, n: int = 20, *,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        return self.recommend(History.empty(), n, exclude=exclude, profile=profile)

    def recommend_batch(self, rows: np.ndarray, n: int = 20, *,
                        seen: sp.csr_matrix | None = None) -> np.ndarray:
        """As the base; ``seen`` (users x items) is the training matrix, needed after load.
        With ``by_segment`` each row is ranked by its training segment."""
        self._require_fitted()
        by_segment = self.params["by_segment"]
        rows, matrix = batch_inputs(rows, seen, self._train,
                                    len(self._user_segments) if by_segment else None,
                                    len(self.item_ids), self.name)
        out = np.full((len(rows), n), -1, dtype=np.int32)
        groups = self._user_segments[rows] if by_segment else np.zeros(len(rows), np.int16)
        for group in np.unique(groups):
            order = ranking(self._segment_scores[group] if by_segment else self._scores)
            where = np.flatnonzero(groups == group)
            for start in range(0, len(where), BATCH_ROWS):
                part = where[start:start + BATCH_ROWS]
                out[part] = top_unseen(order, seen_mask(matrix[rows[part]]), n)
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        self._require_fitted()
        out: dict[str, np.ndarray] = {"scores": self._scores}
        if self.params["by_segment"]:
            out |= {"segment_scores": self._segment_scores, "user_segments": self._user_segments}
        return out

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        n_items = len(self.item_ids)
        self._scores = take(arrays, "scores", (n_items,), self.name)
        if self.params["by_segment"]:
            self._segment_scores = take(arrays, "segment_scores", (N_SEGMENTS, n_items),
                                        self.name)
            self._user_segments = take(arrays, "user_segments", (None,), self.name)
        self._train = None
