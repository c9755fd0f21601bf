"""Drift statistics: the tests against scipy and by hand, window merging, the monitor's
mechanics, a synthetic stream where each kind of drift raises exactly its alarms (and a
stationary one raises none), and the monitor against the frame path on the same events."""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from movierec.wire import Account, Event, Rate, Reason, Recommendation, Rejection, Watch
from stores.feature_delta import epoch_ms
from stream_consumer.drift import (
    DECILES,
    FEATURES,
    UNSEEN,
    BucketCounts,
    Thresholds,
    WindowStats,
    apportion,
    bottom_k,
    chi_square,
    ks,
    popularity_deciles,
    psi,
    reference_window,
    session_priorities,
    session_priority,
    two_proportion_z,
)
from stream_consumer.drift_monitor import DriftMonitor
from stream_consumer.drift_report import (
    DriftReport,
    compare,
    frame_buckets,
    metric_values,
    report_from_frames,
)

T0 = datetime(2025, 3, 1, 12, 0)  # on a 10-minute bucket boundary
BUCKET = timedelta(minutes=10)
KINDS = ["watch", "rate", "recommendation", "account"]


# -- the tests over counts ------------------------------------------------------------------


def test_psi_of_identical_distributions_is_zero_and_grows_with_the_shift() -> None:
    ref = [500, 300, 150, 50]
    assert psi(ref, ref) == 0.0
    assert psi(ref, [50, 30, 15, 5]) == pytest.approx(0.0, abs=1e-12)  # proportional counts
    values = []
    for w in (0.0, 0.1, 0.3, 0.6, 0.9):  # move a growing share of the mass to the last category
        cur = np.array(ref, dtype=float) * (1 - w)
        cur[-1] += 1000 * w
        values.append(psi(ref, cur))
    assert values[0] == pytest.approx(0.0, abs=1e-12)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


def test_psi_by_hand() -> None:
    # p = (.5, .3, .2), q = (.3, .3, .4):
    # (.3 - .5) ln(.3/.5) + 0 + (.4 - .2) ln(.4/.2) = .2 * .5108256 + .2 * .6931472 = .2407946
    assert psi([50, 30, 20], [30, 30, 40], epsilon=0) == pytest.approx(0.2407946, abs=1e-7)
    # the default smoothing (1e-4 per share) barely moves it
    assert psi([50, 30, 20], [30, 30, 40]) == pytest.approx(0.2407946, abs=1e-3)


def test_psi_with_empty_categories() -> None:
    assert math.isfinite(psi([10, 0], [5, 5])) and psi([10, 0], [5, 5]) > 1
    assert psi([10, 0], [5, 5], epsilon=0) == math.inf
    assert psi([10, 0, 5], [20, 0, 10], epsilon=0) == pytest.approx(0.0)  # empty on both sides: dropped
    # a larger epsilon caps what an empty category can cost
    assert psi([10, 0], [5, 5], epsilon=0.01) < psi([10, 0], [5, 5], epsilon=1e-6)
    for bad in (([1, 2], [1]), ([0, 0], [1, 1]), ([-1, 2], [1, 1]), ([], [])):
        with pytest.raises(ValueError):
            psi(*bad)
    with pytest.raises(ValueError):
        psi([1, 2], [2, 1], epsilon=-1)


def test_chi_square_agrees_with_scipy_and_drops_empty_categories() -> None:
    ref, cur = [120, 80, 40, 10], [100, 90, 30, 30]
    expected = stats.chi2_contingency(np.array([ref, cur]), correction=False)
    assert chi_square(ref, cur) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    # a category empty on both sides would make scipy fail; it is dropped
    stat, p = chi_square([120, 0, 80, 0], [100, 0, 90, 5])
    reduced = stats.chi2_contingency(np.array([[120, 80, 0], [100, 90, 5]]), correction=False)
    assert (stat, p) == (pytest.approx(reduced.statistic), pytest.approx(reduced.pvalue))
    assert chi_square([5, 0], [7, 0]) == (0.0, 1.0)  # one category left: nothing to compare
    with pytest.raises(ValueError):
        chi_square([0, 0], [1, 2])
    with pytest.raises(ValueError):
        chi_square([1, 2, 3], [1, 2])


