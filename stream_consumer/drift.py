"""Drift statistics of the event stream: the tests, the per-window sufficient statistics
and the live monitor the consumer feeds.

Why: the course staff inject drift (behaviour, popularity, schema changes, sign-up
surges), and a model goes stale quietly when the stream no longer looks like the one it
learnt from. The consumer sees every event, so it keeps cheap rolling statistics per time
bucket and compares a rolling window with a reference window, feature by feature.
``stream_consumer.drift_report`` holds the comparison (``compare`` -> ``DriftReport``, the
feature table and its rationale) and computes the same report from event-store frames for
``movierec drift report``: the same events give the same numbers either way.

Pure: no I/O, no logging, no metric registration. The layers:

1. **Tests over plain numbers**: ``psi``, ``chi_square``, ``ks``, ``two_proportion_z``.
2. **Windows**: ``BucketCounts`` (raw counts of one time bucket, keyed by movie or user so
   they can be classified later), ``Basis`` (what the first half of the reference knew:
   popularity deciles of movies, users and movies seen), ``WindowStats`` (small, classified,
   mergeable statistics: a rolling window is the merge of its buckets).
3. **``DriftMonitor``** (in ``stream_consumer.drift_monitor``): takes each consumer batch
   (accepted events + rejection counts), keeps event-time buckets, freezes the reference,
   rolls the current window, ``report()``.

Two decisions shape everything (the feature table is in drift_report's docstring):

* **Actions, not lines.** A 90-minute session writes 90 watch lines that are not
  independent observations; tests over raw line counts would alarm on a stationary
  stream. The event mix counts one unit per user action: a session start (watch line with
  minute 0), a rate line, a recommendation line. The unknown-user share counts session
  starts and recommendation lines, the unknown-movie share session starts; rate lines are
  left out of both because a rating follows its session (its user and movie were just
  seen), which would make windows close to the basis look better known than later ones.
  Session length is its own feature; rejections are counted per line.
* **The reference is split in two.** "Unknown" and "popularity decile" need a notion of
  what was known. Measured against the whole reference, the reference's own unknown share
  is 0 and its top decile is inflated by selection, so a stationary stream would alarm.
  The first half of the reference buckets (the *basis*) defines the deciles and, unless
  the caller says what is known (``known_user``/``known_movie``), the known users and
  movies; the second half (the *baseline*) is measured like every later window.

**Sessions** start at a watch line with minute 0 and hold that user's later watch lines of
the same movie until the user's next minute-0 line; a session's length is the highest
minute seen + 1 (robust to duplicated lines) and it belongs to the bucket of its start.
Only lines inside the window count, for the reference as for the current window, so both
are censored alike. The sample keeps the ``sample_size`` sessions with the smallest hash
priority of (seed, user, start ms): bounded, seeded, order-independent and mergeable
(bottom-k sampling), unlike a reservoir; that is what lets two paths agree exactly.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from scipy import stats as _stats

# -- constants ---------------------------------------------------------------------------

PSI_MODERATE = 0.1
"""PSI from 0.1 to 0.25: a moderate shift, worth watching (Yurdakul 2018, see ``psi``)."""
PSI_SIGNIFICANT = 0.25
"""PSI of 0.25 or more: a significant shift (Yurdakul 2018)."""
EPSILON = 1e-4
"""Default PSI smoothing: mass added to every category's share before renormalising."""

DECILES = 10
UNSEEN = DECILES
"""Popularity bucket of movies the basis never saw (deciles are 0 = top .. 9 = bottom)."""
POPULARITY_BUCKETS: tuple[int, ...] = tuple(range(DECILES + 1))
POPULARITY_LABELS: dict[int, str] = {**{d: f"decile {d + 1}" for d in range(DECILES)}, UNSEEN: "unseen"}

ACTIONS: tuple[str, ...] = ("watch_session", "rate", "recommendation")
"""The categories of the event mix."""

FEATURES: tuple[str, ...] = (
    "event_mix", "rating", "popularity", "session_minutes", "new_account_rate",
    "unknown_user_share", "unknown_movie_share", "rejection_share", "rejection_reasons",
)
TESTS: tuple[str, ...] = ("chi2", "psi", "ks", "z")

