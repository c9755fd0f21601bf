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
3. **``DriftMonitor``**: takes each consumer batch (accepted events + rejection counts),
   keeps event-time buckets, freezes the reference, rolls the current window, ``report()``.

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
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as _stats

from movierec.wire import Account, Event, Rate, Recommendation, Watch

if TYPE_CHECKING:
    from stream_consumer.drift_report import DriftReport

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


class _Session:
    __slots__ = ("movie", "minutes", "bucket")

    def __init__(self, movie: str, bucket: int) -> None:
        self.movie, self.minutes, self.bucket = movie, 1, bucket


class _Bucket:
    """One held time bucket: raw counts and a bottom-k sample of the sessions it started
    (live records, so their length grows as later lines arrive)."""

    __slots__ = ("index", "counts", "sample", "_heap", "_k")

    def __init__(self, index: int, k: int) -> None:
        self.index, self.counts, self._k = index, BucketCounts(), k
        self.sample: dict[int, _Session] = {}
        self._heap: list[int] = []  # negated priorities: the largest kept is on top

    def offer(self, priority: int, session: _Session) -> None:
        if len(self.sample) < self._k:
            self.sample[priority] = session
            heapq.heappush(self._heap, -priority)
        elif priority < -self._heap[0]:
            del self.sample[-heapq.heapreplace(self._heap, -priority)]
            self.sample[priority] = session

    def sessions(self) -> dict[int, int]:
        return {p: s.minutes for p, s in self.sample.items()}