def test_ks_agrees_with_scipy() -> None:
    rng = np.random.default_rng(7)
    for a, b in ((rng.normal(0, 1, 300), rng.normal(0.3, 1, 400)),
                 (rng.integers(1, 60, 2000), rng.integers(1, 50, 2000))):  # ties, as minutes have
        expected = stats.ks_2samp(a, b)
        assert ks(a, b) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    with pytest.raises(ValueError):
        ks([], [1.0])


def test_two_proportion_z_is_the_square_root_of_the_2x2_chi_square() -> None:
    z, p = two_proportion_z(30, 1000, 60, 1200)
    chi = stats.chi2_contingency(np.array([[30, 970], [60, 1140]]), correction=False)
    assert z > 0
    assert z**2 == pytest.approx(chi.statistic)
    assert p == pytest.approx(chi.pvalue)
    assert two_proportion_z(30, 1000, 60, 1200, alternative="larger")[1] == pytest.approx(p / 2)
    assert two_proportion_z(30, 1000, 60, 1200, alternative="smaller")[1] == pytest.approx(1 - p / 2)
    assert two_proportion_z(0, 100, 0, 50) == (0.0, 1.0)
    assert two_proportion_z(100, 100, 50, 50) == (0.0, 1.0)
    for args in ((1, 0, 1, 1), (5, 4, 1, 1), (-1, 4, 1, 1)):
        with pytest.raises(ValueError):
            two_proportion_z(*args)
    with pytest.raises(ValueError):
        two_proportion_z(1, 2, 1, 2, alternative="bigger")


# -- sampling and windows --------------------------------------------------------------------


def test_session_priorities_are_the_same_scalar_and_vectorised() -> None:
    rng = np.random.default_rng(3)
    users = np.concatenate([rng.integers(0, 2**62, 500), [0, 1, 2**63 - 1]])
    starts = np.concatenate([rng.integers(-2**40, 2**42, 500), [0, -1, 2**62]])
    for seed in (0, 7, 2**70 + 5):
        vector = session_priorities(users, starts, seed).tolist()
        assert vector == [session_priority(int(u), int(t), seed) for u, t in zip(users, starts, strict=True)]
    assert session_priority(1, 2, 0) != session_priority(1, 2, 1) != session_priority(2, 1, 1)


def test_bottom_k_keeps_the_smallest_priorities() -> None:
    sample = {9: 1, 3: 2, 7: 3, 1: 4}
    assert bottom_k(sample, 2) == {1: 4, 3: 2}
    assert bottom_k(sample, 10) == sample


def test_popularity_deciles_rank_by_sessions_then_id() -> None:
    counts = {f"m{i:02d}+2000": 100 - i for i in range(20)}  # m00 the most watched
    deciles = popularity_deciles(counts)
    assert deciles["m00+2000"] == deciles["m01+2000"] == 0
    assert deciles["m18+2000"] == deciles["m19+2000"] == DECILES - 1
    ties = popularity_deciles({"b+2000": 1, "a+2000": 1, "c+2000": 5, "z+2000": 0})
    assert ties == {"c+2000": 0, "a+2000": 3, "b+2000": 6}  # ranks 0, 1, 2 of 3; unwatched left out


def _random_stats(rng: np.random.Generator) -> WindowStats:
    return WindowStats(
        lines=Counter({k: int(rng.integers(0, 50)) for k in KINDS}),
        sessions_started=int(rng.integers(0, 50)),
        ratings=Counter({s: int(rng.integers(0, 9)) for s in range(1, 6)}),
        popularity=Counter({d: int(rng.integers(0, 9)) for d in range(DECILES + 1)}),
        user_actions=int(rng.integers(10, 20)), unknown_user_actions=int(rng.integers(0, 10)),
        movie_sessions=int(rng.integers(10, 20)), unknown_movie_sessions=int(rng.integers(0, 10)),
        rejections=Counter({r: int(rng.integers(0, 5)) for r in ("bad_minute", "empty")}),
        session_minutes={int(p): int(rng.integers(1, 90)) for p in rng.integers(0, 2**63, 8)},
        sample_size=5,
    )


def test_window_stats_merge_is_associative_and_commutative() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        a, b, c = (_random_stats(rng) for _ in range(3))
        assert a.merge(b).merge(c) == a.merge(b.merge(c))
        assert a.merge(b) == b.merge(a)
        merged = a.merge(b)
        assert merged.lines == a.lines + b.lines
        assert len(merged.session_minutes) == 5
        assert set(merged.session_minutes) == set(sorted({**a.session_minutes, **b.session_minutes})[:5])


