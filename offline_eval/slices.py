"""Where a model is good and where it fails: user slices, and the long-tail item slice.

A mean over all test users hides the groups the scenario cares about: new users (cold
start), minors and other demographic groups (fairness), light users (little history) and
films outside the blockbusters (the long tail). Pure functions over arrays.

**User slices** come in families; each family partitions the test users (every user is in
exactly one slice of each family):

- ``cohort``: ``new`` (absent from the training set) or ``established``.
- ``age``: ``AGE_GROUPS``, plus ``?`` for users without a profile or with an unknown or
  absurd age. (``profiles.age_group`` folds unknown ages into 25-34, which is right for
  picking a default segment when serving, but would blur a group's result here.)
- ``gender``: ``GENDERS`` (``?`` also takes users without a profile).
- ``activity``: distinct items the user interacted with in the training set, in fixed bins
  ``ACTIVITY_LABELS`` (0 is exactly the new users). Fixed bins rather than terciles: the
  bins then mean the same for every model, split and week, so results can be lined up
  over time; terciles would move with the data.

**Long tail**: the head is the ``HEAD_SHARE`` (20%) most popular items by training users
(ties broken toward the lower index, so the head has exactly ``ceil(0.2 * n_items)``
items; the short head of Abdollahpouri et al. 2017, "Controlling popularity bias in
learning-to-rank recommendation", RecSys). ``long_tail_metrics`` judges lists against the
relevant items outside the head only: tail recall (hits on tail items / min(R_tail, k))
and tail hit rate. Users with no relevant tail item are NaN, as in ``metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from offline_eval.ranking_metrics import (
    EvalError,
    flatten,
    hit_rate_at_k,
    judge_flat,
    mean_over_users,
    recall_at_k,
)
from recommender.models.profiles import AGE_EDGES, AGE_GROUPS, GENDERS, Profiles
from recommender.rerank import HEAD_SHARE  # one definition of the head, for every slice and audit

UNKNOWN = "?"
ACTIVITY_EDGES: tuple[int, ...] = (1, 5, 20, 50)
"""Lower-inclusive edges of the activity bins, in training items per user."""
ACTIVITY_LABELS: tuple[str, ...] = ("0", "1-4", "5-19", "20-49", "50+")
"""Share of the catalog (most popular first) that is the head, not the long tail."""


@dataclass(frozen=True)
class UserSlice:
    """One group of test users: ``mask`` bool (n_users,) aligned with the truth."""

    family: str
    name: str
    mask: np.ndarray


@dataclass(frozen=True)
class SliceMeans:
    """Per-metric means over one slice: ``users`` members, ``evaluated[m]`` of whom had a
    finite value of metric ``m`` (NaN means are those with none), and ``ci95[m]``, the 95%
    interval of each mean (``mean_interval``; NaN bounds when fewer than two values)."""

    family: str
    name: str
    users: int
    means: dict[str, float]
    evaluated: dict[str, int]
    ci95: dict[str, tuple[float, float]]

    def to_dict(self) -> dict:
        return {"family": self.family, "name": self.name, "users": self.users,
                "means": {m: _json_float(v) for m, v in self.means.items()},
                "evaluated": dict(self.evaluated),
                "ci95": {m: [_json_float(lo), _json_float(hi)] for m, (lo, hi) in self.ci95.items()}}


Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile."""


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% interval of the mean of the finite ``values``: mean +- z * s / sqrt(n), the
    normal approximation the central limit theorem gives for a mean of n independent
    users' values (per-user metrics are bounded, so it holds from a few dozen users; a
    slice smaller than that shows a wide interval, which is the point). NaN bounds when
    fewer than two values."""
    finite = values[np.isfinite(values)]
    n = len(finite)
    if n < 2:
        return float("nan"), float("nan")
    mean = float(finite.mean())
    half = Z95 * float(finite.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _partition(family: str, labels: Sequence[str], codes: np.ndarray) -> list[UserSlice]:
    return [UserSlice(family, label, codes == i) for i, label in enumerate(labels)]


def cohort_slices(new_user: np.ndarray) -> list[UserSlice]:
    """``new`` and ``established`` from the truth's bool ``new_user``."""
    new_user = np.asarray(new_user, dtype=bool)
    return [UserSlice("cohort", "new", new_user), UserSlice("cohort", "established", ~new_user)]


