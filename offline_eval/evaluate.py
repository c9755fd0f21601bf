"""Run one trained model over a test period and measure it: accuracy per user and per
slice, catalog coverage, popularity bias, novelty, and how fast it answers.

``evaluate`` asks the model the way production will:

- **Established users** (in the training set) through ``recommend_batch`` on their
  training rows, ``batch_size`` rows per call, so the model's seen-item filter applies.
  The wall time of these calls gives the batch throughput (users/s).
- **New users** through ``recommend_new(profile_for(user_id))`` one by one, as the
  serving path meets them (no profile when ``profile_for`` is None).
- **Single-request latency**: ``recommend(History(...))`` for a seeded sample of
  established users, with their training row as the history, timed one call at a time
  after a few untimed warm-up calls (first calls pay for lazy allocation and JIT).
  Percentiles are over calls, in milliseconds, in this process, without HTTP.

``compare_paired`` tests whether two models differ on the same users.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import stats

from offline_eval.ranking_metrics import (
    EvalError,
    accuracy,
    coverage,
    item_user_counts,
    mean_item_value,
    mean_over_users,
    popularity_percentile,
    self_information,
)
from offline_eval.slices import (
    SliceMeans,
    head_items,
    long_tail_metrics,
    slice_means,
    user_slices,
)
from recommender.models.base import History, Recommender, TrainSet
from recommender.models.ids import positions
from recommender.models.profiles import Profile

WARMUP_CALLS = 3


class TruthLike(Protocol):
    """What ``evaluate`` reads of a test period (``offline_eval.split.Truth`` has it):
    ``user_ids`` int64 (n,) ascending, ``items`` n int arrays of relevant item indices of
    the train set's catalog, ``new_user`` bool (n,) = absent from the train set."""

    @property
    def user_ids(self) -> np.ndarray: ...

    @property
    def items(self) -> Sequence[np.ndarray]: ...

    @property
    def new_user(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Timing:
    """Wall-clock measurements of one evaluation (seconds; ``latency_ms`` float64, one
    entry per timed ``recommend`` call)."""

    batch_users: int
    batch_seconds: float
    new_users: int
    new_seconds: float
    latency_ms: np.ndarray

    @property
    def throughput_users_s(self) -> float:
        """Established users answered per second by ``recommend_batch``."""
        return self.batch_users / self.batch_seconds if self.batch_seconds > 0 else math.nan

    def latency_percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of single-request latency, ms; NaN if none."""
        return float(np.percentile(self.latency_ms, q)) if len(self.latency_ms) else math.nan

    def to_dict(self) -> dict:
        return _finite_dict({
            "batch_users": self.batch_users, "batch_seconds": self.batch_seconds,
            "throughput_users_s": self.throughput_users_s,
            "new_users": self.new_users, "new_seconds": self.new_seconds,
            "latency_calls": len(self.latency_ms),
            "latency_p50_ms": self.latency_percentile(50),
            "latency_p95_ms": self.latency_percentile(95),
            "latency_p99_ms": self.latency_percentile(99),
        })


@dataclass(frozen=True)
class EvalResult:
    """One model on one test period.

    ``per_user`` maps a metric name ``<metric>@<k>`` (e.g. ``ndcg@20``, the names the
    gate reads) to float64 (n_users,) aligned with ``user_ids``: the accuracy metrics of
    ``metrics.ACCURACY``, ``tail_recall``/``tail_hit_rate`` (NaN where not evaluable),
    ``popularity`` (mean popularity percentile of the list) and ``novelty`` (mean
    self-information of the list, bits; both NaN for empty lists). ``means``/``evaluated``
    are their means and how many users each mean is over; ``coverage`` is the catalog
    coverage of all the lists; ``recs`` the lists themselves (int32 (n_users, k) item
    indices, -1 padded), kept for what judges lists as wholes (how many differ).
    """

    model: str
    k: int
    user_ids: np.ndarray
    new_user: np.ndarray
    per_user: dict[str, np.ndarray]
    means: dict[str, float]
    evaluated: dict[str, int]
    coverage: float
    slices: list[SliceMeans]
    timing: Timing
    recs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32), repr=False)

    def summary(self) -> dict[str, float]:
        """Every overall number under one name each: ``means`` plus ``coverage@<k>``. The
        metric dict the gate and the comparison report read."""
        return {**self.means, f"coverage@{self.k}": self.coverage}

    def to_dict(self) -> dict:
        """JSON-ready summary (NaN -> None). Per-user arrays are left out: at 1M users they
        are megabytes; save them with ``np.save`` when needed."""
        return _finite_dict({
            "model": self.model, "k": self.k, "users": int(len(self.user_ids)),
            "new_users": int(self.new_user.sum()),
            "means": dict(self.means), "evaluated": dict(self.evaluated),
            "coverage": self.coverage,
            "slices": [s.to_dict() for s in self.slices],
            "timing": self.timing.to_dict(),
        })


def _finite_dict(value: dict) -> dict:
    """``value`` with every non-finite float (recursively) replaced by None."""
    return {k: _finite_or_none(v) for k, v in value.items()}


def _finite_or_none(value: object) -> object:
    """``value`` with every non-finite float (recursively) replaced by None."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def train_rows(train: TrainSet, truth: TruthLike) -> np.ndarray:
    """int64 (n_users,): the training row of each test user, -1 for new users.
    ``EvalError`` if the truth's ``new_user`` flags disagree with the training set (a
    split bug, possibly leakage)."""
    ids = np.asarray(truth.user_ids, dtype=np.int64)
    rows = positions(train.user_ids, ids)
    wrong = (rows >= 0) == np.asarray(truth.new_user, dtype=bool)
    if wrong.any():
        bad = int(ids[np.argmax(wrong)])
        raise EvalError(f"{int(wrong.sum())} test users are flagged new/established against "
                        f"the train set (first: user {bad})")
    return rows


def _checked(recs: np.ndarray, rows: int, k: int, n_items: int, what: str) -> np.ndarray:
    recs = np.asarray(recs)
    if recs.ndim != 2 or recs.shape[0] != rows or recs.shape[1] > k:
        raise EvalError(f"{what} returned shape {recs.shape}, expected ({rows}, <= {k})")
    if recs.size and (recs.min() < -1 or recs.max() >= n_items):
        raise EvalError(f"{what} returned item indices outside [-1, {n_items})")
    return recs


def recommend_all(model: Recommender, train: TrainSet, truth: TruthLike, rows: np.ndarray, *,
                  k: int, profile_for: Callable[[int], Profile | None] | None,
                  batch_size: int) -> tuple[np.ndarray, float, float]:
    """int32 (n_users, k) lists, -1 padded, plus the seconds spent in ``recommend_batch``
    and in ``recommend_new``."""
    recs = np.full((len(rows), k), -1, dtype=np.int32)
    established = np.flatnonzero(rows >= 0)
    batch_seconds = 0.0
    for start in range(0, len(established), batch_size):
        which = established[start:start + batch_size]
        t0 = time.perf_counter()
        out = model.recommend_batch(rows[which], k)
        batch_seconds += time.perf_counter() - t0
        out = _checked(out, len(which), k, train.n_items, "recommend_batch")
        recs[which, :out.shape[1]] = out
    new_seconds = 0.0
    for i in np.flatnonzero(rows < 0):
        profile = profile_for(int(truth.user_ids[i])) if profile_for is not None else None
        t0 = time.perf_counter()
        out = model.recommend_new(profile, k)
        new_seconds += time.perf_counter() - t0
        out = _checked(np.asarray(out)[None, :], 1, k, train.n_items, "recommend_new")
        recs[i, :out.shape[1]] = out[0]
    return recs, batch_seconds, new_seconds


def request_latencies(model: Recommender, train: TrainSet, rows: np.ndarray, *, k: int,
                      sample: int, seed: int) -> np.ndarray:
    """float64 ms per ``recommend(History)`` call for up to ``sample`` training rows drawn
    (seeded, without replacement) from ``rows``; warm-up calls are not timed."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(rows, size=min(sample, len(rows)), replace=False) if len(rows) else rows
    matrix = train.matrix

    def history(row: int) -> History:
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        return History(matrix.indices[lo:hi].astype(np.int32),
                       matrix.data[lo:hi].astype(np.float32))

    for row in chosen[:WARMUP_CALLS]:
        model.recommend(history(int(row)), k)
    out = np.empty(len(chosen))
    for i, row in enumerate(chosen):
        h = history(int(row))
        t0 = time.perf_counter()
        model.recommend(h, k)
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def evaluate(model: Recommender, train: TrainSet, truth: TruthLike, *, k: int = 20,
             profile_for: Callable[[int], Profile | None] | None = None,
             batch_size: int = 4096, latency_sample: int = 200, seed: int = 0) -> EvalResult:
    """Measure ``model`` (trained on ``train``) against ``truth`` at cutoff ``k``."""
    if k < 1 or batch_size < 1:
        raise EvalError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    rows = train_rows(train, truth)
    recs, batch_seconds, new_seconds = recommend_all(
        model, train, truth, rows, k=k, profile_for=profile_for, batch_size=batch_size)
    latency = request_latencies(model, train, rows[rows >= 0], k=k, sample=latency_sample,
                                seed=seed)

    counts = item_user_counts(train.matrix)
    raw = accuracy(recs, truth.items, k)
    raw.update(long_tail_metrics(recs, truth.items, head_items(counts), k))
    raw["popularity"] = mean_item_value(recs, popularity_percentile(counts))
    raw["novelty"] = mean_item_value(recs, self_information(counts, max(train.n_users, 1)))
    per_user = {f"{m}@{k}": v for m, v in raw.items()}
    overall = {m: mean_over_users(v) for m, v in per_user.items()}

    row_nnz = np.diff(train.matrix.indptr)
    train_counts = np.where(rows >= 0, row_nnz[np.maximum(rows, 0)], 0) \
        if train.n_users else np.zeros(len(rows), np.int64)
    slices = user_slices(truth.user_ids, truth.new_user, train.profiles, train_counts)
    return EvalResult(
        model=model.name, k=k, user_ids=np.asarray(truth.user_ids),
        new_user=np.asarray(truth.new_user, dtype=bool), per_user=per_user,
        means={m: v for m, (v, _) in overall.items()},
        evaluated={m: n for m, (_, n) in overall.items()},
        coverage=coverage(recs, train.n_items),
        slices=slice_means(slices, per_user),
        timing=Timing(int((rows >= 0).sum()), batch_seconds, int((rows < 0).sum()),
                      new_seconds, latency),
        recs=recs,
    )


# -- paired comparison ------------------------------------------------------------------------

@dataclass(frozen=True)
class PairedTest:
    """Model A against model B on the same users: ``mean_diff`` = mean(a - b) over the
    ``n`` users both have a value for, its bootstrap ``ci`` (low, high), and the
    Wilcoxon signed-rank ``statistic`` and two-sided ``p_value``."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci: tuple[float, float]
    statistic: float
    p_value: float

    def to_dict(self) -> dict:
        return _finite_dict({"n": self.n, "mean_a": self.mean_a, "mean_b": self.mean_b,
                                "mean_diff": self.mean_diff, "ci": list(self.ci),
                                "statistic": self.statistic, "p_value": self.p_value})


def compare_paired(a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000,
                   confidence: float = 0.95, seed: int = 0) -> PairedTest:
    """Is model A's per-user metric (e.g. NDCG@k, float (n_users,)) different from B's on
    the same users (same order)?

    Paired, because both models answer the same users and users differ far more among
    themselves than models do (a user with many held-out films scores well under any
    model): testing the per-user differences removes that between-user variance, which
    an unpaired test would mistake for noise. Wilcoxon signed-rank (two-sided, zero
    differences dropped, Wilcoxon 1945) rather than a t-test, because per-user NDCG is
    bounded, lumpy and mostly zeros, far from normal. The percentile bootstrap CI of the
    mean difference (Efron & Tibshirani 1993, ch. 13) says how large the gain is, which
    a p-value on a million users does not. Users where either value is NaN are dropped.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if n_boot < 1 or not 0.0 < confidence < 1.0:
        raise EvalError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    if a.shape != b.shape or a.ndim != 1:
        raise EvalError(f"paired arrays must be 1-d and aligned, got {a.shape} and {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    n = len(a)
    if n == 0:
        raise EvalError("no user has a value under both models")
    diff = a - b
    if np.any(diff != 0):
        res = stats.wilcoxon(diff, alternative="two-sided")
        statistic, p_value = float(res.statistic), float(res.pvalue)
    else:  # identical results: no evidence of a difference (scipy would divide by zero)
        statistic, p_value = 0.0, 1.0
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    per_draw = max(1, (1 << 22) // n)  # resamples per vectorised draw, ~4M indices
    for start in range(0, n_boot, per_draw):
        size = min(per_draw, n_boot - start)
        boot[start:start + size] = diff[rng.integers(0, n, size=(size, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return PairedTest(n, float(a.mean()), float(b.mean()), float(diff.mean()),
                      (float(low), float(high)), statistic, p_value)
