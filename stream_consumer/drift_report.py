"""The drift report: the current window against the reference, feature by feature, and
the same report computed from event-store frames (``movierec drift report``).

Why a second module: ``stream_consumer.drift`` is what the consumer runs on every batch
(tests, window statistics, the monitor); this is what reads them: one row per feature
with its test, statistic, p-value, threshold, alarm and sizes (``compare``), rendered as
JSON (``DriftReport.to_dict``), as a table (``format_table``) and as gauge values
(``metric_values``; the caller owns the Prometheus metrics). ``report_from_frames`` turns
DataFrames with the event-store columns into the same bucket counts the monitor builds
and goes through the same code, so the same events give the same numbers.

The features (one test each; units in brackets):

=====================  ======  ============================================================
feature                test    what is compared
=====================  ======  ============================================================
event_mix              chi2    actions by kind: watch sessions (minute-0 lines), rate
                               lines, recommendation lines [actions]
rating                 chi2    rate lines by stars [lines]
popularity             psi     watch sessions by the movie's popularity decile in the basis,
                               plus "unseen" for movies the basis never saw [sessions]
session_minutes        ks      minutes watched per session, bottom-k sample [sessions]
new_account_rate       z       account lines / (actions + account lines), two-sided
unknown_user_share     z, >    session starts and recommendation lines by unknown users /
                               all of them [actions]
unknown_movie_share    z, >    sessions of unknown movies / sessions [sessions]
rejection_share        z, >    rejected lines / all lines [lines]
rejection_reasons      chi2    rejected lines by reason [lines]
=====================  ======  ============================================================

"Unknown" is the caller's notion when given (``known_user``/``known_movie`` on the
monitor, ``known_users``/``known_movies`` here: what the system knew), else "not seen in
the basis" (the first half of the reference), measured on the second half only.

Why these tests: categorical mixes with a handful of categories and roughly independent
units get chi-square (a p-value that respects the sample size) with PSI as the effect
size; popularity is the textbook PSI case (bins from reference deciles); session length
is continuous, hence KS; single rates get the two-proportion z-test, one-sided where only
a rise is a problem (more unknown ids, more rejections; fewer, e.g. after retraining or
when sessions move to known films, is not drift to wake anyone for). Alarm rules
(``Thresholds``): p < 0.001, and for chi-square also PSI >= 0.1 (over large windows
chi-square flags shifts too small to matter); PSI >= 0.25 (Yurdakul 2018); and at least
``min_n`` = 500 observations on both sides for any alarm, so tiny windows never alarm.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from movierec.errors import MovierecError
from stream_consumer.drift import (
    ACTIONS,
    DEFAULT_BUCKET,
    DEFAULT_SAMPLE,
    EPOCH,
    FEATURES,
    POPULARITY_BUCKETS,
    POPULARITY_LABELS,
    BucketCounts,
    Thresholds,
    WindowStats,
    chi_square,
    ks,
    merge_all,
    psi,
    reference_window,
    session_priorities,
    two_proportion_z,
)

FEATURE_TESTS: dict[str, str] = dict(zip(
    FEATURES, ("chi2", "chi2", "psi", "ks", "z", "z", "z", "z", "chi2"), strict=True))
"""The test each feature uses."""

class DriftReportError(MovierecError, ValueError):
    """The frames cannot be compared (a column or rows missing): what a person fixes by
    choosing other windows or another store."""


_MS = timedelta(milliseconds=1)

# -- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftRow:
    """One feature's comparison. ``statistic``: chi2, PSI, KS D or z; ``p_value`` None for
    PSI; ``threshold``: alpha for p-value tests, the PSI alarm level for PSI; ``effect``:
    PSI for chi2 and psi, D for ks, current minus reference rate for z; sizes in the
    feature's unit. ``statistic`` is None when a window has no data."""

    feature: str
    test: str
    statistic: float | None
    p_value: float | None
    threshold: float
    alarm: bool
    reference_size: int
    current_size: int
    effect: float | None = None
    detail: str = ""


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