def test_the_reference_measures_basis_dependent_features_on_its_second_half() -> None:
    def bucket(movie: str, user: int, n: int) -> tuple[BucketCounts, dict[int, int]]:
        counts = BucketCounts(lines=Counter(watch=n), session_starts=Counter({movie: n}),
                              user_actions=Counter({user: n}))
        return counts, {}

    buckets = {10: bucket("a+2000", 1, 3), 11: bucket("b+2000", 2, 1),  # the basis
               12: bucket("a+2000", 3, 2), 13: bucket("c+2000", 1, 4)}  # the baseline
    stats, basis = reference_window(buckets, 10, 14)
    assert basis.deciles == {"a+2000": 0, "b+2000": 5} and basis.users == {1, 2}
    assert stats.sessions_started == 10 and stats.lines["watch"] == 10  # all four buckets
    assert stats.popularity == Counter({0: 2, UNSEEN: 4})  # baseline only: a (top), c (unseen)
    assert (stats.user_actions, stats.unknown_user_actions) == (6, 2)  # user 3 is unknown
    assert (stats.movie_sessions, stats.unknown_movie_sessions) == (6, 4)  # c is unknown
    # when the caller classifies, the basis keeps no sets and the flags are taken as given
    flagged = {b: (replace(c, user_actions=Counter(), users_checked=5, users_unknown=1,
                           movies_checked=5, movies_unknown=2), s) for b, (c, s) in buckets.items()}
    stats, basis = reference_window(flagged, 10, 14, classify_users=False, classify_movies=False)
    assert basis.users is None and basis.movies is None
    assert (stats.user_actions, stats.unknown_user_actions) == (20, 4)  # the whole reference
    assert (stats.movie_sessions, stats.unknown_movie_sessions) == (20, 8)


def test_apportion_keeps_the_total() -> None:
    assert apportion(10, {1: 1, 2: 1, 3: 2}) == {1: 3, 2: 2, 3: 5}  # remainders .5, .5: key 1 first
    assert apportion(1, {5: 1, 6: 1}) == {5: 1}
    assert apportion(0, {1: 1}) == {} and apportion(3, {}) == {}
    rng = np.random.default_rng(2)
    for _ in range(50):
        weights = {int(k): int(w)
                   for k, w in zip(rng.integers(0, 100, 5), rng.integers(1, 50, 5), strict=True)}
        assert sum(apportion(int(rng.integers(0, 1000)), weights).values()) >= 0
        total = int(rng.integers(1, 1000))
        assert sum(apportion(total, weights).values()) == total


def test_small_samples_never_alarm() -> None:
    ref = WindowStats(lines=Counter(rate=40, recommendation=40, account=1), sessions_started=40,
                      ratings=Counter({5: 40}), popularity=Counter({0: 40}),
                      user_actions=80, movie_sessions=80, rejections=Counter(bad_minute=1),
                      session_minutes={i: 60 for i in range(40)})
    cur = WindowStats(lines=Counter(rate=400, recommendation=5, account=150), sessions_started=5,
                      ratings=Counter({1: 400}), popularity=Counter({UNSEEN: 5}),
                      user_actions=405, unknown_user_actions=405, movie_sessions=405,
                      unknown_movie_sessions=405, rejections=Counter(bad_timestamp=300),
                      session_minutes={i: 1 for i in range(5)})
    rows = compare(ref, cur)
    assert [r.feature for r in rows] == list(FEATURES)
    assert not any(r.alarm for r in rows)
    assert all("too few" in r.detail for r in rows)
    # the same shift with plenty of data does alarm
    assert all(r.alarm for r in compare(ref, cur, Thresholds(min_n=1)))


def test_a_significant_but_immaterial_mix_shift_does_not_alarm() -> None:
    ref = WindowStats(lines=Counter(rate=200_000, recommendation=400_000), sessions_started=400_000)
    cur = WindowStats(lines=Counter(rate=210_000, recommendation=395_000), sessions_started=395_000)
    row = compare(ref, cur)[0]
    assert row.feature == "event_mix" and row.p_value is not None and row.p_value < 1e-6
    assert row.effect is not None and row.effect < 0.01 and not row.alarm
    assert "immaterial" in row.detail