class DriftMonitor:
    """Rolling drift statistics of the live stream, fed one consumer batch at a time.

    Time is event time, cut into buckets of ``bucket`` (default 10 min, counted from
    1970-01-01). The reference is the first ``reference_buckets`` buckets from the first
    event seen (frozen automatically when an event of a later bucket arrives), or, with
    ``reference_buckets=None``, whatever has been seen when ``freeze_reference()`` is
    called. The current window is the last ``window_buckets`` buckets up to the newest
    bucket seen (the head). Events older than the held buckets are dropped and counted
    (``late_lines``). An event more than ``max_jump_buckets`` ahead of the head is dropped
    too (``ahead_lines``: one bad timestamp must not flush the window), unless
    ``jump_after`` such events come with nothing in range in between: then the stream
    really moved on and the head follows.

    Unknown users and movies: by default, those the basis (first half of the reference)
    never saw in an action. That suits small worlds; at the course's scale a 30-minute
    basis sees a few percent of a million users, so pass ``known_user``/``known_movie``
    (what the system knows, e.g. the enricher's or the feature store's), called once per
    action at observe time: an action is unknown when they answer False then.

    Memory: raw counts per held bucket (distinct users and movies of the bucket), one
    record per user with a session in a held bucket, ``sample_size`` sessions per bucket.
    Thread-safe: ``observe_batch`` and ``report`` may run on different threads.
    """

    def __init__(self, *, bucket: timedelta = DEFAULT_BUCKET, reference_buckets: int | None = 6,
                 window_buckets: int = 6, thresholds: Thresholds | None = None,
                 sample_size: int = DEFAULT_SAMPLE, seed: int = 0,
                 known_user: Callable[[int], bool] | None = None,
                 known_movie: Callable[[str], bool] | None = None,
                 max_jump_buckets: int | None = None, jump_after: int = 1000,
                 grace_buckets: int = 0) -> None:
        if bucket <= timedelta(0) or bucket % _MS:
            raise ValueError("bucket must be a positive whole number of milliseconds")
        if reference_buckets is not None and reference_buckets < 2:
            raise ValueError("reference_buckets must be >= 2 (half defines what is known) or None")
        if window_buckets < 1 or sample_size < 1 or jump_after < 1:
            raise ValueError("window_buckets, sample_size and jump_after must be >= 1")
        self.bucket, self.reference_buckets, self.window_buckets = bucket, reference_buckets, window_buckets
        self.thresholds = thresholds or Thresholds()
        self.sample_size, self.seed = sample_size, seed
        self.known_user, self.known_movie = known_user, known_movie
        self.max_jump_buckets = window_buckets if max_jump_buckets is None else max_jump_buckets
        self.jump_after = jump_after
        # Allowed lateness: a consumer of several partitions sees event times interleave
        # (one partition runs ahead while others catch up), so the reference freezes and
        # old buckets leave only ``grace_buckets`` behind the newest bucket seen.
        self.grace = grace_buckets
        self.late_lines = self.ahead_lines = 0
        self._lock = threading.Lock()
        self._seed_key = _mix64(seed & _M64)
        self._start_fresh()

    def _start_fresh(self) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._open: dict[int, _Session] = {}  # user -> the user's latest session
        self._first: int | None = None        # first reference bucket
        self._head: int | None = None         # newest bucket seen
        self._ref_end: int | None = None      # set once frozen
        self._reference: WindowStats | None = None
        self.basis: Basis | None = None
        self._ahead = 0
        self._pending_rejections: Counter[str] = Counter()

    # -- state ---------------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        return self._ref_end is not None

    @property
    def reference(self) -> WindowStats | None:
        return self._reference

    def _time(self, index: int) -> datetime:
        return EPOCH + index * self.bucket

    # -- feeding -------------------------------------------------------------------------

    def observe_batch(self, events: Iterable[Event], rejections: Mapping[str, int] | None = None) -> None:
        """Fold one consumer batch: its accepted events in arrival order (``movierec.wire``
        Watch, Rate, Recommendation, Account) and its rejected lines as reason -> count
        (wire.Reason values or the consumer's own check names). Rejected lines carry no
        trusted time: they are spread over the buckets of the batch's accepted events in
        proportion to those events (all under the newest bucket if there are none)."""
        with self._lock:
            weights = self._observe(events)
            if rejections:
                self._file_rejections(rejections, weights)

    def _observe(self, events: Iterable[Event]) -> dict[int, int]:
        """The hot loop; returns bucket -> events of this batch filed there."""
        lo = hi = EPOCH  # the located bucket's [start, end)
        bucket: _Bucket | None = None
        opened = self._open
        known_user, known_movie = self.known_user, self.known_movie
        filed: dict[int, int] = {}
        run = 0  # events filed in ``bucket`` since it was located
        for e in events:
            try:
                when = e.time
            except AttributeError:
                raise TypeError(f"not an accepted MLiP event: {e!r}") from None
            if bucket is None or not (lo <= when < hi):
                if bucket is not None and run:
                    filed[bucket.index] = filed.get(bucket.index, 0) + run
                run = 0
                bucket = self._locate(when)
                if bucket is None:
                    continue
                lo = self._time(bucket.index)
                hi = lo + self.bucket
            run += 1
            counts = bucket.counts
            if type(e) is Watch:
                counts.lines["watch"] += 1
                user, movie, minute = e.user_id, e.movie_id, e.minute
                if minute == 0:
                    counts.session_starts[movie] += 1
                    if known_user is None:
                        counts.user_actions[user] += 1
                    else:
                        counts.users_checked += 1
                        counts.users_unknown += not known_user(user)
                    if known_movie is not None:
                        counts.movies_checked += 1
                        counts.movies_unknown += not known_movie(movie)
                    session = opened[user] = _Session(movie, bucket.index)
                    start_ms = (when - EPOCH) // _MS
                    bucket.offer(_mix64(_mix64(self._seed_key ^ (user & _M64)) ^ (start_ms & _M64)), session)
                else:
                    session = opened.get(user)
                    if session is not None and session.movie == movie and minute >= session.minutes:
                        session.minutes = minute + 1
            elif type(e) is Rate:
                counts.lines["rate"] += 1
                counts.ratings[e.rating] += 1
            elif type(e) is Recommendation:
                counts.lines["recommendation"] += 1
                if known_user is None:
                    counts.user_actions[e.user_id] += 1
                else:
                    counts.users_checked += 1
                    counts.users_unknown += not known_user(e.user_id)
            elif type(e) is Account:
                counts.lines["account"] += 1
            else:
                raise TypeError(f"not an accepted MLiP event: {e!r}")
        if bucket is not None and run:
            filed[bucket.index] = filed.get(bucket.index, 0) + run
        if filed:
            self._ahead = 0
        return filed

    def _locate(self, when: datetime) -> _Bucket | None:
        """The held bucket of an event time, advancing the head (and freezing the
        reference when due); None, counted, when the event is too late or too far ahead."""
        index = (when - EPOCH) // self.bucket
        if self._head is None:
            self._first = self._head = index
        elif index > self._head:
            if index - self._head > self.max_jump_buckets:
                self._ahead += 1
                if self._ahead < self.jump_after:
                    self.ahead_lines += 1
                    return None
            self._ahead = 0
            self._advance(index)
        if index < self._lowest():
            self.late_lines += 1
            return None
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = _Bucket(index, self.sample_size)
            if self._pending_rejections:
                bucket.counts.rejections.update(self._pending_rejections)
                self._pending_rejections.clear()
        return bucket

    def _lowest(self) -> int:
        assert self._first is not None and self._head is not None
        if self._ref_end is None:
            return self._first
        return max(self._ref_end, self._head - self.window_buckets - self.grace + 1)

    def _advance(self, index: int) -> None:
        assert self._first is not None
        if self._ref_end is None and self.reference_buckets is not None \
                and index >= self._first + self.reference_buckets + self.grace:
            self._freeze(self._first + self.reference_buckets)
        self._head = index
        if self._ref_end is not None:
            self._evict(self._lowest())

    def _evict(self, lowest: int) -> None:
        gone = [b for b in self._buckets if b < lowest]
        if not gone:
            return
        for b in gone:
            del self._buckets[b]
        self._forget_sessions_before(lowest)

    def _forget_sessions_before(self, index: int) -> None:
        """Drop open sessions that started before bucket ``index``; in place, because the
        hot loop holds the dict."""
        for user in [u for u, s in self._open.items() if s.bucket < index]:
            del self._open[user]

    def _file_rejections(self, rejections: Mapping[str, int], weights: Mapping[int, int]) -> None:
        for reason, n in rejections.items():
            if n <= 0:
                continue
            if not weights:
                target = self._head_bucket()
                if target is None:
                    self._pending_rejections[str(reason)] += int(n)
                else:
                    target.counts.rejections[str(reason)] += int(n)
                continue
            for b, share in apportion(int(n), weights).items():
                self._rejections_of(b)[str(reason)] += share

    def _rejections_of(self, index: int) -> Counter[str]:
        """Where rejections apportioned to bucket ``index`` go: the bucket if held, the
        reference if the batch froze it meanwhile, else the head (evicted meanwhile)."""
        bucket = self._buckets.get(index)
        if bucket is not None:
            return bucket.counts.rejections
        if self._reference is not None and self._ref_end is not None and index < self._ref_end:
            return self._reference.rejections
        head = self._head_bucket()
        return head.counts.rejections if head is not None else self._pending_rejections

    def _head_bucket(self) -> _Bucket | None:
        """The held bucket at the head (made if empty), or None before any or right after
        a manual freeze."""
        if self._head is None or self._head < self._lowest():
            return None
        bucket = self._buckets.get(self._head)
        if bucket is None:
            bucket = self._buckets[self._head] = _Bucket(self._head, self.sample_size)
        return bucket

    # -- the reference ---------------------------------------------------------------------

    def freeze_reference(self) -> None:
        """End the reference now: every bucket seen so far (up to the head) becomes it.

        Raises RuntimeError when nothing was seen or the reference is already frozen."""
        with self._lock:
            if self._ref_end is not None:
                raise RuntimeError("the reference is already frozen; reset_reference() first")
            if self._head is None:
                raise RuntimeError("no event seen yet: nothing to freeze")
            self._freeze(self._head + 1)

    def reset_reference(self) -> None:
        """Forget everything; the next events start a new reference (after an accepted
        drift, or after retraining on the new data)."""
        with self._lock:
            self._start_fresh()

    def _freeze(self, end: int) -> None:
        assert self._first is not None
        held = {b: (bk.counts, bk.sessions()) for b, bk in self._buckets.items() if b < end}
        self._reference, self.basis = reference_window(
            held, self._first, end, self.sample_size, classify_users=self.known_user is None,
            classify_movies=self.known_movie is None)
        self._ref_end = end
        for b in held:
            del self._buckets[b]
        self._forget_sessions_before(end)

    # -- reading -----------------------------------------------------------------------------

    def current(self) -> WindowStats:
        """The current window's statistics (empty before the reference is frozen)."""
        with self._lock:
            return self._current()

    def _current(self) -> WindowStats:
        if self._ref_end is None:
            return WindowStats(sample_size=self.sample_size)
        return merge_all((WindowStats.of(bk.counts, self.basis, bk.sessions(), self.sample_size)
                          for _, bk in sorted(self._buckets.items())), self.sample_size)

    def report(self) -> DriftReport:
        """The current window against the reference, one row per feature."""
        from stream_consumer.drift_report import DriftReport, compare  # it imports this module

        with self._lock:
            if self._ref_end is None or self._first is None or self._head is None:
                return DriftReport(compare(None, None, self.thresholds), late_lines=self.late_lines,
                                   ahead_lines=self.ahead_lines)
            reference_span = (self._time(self._first), self._time(self._ref_end))
            current_span = None
            if self._head >= self._ref_end:
                current_span = (self._time(self._lowest()), self._time(self._head + 1))
            return DriftReport(compare(self._reference, self._current(), self.thresholds),
                               reference_span, current_span, self.late_lines, self.ahead_lines)