@dataclass(frozen=True)
class DriftReport:
    """Rows in ``FEATURES`` order, and the windows compared ([start, end) event times)."""

    rows: tuple[DriftRow, ...]
    reference_span: tuple[datetime, datetime] | None = None
    current_span: tuple[datetime, datetime] | None = None
    late_lines: int = 0
    ahead_lines: int = 0

    @property
    def ready(self) -> bool:
        return self.reference_span is not None

    def alarms(self) -> list[str]:
        return [row.feature for row in self.rows if row.alarm]

    def row(self, feature: str) -> DriftRow:
        for row in self.rows:
            if row.feature == feature:
                return row
        raise KeyError(feature)

    def to_dict(self) -> dict:
        """JSON-ready: ISO times, None for missing or non-finite numbers."""
        def span(s: tuple[datetime, datetime] | None) -> dict | None:
            return None if s is None else {"start": s[0].isoformat(), "end": s[1].isoformat()}
        rows = []
        for row in self.rows:
            d = asdict(row)
            for key in ("statistic", "p_value", "effect", "threshold"):
                d[key] = _finite(d[key])
            rows.append(d)
        return {"ready": self.ready, "alarms": self.alarms(), "reference": span(self.reference_span),
                "current": span(self.current_span), "late_lines": self.late_lines,
                "ahead_lines": self.ahead_lines, "features": rows}

    def format_table(self) -> str:
        """A fixed-width table for humans, one feature a line, then the windows."""
        def num(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)
        head = ("feature", "test", "statistic", "p-value", "threshold", "alarm", "ref n", "cur n", "detail")
        body = [(r.feature, r.test, num(r.statistic, ".4g"), num(r.p_value, ".2g"),
                 (f"psi>={r.threshold:g}" if r.test == "psi" else f"p<{r.threshold:g}"),
                 "ALARM" if r.alarm else "ok", str(r.reference_size), str(r.current_size), r.detail)
                for r in self.rows]
        widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head) - 1)]
        out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1]
               for line in [head, *body]]

        def span(name: str, s: tuple[datetime, datetime] | None) -> str:
            return f"{name}: " + ("not yet" if s is None else f"{s[0].isoformat()} .. {s[1].isoformat()}")
        out += ["", span("reference", self.reference_span), span("current", self.current_span)]
        if self.late_lines or self.ahead_lines:
            out.append(f"dropped lines: {self.late_lines} too late, {self.ahead_lines} too far ahead")
        alarms = self.alarms()
        out.append("alarms: " + (", ".join(alarms) if alarms else "none"))
        return "\n".join(out)


def metric_values(report: DriftReport) -> list[tuple[str, str, float]]:
    """(feature, stat_name, value) triples for gauges. ``stat_name`` is the row's test
    name for its statistic (chi2, psi, ks, z; e.g. ``movierec_drift_statistic{feature,
    test}``), else one of p_value, effect, alarm (1.0 or 0.0), reference_size,
    current_size. Missing or non-finite values are left out; alarm is always there."""
    out: list[tuple[str, str, float]] = []
    for row in report.rows:
        for name, value in ((row.test, row.statistic), ("p_value", row.p_value), ("effect", row.effect)):
            kept = _finite(value)
            if kept is not None:
                out.append((row.feature, name, float(kept)))
        out += [(row.feature, "alarm", 1.0 if row.alarm else 0.0),
                (row.feature, "reference_size", float(row.reference_size)),
                (row.feature, "current_size", float(row.current_size))]
    return out


def _no_data(feature: str, test: str, threshold: float, n_ref: int, n_cur: int) -> DriftRow:
    side = "reference" if n_ref == 0 else "current window"
    return DriftRow(feature, test, None, None, threshold, False, n_ref, n_cur, None, f"no data in the {side}")


def _few(th: Thresholds, n_ref: int, n_cur: int) -> str:
    return "" if min(n_ref, n_cur) >= th.min_n else f"; too few to alarm (< {th.min_n})"


def _largest_change(keys: Sequence, r: Sequence[float], c: Sequence[float],
                    labels: Mapping | None = None) -> str:
    sr, sc = sum(r), sum(c)
    i = max(range(len(keys)), key=lambda j: abs(c[j] / sc - r[j] / sr))
    name = labels.get(keys[i], str(keys[i])) if labels else str(keys[i])
    return f"{name} {r[i] / sr:.1%} -> {c[i] / sc:.1%}"


def _categorical_row(feature: str, ref: Mapping, cur: Mapping, th: Thresholds,
                     keys: Sequence | None = None, labels: Mapping | None = None) -> DriftRow:
    keys = list(keys) if keys is not None else sorted(set(ref) | set(cur))
    r, c = [ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys]
    n_ref, n_cur = sum(r), sum(c)
    if n_ref == 0 or n_cur == 0:
        return _no_data(feature, "chi2", th.alpha, n_ref, n_cur)
    stat, p = chi_square(r, c)
    effect = psi(r, c, epsilon=th.epsilon)
    alarm = min(n_ref, n_cur) >= th.min_n and p < th.alpha and effect >= th.min_psi
    detail = f"psi {effect:.3f}; {_largest_change(keys, r, c, labels)}" + _few(th, n_ref, n_cur)
    if min(n_ref, n_cur) >= th.min_n and p < th.alpha and effect < th.min_psi:
        detail += f"; significant but immaterial (psi < {th.min_psi:g})"
    return DriftRow(feature, "chi2", stat, p, th.alpha, alarm, n_ref, n_cur, effect, detail)