def test_thresholds_are_checked() -> None:
    for bad in ({"alpha": 0}, {"alpha": 1.5}, {"psi_alarm": 0}, {"min_n": 0}, {"epsilon": -1}):
        with pytest.raises(ValueError):
            Thresholds(**bad)


# -- a synthetic stream ----------------------------------------------------------------------

CATALOG = [f"movie+{k}+{1950 + k % 70}" for k in range(200)]
_ZIPF = np.arange(1, len(CATALOG) + 1) ** -0.9
ZIPF_CDF = np.cumsum(_ZIPF / _ZIPF.sum()).tolist()
MINUTES = [timedelta(minutes=i) for i in range(61)]
BASE_STARS = (0.05, 0.10, 0.25, 0.35, 0.25)
MALFORMED = ("bad_field_count", "bad_movie_id", "bad_minute", "rating_out_of_range")


@dataclass(frozen=True)
class Regime:
    """How the synthetic world behaves; the stream switches regime at the shift time."""

    rate_prob: float = 0.3          # a session ends with a rating
    stars: tuple[float, ...] = BASE_STARS
    tail_share: float = 0.0         # sessions on movies in the basis's bottom decile
    new_movie_share: float = 0.0    # sessions on movies never seen before
    accounts_per_min: float = 0.1   # new users, who then act like everyone else
    schema_share: float = 0.0       # lines written in a new schema (rejected as bad_timestamp)
    length_scale: float = 1.0       # session lengths


BASE = Regime()
Line = tuple[datetime, "Event | str"]  # a str: a rejected line's reason