DEFAULT_BUCKET = timedelta(minutes=10)
DEFAULT_SAMPLE = 2000

EPOCH = datetime(1970, 1, 1)
"""Origin of bucket indices and of epoch milliseconds (naive event times, as written)."""
_MS = timedelta(milliseconds=1)
_M64 = (1 << 64) - 1
_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


# -- the tests -----------------------------------------------------------------------------


def _counts(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be a 1-D sequence of finite, non-negative counts")
    return arr


def psi(reference_counts: Sequence[float] | np.ndarray, current_counts: Sequence[float] | np.ndarray,
        *, epsilon: float = EPSILON) -> float:
    """Population stability index of two aligned categorical count vectors (unitless, >= 0).

    ``PSI = sum_i (q_i - p_i) * ln(q_i / p_i)`` where ``p`` and ``q`` are the reference and
    current shares. It is the symmetrised Kullback-Leibler divergence (Jeffreys), so it
    is 0 for proportional counts and grows with any shift. Smoothing: every share gets
    ``epsilon`` added and the vector is renormalised, ``p_i = (r_i/R + eps) / (1 + K eps)``,
    so an empty category costs a bounded amount instead of an infinite log. With
    ``epsilon=0`` categories empty on both sides are dropped and one empty on one side
    only gives ``inf``.

    Conventional reading (Yurdakul, "Statistical properties of population stability
    index", Western Michigan University, 2018; the same cut-offs go back to credit-scoring
    practice, e.g. Siddiqi 2006): below 0.1 no significant change, 0.1 to 0.25 a moderate
    change, 0.25 and above a significant change. Under no change, PSI is about
    ``chi2(K-1) * (1/R + 1/C)``, so small samples need a minimum size before it is read.
    """
    r, c = _counts(reference_counts, "reference_counts"), _counts(current_counts, "current_counts")
    if r.shape != c.shape or r.size == 0:
        raise ValueError("reference_counts and current_counts must align and be non-empty")
    if epsilon < 0:
        raise ValueError("epsilon must be >= 0")
    total_r, total_c = r.sum(), c.sum()
    if total_r <= 0 or total_c <= 0:
        raise ValueError("both count vectors need a positive total")
    p, q = r / total_r, c / total_c
    if epsilon > 0:
        p, q = (p + epsilon) / (1 + r.size * epsilon), (q + epsilon) / (1 + r.size * epsilon)
    else:
        keep = (p > 0) | (q > 0)
        p, q = p[keep], q[keep]
        if np.any((p == 0) | (q == 0)):
            return math.inf
    return max(0.0, float(np.sum((q - p) * np.log(q / p))))


def chi_square(reference_counts: Sequence[float] | np.ndarray,
               current_counts: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square test of homogeneity on the 2 x K table (statistic, p-value).

    ``scipy.stats.chi2_contingency`` without Yates' correction. Categories empty on both
    sides are dropped (their expected count would be 0); with fewer than two categories
    left there is nothing to compare and the answer is (0.0, 1.0).
    """
    r, c = _counts(reference_counts, "reference_counts"), _counts(current_counts, "current_counts")
    if r.shape != c.shape:
        raise ValueError("reference_counts and current_counts must align")
    if r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("both count vectors need a positive total")
    table = np.vstack([r, c])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = _stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def ks(reference_values: Sequence[float] | np.ndarray,
       current_values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test (D in [0, 1], p-value), ``scipy.stats.ks_2samp``.

    For integer-valued data (minutes) the ties make the p-value conservative."""
    a, b = np.asarray(reference_values, dtype=float), np.asarray(current_values, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError("ks needs two non-empty 1-D samples")
    result = _stats.ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def two_proportion_z(reference_hits: int, reference_n: int, current_hits: int, current_n: int,
                     *, alternative: str = "two-sided") -> tuple[float, float]:
    """Pooled two-proportion z-test of ``current_hits/current_n`` against the reference.

    ``z = (q - p) / sqrt(s (1 - s) (1/n_r + 1/n_c))`` with ``s`` the pooled share; z > 0
    means the current rate is higher. ``alternative``: "two-sided", "larger" (current >
    reference) or "smaller". Returns (z, p-value); (0.0, 1.0) when both rates are 0 or 1.
    Its two-sided square equals the uncorrected 2 x 2 chi-square.
    """
    if reference_n <= 0 or current_n <= 0:
        raise ValueError("both sample sizes must be positive")
    if not (0 <= reference_hits <= reference_n and 0 <= current_hits <= current_n):
        raise ValueError("hits must lie in 0..n")
    if alternative not in ("two-sided", "larger", "smaller"):
        raise ValueError(f"unknown alternative {alternative!r}")
    pooled = (reference_hits + current_hits) / (reference_n + current_n)
    variance = pooled * (1 - pooled) * (1 / reference_n + 1 / current_n)
    if variance <= 0:
        return 0.0, 1.0
    z = (current_hits / current_n - reference_hits / reference_n) / math.sqrt(variance)
    if alternative == "two-sided":
        p = 2 * float(_stats.norm.sf(abs(z)))
    elif alternative == "larger":
        p = float(_stats.norm.sf(z))
    else:
        p = float(_stats.norm.cdf(z))
    return z, min(1.0, p)


# -- session sampling -----------------------------------------------------------------------


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a bijective 64-bit mix (Steele et al. 2014)."""
    x = (x + _GOLDEN) & _M64
    x = ((x ^ (x >> 30)) * _MIX1) & _M64
    x = ((x ^ (x >> 27)) * _MIX2) & _M64
    return x ^ (x >> 31)


def _mix64_array(x: np.ndarray) -> np.ndarray:
    """``_mix64`` over a uint64 array (numpy array arithmetic wraps, as the mix needs)."""
    x = x + np.uint64(_GOLDEN)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_MIX1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_MIX2)
    return x ^ (x >> np.uint64(31))


def session_priority(user_id: int, start_ms: int, seed: int = 0) -> int:
    """The sampling priority (uint64) of the session a user started at ``start_ms``
    (milliseconds since 1970-01-01 of the naive event time); a sample keeps the lowest."""
    return _mix64(_mix64(_mix64(seed & _M64) ^ (user_id & _M64)) ^ (start_ms & _M64))


def session_priorities(user_ids: np.ndarray, start_ms: np.ndarray, seed: int = 0) -> np.ndarray:
    """``session_priority`` over arrays of int64 (uint64 result)."""
    users = np.ascontiguousarray(user_ids, dtype=np.int64).view(np.uint64)
    starts = np.ascontiguousarray(start_ms, dtype=np.int64).view(np.uint64)
    return _mix64_array(_mix64_array(np.uint64(_mix64(seed & _M64)) ^ users) ^ starts)


def bottom_k(sample: Mapping[int, int], k: int) -> dict[int, int]:
    """The ``k`` entries of a priority -> value sample with the smallest priorities."""
    if len(sample) <= k:
        return dict(sample)
    return {p: sample[p] for p in heapq.nsmallest(k, sample)}


# -- windows -------------------------------------------------------------------------------


@dataclass
class BucketCounts:
    """Raw counts of the accepted events and rejected lines of one time bucket (lines,
    except where said). ``user_actions`` (session starts and recommendation lines) stays
    keyed by user so the basis can classify it later; when the caller says what is known
    (``known_user``/``known_movie``), the flags are counted instead (``*_checked`` and
    ``*_unknown``) and ids are not kept.
    """

    lines: Counter[str] = field(default_factory=Counter)           # kind -> accepted lines
    ratings: Counter[int] = field(default_factory=Counter)         # stars -> rate lines
    session_starts: Counter[str] = field(default_factory=Counter)  # movie -> minute-0 lines
    user_actions: Counter[int] = field(default_factory=Counter)    # user -> actions (basis mode)
    rejections: Counter[str] = field(default_factory=Counter)      # reason -> rejected lines
    users_checked: int = 0   # actions whose user the caller classified
    users_unknown: int = 0   # ... and found unknown
    movies_checked: int = 0  # sessions whose movie the caller classified
    movies_unknown: int = 0  # ... and found unknown


def popularity_deciles(session_counts: Mapping[str, int]) -> dict[str, int]:
    """movie -> decile of its popularity rank, 0 (the most watched tenth of the movies)
    to 9 (the least watched tenth). Ranks by sessions, descending; ties by movie id, so
    the answer is deterministic. Movies with no session are left out ("unseen")."""
    ranked = sorted((m for m, n in session_counts.items() if n > 0), key=lambda m: (-session_counts[m], m))
    return {movie: rank * DECILES // len(ranked) for rank, movie in enumerate(ranked)}


@dataclass(frozen=True)
class Basis:
    """What the first half of the reference knew: the popularity decile of each movie
    (by watch sessions) and, unless the caller says what is known (then None), the users
    and movies seen in an action."""

    deciles: Mapping[str, int]
    users: frozenset[int] | None
    movies: frozenset[str] | None

    @classmethod
    def from_counts(cls, buckets: Iterable[BucketCounts], *, users: bool = True,
                    movies: bool = True) -> Basis:
        starts: Counter[str] = Counter()
        seen: set[int] = set()
        for counts in buckets:
            starts.update(counts.session_starts)
            seen.update(counts.user_actions)
        return cls(popularity_deciles(starts), frozenset(seen) if users else None,
                   frozenset(starts) if movies else None)

    def popularity_bucket(self, movie_id: str) -> int:
        return self.deciles.get(movie_id, UNSEEN)


@dataclass
class WindowStats:
    """Sufficient statistics of one window: small (no ids), mergeable (a rolling window
    is the merge of its buckets; ``merge`` is associative and commutative).

    Basis-dependent fields (``popularity``, and the unknown counts unless the caller
    classified) are zero for buckets of the basis half of the reference."""

    lines: Counter[str] = field(default_factory=Counter)       # kind -> accepted lines
    sessions_started: int = 0                                   # watch lines with minute 0
    ratings: Counter[int] = field(default_factory=Counter)     # stars -> rate lines
    popularity: Counter[int] = field(default_factory=Counter)  # POPULARITY_BUCKETS -> sessions
    user_actions: int = 0            # session starts + recommendation lines, classified
    unknown_user_actions: int = 0    # ... whose user was unknown
    movie_sessions: int = 0          # session starts, classified
    unknown_movie_sessions: int = 0  # ... whose movie was unknown
    rejections: Counter[str] = field(default_factory=Counter)  # reason -> rejected lines
    session_minutes: dict[int, int] = field(default_factory=dict)  # priority -> minutes watched
    sample_size: int = DEFAULT_SAMPLE  # most sessions kept in ``session_minutes``

    @property
    def actions(self) -> Counter[str]:
        """Actions by ``ACTIONS`` category (the event mix)."""
        return Counter({"watch_session": self.sessions_started, "rate": self.lines["rate"],
                        "recommendation": self.lines["recommendation"]})

    @property
    def accepted(self) -> int:
        return sum(self.lines.values())

    @property
    def rejected(self) -> int:
        return sum(self.rejections.values())

    def merge(self, other: WindowStats) -> WindowStats:
        k = min(self.sample_size, other.sample_size)
        return WindowStats(
            lines=self.lines + other.lines,
            sessions_started=self.sessions_started + other.sessions_started,
            ratings=self.ratings + other.ratings,
            popularity=self.popularity + other.popularity,
            user_actions=self.user_actions + other.user_actions,
            unknown_user_actions=self.unknown_user_actions + other.unknown_user_actions,
            movie_sessions=self.movie_sessions + other.movie_sessions,
            unknown_movie_sessions=self.unknown_movie_sessions + other.unknown_movie_sessions,
            rejections=self.rejections + other.rejections,
            session_minutes=bottom_k({**self.session_minutes, **other.session_minutes}, k),
            sample_size=k,
        )

    @classmethod
    def of(cls, counts: BucketCounts, basis: Basis | None, sessions: Mapping[int, int] | None = None,
           sample_size: int = DEFAULT_SAMPLE) -> WindowStats:
        """One bucket's raw counts, classified against ``basis`` (None: the bucket is in the
        basis itself, and the features that need one are left at zero). Caller-classified
        actions are taken as they are. ``sessions``: priority -> minutes watched of the
        sessions started in the bucket."""
        stats = cls(lines=Counter(counts.lines), sessions_started=sum(counts.session_starts.values()),
                    ratings=Counter(counts.ratings), rejections=Counter(counts.rejections),
                    user_actions=counts.users_checked, unknown_user_actions=counts.users_unknown,
                    movie_sessions=counts.movies_checked, unknown_movie_sessions=counts.movies_unknown,
                    session_minutes=bottom_k(sessions or {}, sample_size), sample_size=sample_size)
        if basis is None:
            return stats
        for movie, n in counts.session_starts.items():
            stats.popularity[basis.popularity_bucket(movie)] += n
        if basis.users is not None:
            known = basis.users
            stats.user_actions += sum(counts.user_actions.values())
            stats.unknown_user_actions += sum(n for u, n in counts.user_actions.items() if u not in known)
        if basis.movies is not None:
            seen = basis.movies
            stats.movie_sessions += stats.sessions_started
            stats.unknown_movie_sessions += sum(n for m, n in counts.session_starts.items() if m not in seen)
        return stats


def merge_all(stats: Iterable[WindowStats], sample_size: int = DEFAULT_SAMPLE) -> WindowStats:
    total = WindowStats(sample_size=sample_size)
    for s in stats:
        total = total.merge(s)
    return total


def reference_window(buckets: Mapping[int, tuple[BucketCounts, Mapping[int, int]]], start: int, end: int,
                     sample_size: int = DEFAULT_SAMPLE, *, classify_users: bool = True,
                     classify_movies: bool = True) -> tuple[WindowStats, Basis]:
    """The reference of buckets ``start <= b < end`` (bucket -> (counts, sessions)).

    The first ``ceil((end - start) / 2)`` buckets are the basis; the rest the baseline,
    the only part the basis-dependent features are measured on. ``classify_*=False``:
    the caller classifies users (movies) itself, the basis keeps no set of them."""
    split = start + math.ceil((end - start) / 2)
    held = {b: v for b, v in buckets.items() if start <= b < end}
    basis = Basis.from_counts((counts for b, (counts, _) in held.items() if b < split),
                              users=classify_users, movies=classify_movies)
    stats = merge_all((WindowStats.of(counts, basis if b >= split else None, sessions, sample_size)
                       for b, (counts, sessions) in sorted(held.items())), sample_size)
    return stats, basis


def apportion(total: int, weights: Mapping[int, int]) -> dict[int, int]:
    """Split ``total`` over the keys in proportion to positive ``weights`` (largest
    remainder, ties to the smaller key): whole numbers that add up to ``total``."""
    weight = sum(weights.values())
    if total <= 0 or weight <= 0:
        return {}
    shares = {k: total * w // weight for k, w in weights.items()}
    left = total - sum(shares.values())
    for k in sorted(weights, key=lambda k: (-(total * weights[k] % weight), k))[:left]:
        shares[k] += 1
    return {k: n for k, n in shares.items() if n}


# -- thresholds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """When a feature alarms. p-value tests: p < ``alpha``; chi-square also needs PSI >=
    ``min_psi``; PSI features: PSI >= ``psi_alarm``; every test needs ``min_n`` or more
    observations (in the feature's unit) in both windows, so tiny windows never alarm."""

    psi_alarm: float = PSI_SIGNIFICANT
    alpha: float = 0.001
    min_psi: float = PSI_MODERATE
    min_n: int = 500
    epsilon: float = EPSILON

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must lie in (0, 1)")
        if self.psi_alarm <= 0 or self.min_psi < 0 or self.epsilon < 0:
            raise ValueError("psi_alarm must be > 0, min_psi and epsilon >= 0")
        if self.min_n < 1:
            raise ValueError("min_n must be >= 1")


# -- the live monitor ------------------------------------------------------------------------