def _psi_row(feature: str, ref: Mapping, cur: Mapping, th: Thresholds, keys: Sequence,
             labels: Mapping | None = None) -> DriftRow:
    r, c = [ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys]
    n_ref, n_cur = sum(r), sum(c)
    if n_ref == 0 or n_cur == 0:
        return _no_data(feature, "psi", th.psi_alarm, n_ref, n_cur)
    value = psi(r, c, epsilon=th.epsilon)
    alarm = min(n_ref, n_cur) >= th.min_n and value >= th.psi_alarm
    detail = _largest_change(keys, r, c, labels) + _few(th, n_ref, n_cur)
    return DriftRow(feature, "psi", value, None, th.psi_alarm, alarm, n_ref, n_cur, value, detail)


def _ks_row(feature: str, ref: Sequence[int], cur: Sequence[int], th: Thresholds) -> DriftRow:
    n_ref, n_cur = len(ref), len(cur)
    if n_ref == 0 or n_cur == 0:
        return _no_data(feature, "ks", th.alpha, n_ref, n_cur)
    d, p = ks(ref, cur)
    alarm = min(n_ref, n_cur) >= th.min_n and p < th.alpha
    detail = f"median {float(np.median(ref)):g} -> {float(np.median(cur)):g} min" + _few(th, n_ref, n_cur)
    return DriftRow(feature, "ks", d, p, th.alpha, alarm, n_ref, n_cur, d, detail)


def _rate_row(feature: str, hits_ref: int, n_ref: int, hits_cur: int, n_cur: int, th: Thresholds,
              alternative: str) -> DriftRow:
    if n_ref == 0 or n_cur == 0:
        return _no_data(feature, "z", th.alpha, n_ref, n_cur)
    z, p = two_proportion_z(hits_ref, n_ref, hits_cur, n_cur, alternative=alternative)
    alarm = min(n_ref, n_cur) >= th.min_n and p < th.alpha
    share_ref, share_cur = hits_ref / n_ref, hits_cur / n_cur
    detail = f"{share_ref:.2%} -> {share_cur:.2%}" + _few(th, n_ref, n_cur)
    return DriftRow(feature, "z", z, p, th.alpha, alarm, n_ref, n_cur, share_cur - share_ref, detail)


def compare(reference: WindowStats | None, current: WindowStats | None,
            thresholds: Thresholds | None = None) -> tuple[DriftRow, ...]:
    """One row per ``FEATURES`` entry: the current window against the reference.

    Without a reference (not frozen yet) every row says so and none alarms."""
    th = thresholds or Thresholds()
    if reference is None:
        return tuple(DriftRow(f, t, None, None, th.psi_alarm if t == "psi" else th.alpha, False, 0,
                              0, None, "no reference yet") for f, t in FEATURE_TESTS.items())
    ref, cur = reference, current or WindowStats()
    actions_ref, actions_cur = sum(ref.actions.values()), sum(cur.actions.values())
    return (
        _categorical_row("event_mix", ref.actions, cur.actions, th, ACTIONS),
        _categorical_row("rating", ref.ratings, cur.ratings, th),
        _psi_row("popularity", ref.popularity, cur.popularity, th, POPULARITY_BUCKETS, POPULARITY_LABELS),
        _ks_row("session_minutes", list(ref.session_minutes.values()), list(cur.session_minutes.values()),
                th),
        _rate_row("new_account_rate", ref.lines["account"], actions_ref + ref.lines["account"],
                  cur.lines["account"], actions_cur + cur.lines["account"], th, "two-sided"),
        _rate_row("unknown_user_share", ref.unknown_user_actions, ref.user_actions,
                  cur.unknown_user_actions, cur.user_actions, th, "larger"),
        _rate_row("unknown_movie_share", ref.unknown_movie_sessions, ref.movie_sessions,
                  cur.unknown_movie_sessions, cur.movie_sessions, th, "larger"),
        _rate_row("rejection_share", ref.rejected, ref.accepted + ref.rejected,
                  cur.rejected, cur.accepted + cur.rejected, th, "larger"),
        _categorical_row("rejection_reasons", ref.rejections, cur.rejections, th),
    )