def demographic_slices(user_ids: np.ndarray, profiles: Profiles) -> list[UserSlice]:
    """The ``age`` and ``gender`` families of ``user_ids`` (int64), from ``profiles``."""
    rows = profiles.rows_of(user_ids)
    known = rows >= 0
    safe = np.maximum(rows, 0)
    if len(profiles):
        ages = np.where(known, profiles.age[safe], -1).astype(np.int64)
        genders = np.where(known, profiles.gender[safe], len(GENDERS) - 1)
    else:
        ages = np.full(len(rows), -1, np.int64)
        genders = np.full(len(rows), len(GENDERS) - 1)
    valid_age = (ages >= 0) & (ages <= 120)
    age_codes = np.where(valid_age, np.searchsorted(AGE_EDGES, ages, side="right"),
                         len(AGE_GROUPS))
    return (_partition("age", (*AGE_GROUPS, UNKNOWN), age_codes)
            + _partition("gender", GENDERS, genders))


def activity_slices(train_counts: np.ndarray) -> list[UserSlice]:
    """The ``activity`` family from int training-item counts per test user (0 for new)."""
    codes = np.searchsorted(ACTIVITY_EDGES, np.asarray(train_counts), side="right")
    return _partition("activity", ACTIVITY_LABELS, codes)


def user_slices(user_ids: np.ndarray, new_user: np.ndarray, profiles: Profiles,
                train_counts: np.ndarray) -> list[UserSlice]:
    """Every family above for the test users (all arrays aligned, (n_users,))."""
    return (cohort_slices(new_user) + demographic_slices(user_ids, profiles)
            + activity_slices(train_counts))


def slice_means(slices: Sequence[UserSlice],
                per_user: Mapping[str, np.ndarray]) -> list[SliceMeans]:
    """Mean of every per-user metric (float arrays aligned with the masks, NaN = not
    evaluable) within every slice."""
    out = []
    for s in slices:
        stats = {m: mean_over_users(values[s.mask]) for m, values in per_user.items()}
        out.append(SliceMeans(s.family, s.name, int(s.mask.sum()),
                              {m: v for m, (v, _) in stats.items()},
                              {m: n for m, (_, n) in stats.items()},
                              {m: mean_interval(values[s.mask]) for m, values in per_user.items()}))
    return out


def head_items(counts: np.ndarray, share: float = HEAD_SHARE) -> np.ndarray:
    """bool (n_items,): the ``ceil(share * n_items)`` items with the most training users."""
    if not 0.0 <= share <= 1.0:
        raise EvalError(f"head share must be in [0, 1], got {share}")
    counts = np.asarray(counts)
    n_head = math.ceil(share * len(counts))
    order = np.lexsort((np.arange(len(counts)), -counts))  # most popular, then lower index
    head = np.zeros(len(counts), dtype=bool)
    head[order[:n_head]] = True
    return head


def long_tail_metrics(recs: np.ndarray, truth: Sequence[np.ndarray], head: np.ndarray,
                      k: int | None = None) -> dict[str, np.ndarray]:
    """``tail_recall`` and ``tail_hit_rate`` per user (float64, NaN without relevant tail
    items): the lists judged against each user's relevant items outside ``head``."""
    if len(recs) != len(truth):
        raise EvalError(f"{len(recs)} lists for {len(truth)} users: need one per user")
    users, items = flatten(truth)
    tail = ~np.asarray(head, dtype=bool)[items]
    judged = judge_flat(recs, users[tail], items[tail], k)
    return {"tail_recall": recall_at_k(judged), "tail_hit_rate": hit_rate_at_k(judged)}