def make_stream(seed: int, after: Regime = BASE, *, minutes: int = 120, shift_at: int = 60,
                warmup: int = 60, sessions_per_min: float = 40.0, users: int = 1000) -> list[Line]:
    """Time-ordered lines from T0 to T0 + minutes; the world runs from T0 - warmup so the
    monitor starts mid-stream, as the consumer does. 1,000 users (one session at a time
    each), 200 movies (Zipf 0.9), sessions of gamma(2, 5) minutes (1..60), a
    recommendation before each session, 4% malformed lines (session starts spared). From
    T0 + shift_at the regime ``after`` holds."""
    rng = np.random.default_rng(seed)
    shift, stop = T0 + timedelta(minutes=shift_at), T0 + timedelta(minutes=minutes)
    population = list(range(1, users + 1))
    busy_until: dict[int, datetime] = {}
    next_user = 1_000_000
    basis_starts: Counter[str] = Counter()
    bottom: list[str] = []
    lines: list[Line] = []

    def regime(t: datetime) -> Regime:
        return after if t >= shift else BASE

    for m in range(-warmup, minutes):
        minute = T0 + timedelta(minutes=m)
        now = regime(minute)
        if m == shift_at:  # "the bottom decile" as the reference saw it
            bottom = sorted(mv for mv, d in popularity_deciles(basis_starts).items() if d == DECILES - 1)
        for _ in range(rng.poisson(now.accounts_per_min)):
            t = minute + timedelta(seconds=float(rng.uniform(0, 60)))
            population.append(next_user)
            lines.append((t, Account(t, next_user)))
            next_user += 1
        n = int(rng.poisson(sessions_per_min))  # this minute's sessions, drawn together
        offsets, picks, draws = rng.uniform(1, 60, n).tolist(), rng.random(n).tolist(), rng.random(n).tolist()
        choices, gammas = rng.random(n).tolist(), rng.gamma(2.0, 5.0, n).tolist()
        rates, star_draws = rng.random(n).tolist(), rng.random(n).tolist()
        for k in range(n):
            start = minute + timedelta(seconds=offsets[k])
            for _ in range(100):  # someone who is not watching already
                user = population[int(rng.integers(len(population)))]
                if busy_until.get(user, start) <= start:
                    break
            if draws[k] < now.new_movie_share:
                movie = f"new+release+{int(picks[k] * 100)}+2025"
            elif draws[k] < now.new_movie_share + now.tail_share:
                movie = bottom[int(picks[k] * len(bottom))]
            else:
                movie = CATALOG[min(bisect.bisect(ZIPF_CDF, choices[k]), len(CATALOG) - 1)]
            length = min(60, max(1, round(gammas[k] * now.length_scale)))
            asked = start - timedelta(milliseconds=500)
            lines.append((asked, Recommendation(asked, user, "team15:8082", 200, (movie,), "", 42)))
            for i in range(length):
                t = start + MINUTES[i]
                if T0 <= t < stop:
                    lines.append((t, Watch(t, user, movie, i)))
            if T0 <= start < T0 + timedelta(minutes=shift_at // 2):
                basis_starts[movie] += 1
            end = start + MINUTES[length]
            busy_until[user] = end
            later = regime(end)
            if rates[k] < later.rate_prob:
                stars = 1 + min(bisect.bisect(list(itertools.accumulate(later.stars)), star_draws[k]), 4)
                lines.append((end, Rate(end, user, movie, stars)))
    lines = [line for line in lines if T0 <= line[0] < stop]
    draws, reasons = rng.random(len(lines)).tolist(), rng.integers(len(MALFORMED), size=len(lines)).tolist()
    out: list[Line] = []
    for (t, event), draw, reason in zip(lines, draws, reasons, strict=True):
        if draw < 0.04:  # malformed, but never a session start: the basis must hold every
            start = type(event) is Watch and event.minute == 0  # session counted above
            out.append((t, event if start else MALFORMED[reason]))  # type: ignore[union-attr]
        elif draw < 0.04 + regime(t).schema_share:
            out.append((t, Reason.BAD_TIMESTAMP.value))
        else:
            out.append((t, event))
    out.sort(key=lambda line: line[0])
    return out


@functools.lru_cache(maxsize=16)
def cached_stream(seed: int, after: Regime = BASE) -> list[Line]:
    """``make_stream`` once per (seed, regime) in a session; callers must not mutate it."""
    return make_stream(seed, after)


def batches(lines: list[Line], size: int = 500) -> list[tuple[list[Event], Counter[str]]]:
    out = []
    for i in range(0, len(lines), size):
        chunk = lines[i:i + size]
        out.append(([e for _, e in chunk if not isinstance(e, str)],
                    Counter(e for _, e in chunk if isinstance(e, str))))
    return out


def monitor(**kwargs: object) -> DriftMonitor:
    return DriftMonitor(bucket=BUCKET, reference_buckets=6, window_buckets=6,
                        **kwargs)  # type: ignore[arg-type]


def run(lines: list[Line]) -> DriftReport:
    m = monitor()
    for events, rejected in batches(lines):
        m.observe_batch(events, rejected)
    return m.report()


SCENARIOS: dict[str, tuple[Regime, set[str]]] = {
    "stationary": (BASE, set()),
    "rating_lines_triple": (replace(BASE, rate_prob=0.9), {"event_mix"}),
    "rating_shift": (replace(BASE, stars=BASE_STARS[::-1]), {"rating"}),
    "popularity_moves_to_the_bottom_decile": (replace(BASE, tail_share=0.5), {"popularity"}),
    "shorter_sessions": (replace(BASE, length_scale=0.5), {"session_minutes"}),
    "new_account_surge": (replace(BASE, accounts_per_min=8.0), {"new_account_rate", "unknown_user_share"}),
    "schema_change": (replace(BASE, schema_share=0.2), {"rejection_share", "rejection_reasons"}),
    "unknown_movies": (replace(BASE, new_movie_share=0.2), {"unknown_movie_share", "popularity"}),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_drift_raises_exactly_its_alarms(name: str) -> None:
    regime, expected = SCENARIOS[name]
    report = run(cached_stream(2025, regime))
    assert set(report.alarms()) == expected, report.format_table()
    assert report.ready and report.late_lines == 0 and report.ahead_lines == 0
    assert report.reference_span == (T0, T0 + timedelta(hours=1))
    assert report.current_span == (T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    for row in report.rows:  # every feature was really tested, with enough data
        assert row.statistic is not None, row
        assert min(row.reference_size, row.current_size) >= Thresholds().min_n, row


def _frame(events: list[Event]) -> pd.DataFrame:
    """The event-store columns with the store's pandas dtypes."""
    def get(e: Event, name: str) -> object:
        return getattr(e, name, None)
    return pd.DataFrame({
        "time": pd.Series([e.time for e in events], dtype="datetime64[us]").astype("datetime64[ms]"),
        "kind": pd.Categorical([e.kind for e in events], categories=KINDS),
        "user_id": np.array([e.user_id for e in events], dtype=np.int64),
        "movie_id": pd.Series([get(e, "movie_id") for e in events], dtype="str"),
        "minute": pd.array([get(e, "minute") for e in events], dtype="Int16"),
        "rating": pd.array([get(e, "rating") for e in events], dtype="Int8"),
        "status": pd.array([get(e, "status") for e in events], dtype="Int16"),
    })


KNOWN_USERS = frozenset(range(1, 801))  # users 801..1000 and every new account: unknown
KNOWN_MOVIES = frozenset(CATALOG[:150])


@pytest.mark.parametrize(("regime", "known", "sample_size"), [
    (BASE, False, 2000),
    (replace(BASE, new_movie_share=0.2, tail_share=0.2, schema_share=0.1, accounts_per_min=2.0), False, 2000),
    (replace(BASE, new_movie_share=0.2, accounts_per_min=2.0), True, 2000),
    (replace(BASE, length_scale=0.7), False, 150),  # samples overflow in every bucket
])
def test_the_monitor_and_the_frame_path_give_the_same_numbers(regime: Regime, known: bool,
                                                               sample_size: int) -> None:
    lines = make_stream(99, regime)
    cut = T0 + timedelta(hours=1)
    ref_lines, cur_lines = [x for x in lines if x[0] < cut], [x for x in lines if x[0] >= cut]
    given = ({"known_user": KNOWN_USERS.__contains__, "known_movie": KNOWN_MOVIES.__contains__}
             if known else {})
    m = monitor(sample_size=sample_size, **given)
    for part in (ref_lines, cur_lines):
        for events, rejected in batches(part, size=777):
            m.observe_batch(events, rejected)
    live = m.report()

    def split(part: list[Line]) -> tuple[pd.DataFrame, Counter[str]]:
        return (_frame([e for _, e in part if not isinstance(e, str)]),
                Counter(e for _, e in part if isinstance(e, str)))
    ref_frame, ref_rejected = split(ref_lines)
    cur_frame, cur_rejected = split(cur_lines)
    offline_known = {"known_users": KNOWN_USERS, "known_movies": KNOWN_MOVIES.__contains__} if known else {}
    offline = report_from_frames(ref_frame, cur_frame, rejections_reference=ref_rejected,
                                 rejections_current=cur_rejected, bucket=BUCKET, sample_size=sample_size,
                                 **offline_known)
    assert offline.rows == live.rows
    assert live.row("session_minutes").current_size == min(sample_size, 2000)
    assert (offline.reference_span, offline.current_span) == (live.reference_span, live.current_span)
    if known:  # the caller's notion covers the whole reference
        row = live.row("unknown_user_share")
        assert m.reference is not None
        assert row.reference_size == m.reference.sessions_started + m.reference.lines["recommendation"]
        assert live.row("unknown_movie_share").alarm
    # rows in any order give the same buckets (time order is restored, stably)
    shuffled = cur_frame.sample(frac=1.0, random_state=1)
    again = report_from_frames(ref_frame, shuffled, rejections_reference=ref_rejected,
                               rejections_current=cur_rejected, bucket=BUCKET, sample_size=sample_size,
                               **offline_known)
    assert again.rows == live.rows


def test_frames_need_the_columns_and_a_reference() -> None:
    with pytest.raises(ValueError, match="lacks"):
        report_from_frames(pd.DataFrame({"time": []}), pd.DataFrame())
    empty = _frame([Watch(T0, 1, "a+2000", 0)]).iloc[:0]
    with pytest.raises(ValueError, match="no rows"):
        report_from_frames(empty, empty)
    with pytest.raises(ValueError, match="milliseconds"):
        frame_buckets(empty, bucket=timedelta(microseconds=10))
    one = _frame([Watch(T0, 1, "a+2000", 0), Rate(T0, 1, "a+2000", 3)])
    nothing_current = report_from_frames(one, empty)
    assert nothing_current.current_span is None and nothing_current.alarms() == []
    assert all(r.statistic is None and "no data" in r.detail for r in nothing_current.rows)
    broken = _frame([Watch(T0, 1, "a+2000", 0)])
    broken["minute"] = pd.array([None], dtype="Int16")
    with pytest.raises(ValueError, match="minute"):
        frame_buckets(broken)


# -- the monitor's mechanics -------------------------------------------------------------------


def at(bucket: int, seconds: float = 0.0) -> datetime:
    return T0 + bucket * BUCKET + timedelta(seconds=seconds)


def test_sessions_hold_the_users_later_lines_of_the_same_movie() -> None:
    events: list[Event] = [
        Watch(at(1, 0), 1, "a+2000", 0), Watch(at(1, 60), 1, "a+2000", 1),
        Watch(at(1, 61), 1, "a+2000", 1),    # a duplicate
        Watch(at(1, 120), 1, "a+2000", 2),   # session a: 3 minutes
        Watch(at(1, 130), 1, "b+2000", 0),   # the next session of user 1 ends a
        Watch(at(1, 180), 1, "a+2000", 3),   # not b's movie: ignored
        Watch(at(2, 10), 1, "b+2000", 4),    # b: 5 minutes (a later bucket still counts)
        Watch(at(1, 5), 2, "c+2000", 7),     # no minute 0 seen: no session
    ]
    m = DriftMonitor(bucket=BUCKET, reference_buckets=None, window_buckets=3, sample_size=10)
    m.observe_batch([Watch(at(0), 9, "z+2000", 0)])
    m.freeze_reference()
    m.observe_batch(events)
    assert sorted(m.current().session_minutes.values()) == [3, 5]
    offline = frame_buckets(_frame(events), bucket=BUCKET)
    assert sorted(v for _, s in offline.values() for v in s.values()) == [3, 5]


def test_the_reference_freezes_and_the_window_rolls() -> None:
    m = DriftMonitor(bucket=BUCKET, reference_buckets=2, window_buckets=2, max_jump_buckets=10)
    m.observe_batch([Watch(at(0), 1, "a+2000", 0), Rate(at(1), 1, "a+2000", 4)])
    early = m.report()
    assert not early.ready and not m.frozen and early.alarms() == []
    assert [r.feature for r in early.rows] == list(FEATURES)
    assert all(r.statistic is None and r.detail == "no reference yet" for r in early.rows)
    m.observe_batch([Recommendation(at(2), 2, "s:1", 200, (), "", 5)])
    assert m.frozen and m.reference is not None and m.reference.lines == Counter(watch=1, rate=1)
    report = m.report()
    assert report.reference_span == (at(0), at(2)) and report.current_span == (at(2), at(3))
    m.observe_batch([Account(at(5), 3)])
    assert m.report().current_span == (at(4), at(6))
    assert m.current().lines == Counter(account=1)  # bucket 2 rolled out
    m.observe_batch([Account(at(3, 5), 4), Account(at(1), 5)])  # older than the window
    assert m.late_lines == 2


def test_a_batch_s_rejections_follow_its_events_across_the_freeze() -> None:
    m = DriftMonitor(bucket=BUCKET, reference_buckets=2, window_buckets=2)
    m.observe_batch([Account(at(0), 1)])
    m.observe_batch([Account(at(1), 2), Account(at(1, 1), 3), Account(at(2), 4), Account(at(2, 1), 5)],
                    {"bad_minute": 4, "empty": 1})
    assert m.reference is not None and m.reference.rejections == Counter(bad_minute=2, empty=1)
    assert m.current().rejections == Counter(bad_minute=2)


def test_one_wild_timestamp_does_not_flush_the_window() -> None:
    m = DriftMonitor(bucket=BUCKET, reference_buckets=2, window_buckets=3, jump_after=3)
    m.observe_batch([Account(at(b), b) for b in range(4)])
    m.observe_batch([Account(at(500), 99), Account(at(3, 30), 7)])
    assert m.ahead_lines == 1 and m.report().current_span == (at(2), at(4))
    assert "1 too far ahead" in m.report().format_table()
    for _ in range(3):  # the stream really moved on: nothing in range, batch after batch
        m.observe_batch([Account(at(500, 1), 98)])
    assert m.ahead_lines == 3
    assert m.report().current_span == (at(498), at(501))


def test_a_quiet_gap_moves_the_window_at_once_but_a_bad_clock_in_a_busy_stream_does_not() -> None:
    """The wall clock (the batches' Kafka timestamps) tells a night without lines from a
    wild timestamp: after a gap at least as long as the jump limit, the first line past it
    moves the head; a jump while lines keep coming is a bad clock and is dropped."""
    m = DriftMonitor(bucket=BUCKET, reference_buckets=2, window_buckets=3, jump_after=1000)
    limit_ms = 3 * (BUCKET // timedelta(milliseconds=1))  # max_jump_buckets = window_buckets

    def written(when: datetime) -> int:
        return epoch_ms(when) + 500

    m.observe_batch([Account(at(b), b) for b in range(4)], written_ms=written(at(3)))
    # a bad clock: 500 buckets ahead, but written a second after the last batch
    m.observe_batch([Account(at(500), 99)], written_ms=written(at(3)) + 1000)
    assert m.ahead_lines == 1 and m.report().current_span == (at(2), at(4))
    # a quiet night: the next line comes 100 buckets later, written as it happened
    m.observe_batch([Account(at(104), 100)], written_ms=written(at(104)))
    assert m.ahead_lines == 1 and m.report().current_span == (at(102), at(105))
    # a gap just under the limit (by the wall clock) is not enough for a 50-bucket jump
    m.observe_batch([Account(at(154), 101)], written_ms=written(at(104)) + limit_ms - 1)
    assert m.ahead_lines == 2
    # without Kafka timestamps (-1), only a run of jump_after lines would move it
    m.observe_batch([Account(at(300), 102)], written_ms=-1)
    assert m.ahead_lines == 3


def test_manual_freeze_reset_and_rejections_without_events() -> None:
    m = DriftMonitor(bucket=BUCKET, reference_buckets=None)
    with pytest.raises(RuntimeError):
        m.freeze_reference()
    m.observe_batch([], {"bad_timestamp": 3})  # no event yet: held for the first bucket
    m.observe_batch([Account(at(b), b) for b in range(9)], {Reason.BAD_MINUTE: 2})
    m.observe_batch([], {"bad_minute": 1, "empty": 0})  # no events: the newest bucket takes them
    assert not m.frozen and m.current() == WindowStats()
    m.freeze_reference()
    with pytest.raises(RuntimeError):
        m.freeze_reference()
    assert m.report().reference_span == (at(0), at(9))
    assert m.reference is not None and m.reference.rejections == Counter(bad_timestamp=3, bad_minute=3)
    m.observe_batch([], {"empty": 1})  # frozen, nothing current yet: held again
    m.observe_batch([Account(at(9), 10)])
    assert m.current().rejections == Counter(empty=1)
    m.reset_reference()
    assert not m.frozen and m.reference is None and not m.report().ready


def test_only_accepted_events_may_be_observed() -> None:
    m = DriftMonitor()
    with pytest.raises(TypeError):
        m.observe_batch([Rejection(Reason.EMPTY, "empty line")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        m.observe_batch([SimpleNamespace(time=T0, user_id=1)])  # type: ignore[list-item]


def test_monitor_settings_are_checked() -> None:
    for bad in ({"bucket": timedelta(0)}, {"bucket": timedelta(microseconds=1500)},
                {"reference_buckets": 1}, {"window_buckets": 0}, {"sample_size": 0}):
        with pytest.raises(ValueError):
            DriftMonitor(**bad)  # type: ignore[arg-type]


# -- the report's forms ------------------------------------------------------------------------


def test_the_report_as_json_table_and_metric_values() -> None:
    report = run(cached_stream(2025, SCENARIOS["rating_lines_triple"][0]))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["ready"] and data["alarms"] == ["event_mix"]
    assert data["reference"] == {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}
    assert [f["feature"] for f in data["features"]] == list(FEATURES)
    popularity = data["features"][FEATURES.index("popularity")]
    assert popularity["test"] == "psi" and popularity["p_value"] is None
    table = report.format_table()
    assert table.count("ALARM") == 1 and all(f in table for f in FEATURES)
    assert "alarms: event_mix" in table
    values = {(f, name): v for f, name, v in metric_values(report)}
    assert values[("event_mix", "alarm")] == 1.0 and values[("rating", "alarm")] == 0.0
    assert values[("event_mix", "chi2")] == report.row("event_mix").statistic
    assert ("popularity", "psi") in values and ("popularity", "p_value") not in values
    assert values[("session_minutes", "current_size")] == report.row("session_minutes").current_size
    assert {name for _, name, _ in metric_values(report)} <= {
        "chi2", "psi", "ks", "z", "p_value", "effect", "alarm", "reference_size", "current_size"}
    not_ready = DriftMonitor().report()
    alarms = {(f, v) for f, name, v in metric_values(not_ready) if name == "alarm"}
    assert alarms == {(f, 0.0) for f in FEATURES}
    assert json.dumps(not_ready.to_dict(), allow_nan=False)
    with pytest.raises(KeyError):
        report.row("nope")