# -- the frame path ----------------------------------------------------------------------------

FRAME_COLUMNS: tuple[str, ...] = ("time", "kind", "user_id", "movie_id", "minute", "rating")
"""The event-store columns the report reads (others are ignored)."""


def _by_bucket(index: np.ndarray) -> Counter[int]:
    buckets, counts = np.unique(index, return_counts=True)
    return Counter(dict(zip(buckets.tolist(), counts.tolist(), strict=True)))


def _tally(index: np.ndarray, keys: np.ndarray) -> dict[int, Counter]:
    """bucket -> Counter(key -> rows) of parallel arrays."""
    out: dict[int, Counter] = {}
    if len(index) == 0:
        return out
    sizes = pd.DataFrame({"b": index, "k": keys}).groupby(["b", "k"], sort=False).size()
    for (b, key), n in zip(sizes.index.tolist(), sizes.tolist(), strict=True):
        out.setdefault(b, Counter())[key] = n
    return out


Known = Collection[Any] | Callable[[Any], bool] | None
"""What the caller knows: a collection of ids, a predicate, or None (the basis decides)."""


def _unknown_mask(values: np.ndarray, known: Collection[Any] | Callable[[Any], bool]) -> np.ndarray:
    """True where ``known`` does not know the id (a predicate is asked once per id)."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    if callable(known):
        unique, inverse = np.unique(values, return_inverse=True)
        flags = np.fromiter((not known(v) for v in unique.tolist()), dtype=bool, count=len(unique))
        return flags[inverse.reshape(-1)]
    return ~pd.Series(values, dtype=object).isin(known).to_numpy(dtype=bool)


def _numbers(frame: pd.DataFrame, column: str, rows: np.ndarray, what: str) -> np.ndarray:
    values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
    if np.isnan(values).any():
        raise DriftReportError(f"{what} rows need a {column}")
    return values.astype(np.int64)


def _sessions(index: np.ndarray, users: np.ndarray, times: np.ndarray, movies: np.ndarray,
              minutes: np.ndarray, seed: int) -> dict[int, dict[int, int]]:
    """bucket -> (priority -> minutes watched) of the sessions in a frame's watch rows
    (given in the frame's order). The monitor's rule, vectorised: per user in time order,
    a minute-0 row starts a session; later rows of the same movie up to the user's next
    minute-0 row extend it to their minute + 1."""
    if len(users) == 0:
        return {}
    codes = pd.factorize(pd.Series(movies, dtype=object))[0]
    order = np.lexsort((np.arange(len(users)), times, users))
    users, times, codes = users[order], times[order], codes[order]
    minutes, index = minutes[order], index[order]
    is_start = minutes == 0
    starts = np.flatnonzero(is_start)
    if len(starts) == 0:
        return {}
    session = np.cumsum(is_start) - 1  # the latest start at or before each row; -1: none
    owner = starts[np.maximum(session, 0)]
    member = (session >= 0) & (users[owner] == users) & (codes[owner] == codes)
    length = np.zeros(len(starts), dtype=np.int64)
    np.maximum.at(length, session[member], minutes[member] + 1)
    priority = session_priorities(users[starts], times[starts], seed)
    out: dict[int, dict[int, int]] = {}
    for b, p, n in zip(index[starts].tolist(), priority.tolist(), length.tolist(), strict=True):
        out.setdefault(b, {})[p] = n
    return out


def frame_buckets(frame: pd.DataFrame, *, bucket: timedelta = DEFAULT_BUCKET, seed: int = 0,
                  known_users: Known = None,
                  known_movies: Known = None) -> dict[int, tuple[BucketCounts, dict[int, int]]]:
    """bucket index -> (raw counts, sessions as priority -> minutes) of a frame with the
    event-store columns (``FRAME_COLUMNS``): what ``DriftMonitor`` builds from the same
    events fed in time order. Rows are taken in time order (stable), as the store reads.
    ``bucket`` must be a whole number of milliseconds (the store's time resolution).
    ``known_users``/``known_movies``: as the monitor's ``known_user``/``known_movie``
    (a collection of ids or a predicate), else the basis classifies later."""
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise DriftReportError(f"frame lacks column(s) {missing}")
    if bucket <= timedelta(0) or bucket % _MS:
        raise ValueError("bucket must be a positive whole number of milliseconds")
    if len(frame) == 0:
        return {}
    times = frame["time"].to_numpy(dtype="datetime64[ms]").astype(np.int64)
    index = np.floor_divide(times, bucket // _MS)
    users = frame["user_id"].to_numpy(dtype=np.int64)
    movies = frame["movie_id"].to_numpy(dtype=object)
    kind = {k: (frame["kind"] == k).to_numpy(dtype=bool)
            for k in ("watch", "rate", "recommendation", "account")}
    watch_rows, rate_rows = np.flatnonzero(kind["watch"]), np.flatnonzero(kind["rate"])
    reco_rows = np.flatnonzero(kind["recommendation"])
    minutes = _numbers(frame, "minute", watch_rows, "watch")
    stars = _numbers(frame, "rating", rate_rows, "rate")
    start_rows = watch_rows[minutes == 0]

    out: dict[int, tuple[BucketCounts, dict[int, int]]] = {}

    def counts(b: int) -> BucketCounts:
        if b not in out:
            out[b] = (BucketCounts(), {})
        return out[b][0]

    for name, mask in kind.items():
        for b, n in _by_bucket(index[mask]).items():
            counts(b).lines[name] = n
    for b, tally in _tally(index[rate_rows], stars).items():
        counts(b).ratings.update(tally)
    for b, tally in _tally(index[start_rows], movies[start_rows]).items():
        counts(b).session_starts.update(tally)
    action_rows = np.concatenate([start_rows, reco_rows])
    if known_users is None:
        for b, tally in _tally(index[action_rows], users[action_rows]).items():
            counts(b).user_actions.update(tally)
    else:
        unknown = _unknown_mask(users[action_rows], known_users)
        for b, n in _by_bucket(index[action_rows]).items():
            counts(b).users_checked = n
        for b, n in _by_bucket(index[action_rows][unknown]).items():
            counts(b).users_unknown = n
    if known_movies is not None:
        unknown = _unknown_mask(movies[start_rows], known_movies)
        for b, n in _by_bucket(index[start_rows]).items():
            counts(b).movies_checked = n
        for b, n in _by_bucket(index[start_rows][unknown]).items():
            counts(b).movies_unknown = n
    for b, sample in _sessions(index[watch_rows], users[watch_rows], times[watch_rows],
                               movies[watch_rows], minutes, seed).items():
        counts(b)
        out[b][1].update(sample)
    return out


def _span(buckets: Mapping[int, object], bucket: timedelta) -> tuple[datetime, datetime] | None:
    if not buckets:
        return None
    return EPOCH + min(buckets) * bucket, EPOCH + (max(buckets) + 1) * bucket


def report_from_frames(reference: pd.DataFrame, current: pd.DataFrame, *,
                       rejections_reference: Mapping[str, int] | None = None,
                       rejections_current: Mapping[str, int] | None = None,
                       bucket: timedelta = DEFAULT_BUCKET, thresholds: Thresholds | None = None,
                       sample_size: int = DEFAULT_SAMPLE, seed: int = 0, known_users: Known = None,
                       known_movies: Known = None) -> DriftReport:
    """The drift report of ``current`` against ``reference`` (event-store frames).

    The reference spans its buckets from the first to the last row; its first half is
    the basis, exactly as in ``DriftMonitor``. Rejected lines are not in the store: pass
    their counts by reason (the DLQ's, or the consumer's counters) for the two windows.
    ``known_users``/``known_movies``: what the system knew (e.g. the ids in the store
    before the reference, or the serving model's); None: the basis decides. Raises
    ValueError when the reference is empty."""
    ref = frame_buckets(reference, bucket=bucket, seed=seed, known_users=known_users,
                        known_movies=known_movies)
    if not ref:
        raise DriftReportError("the reference frame has no rows")
    ref_stats, basis = reference_window(ref, min(ref), max(ref) + 1, sample_size,
                                        classify_users=known_users is None,
                                        classify_movies=known_movies is None)
    cur = frame_buckets(current, bucket=bucket, seed=seed, known_users=known_users,
                        known_movies=known_movies)
    cur_stats = merge_all((WindowStats.of(c, basis, s, sample_size) for _, (c, s) in sorted(cur.items())),
                          sample_size)
    for stats, rejections in ((ref_stats, rejections_reference), (cur_stats, rejections_current)):
        if rejections:
            stats.rejections.update({str(reason): int(n) for reason, n in rejections.items() if n})
    return DriftReport(compare(ref_stats, cur_stats, thresholds), _span(ref, bucket), _span(cur, bucket))
