"""Coordinated fake accounts (shilling): bursts of young accounts pushing (or nuking) one
movie, found in the ratings. Pure: arrays in, campaigns and accounts out.

A push attack creates accounts and has them give one target the top score within hours,
usually with filler ratings of popular movies so the accounts look ordinary (Lam and
Riedl, WWW 2004; Mobasher et al., ACM TOIT 2007). Each account alone is unremarkable; the
group is not: the target's extreme ratings in a short window come from young accounts far
more often than anyone's ratings do. The rule here is the time-interval view of group
attack detection (Zhang et al., "Detecting profile injection attacks", 2006; Xia et al.
2015), with a binomial test instead of a fixed threshold:

- an account is *young* at a rating when the rating comes within ``young_s`` of the
  account's birth: its sign-up line, or else its first event of any kind (a watch
  counts), unless that first event falls in the first ``young_s`` of the data, where an
  old account seen for the first time cannot be told from a new one (``births``);
- ``g``, the share of extreme ratings (the scale's top, or its bottom) given by young
  accounts to the *other* movies, is the baseline of each movie's test, measured on the
  same data (leaving the movie out keeps a large campaign from raising its own bar);
- for each movie and direction, every window of ``window_s`` that starts at one of its
  young extreme ratings is tested: with ``n`` distinct raters giving that extreme in the
  window, ``k`` of them young, the window is a campaign when ``k >= min_accounts``,
  ``k / n >= min_share``, and ``P(X >= k)`` for ``X ~ Binomial(n, g)`` is below
  ``alpha``. The share condition keeps a popular release, which draws many new sign-ups
  on its own, from reading as an attack: a campaign dominates its target's window
  because its target is obscure (an attack hidden inside a blockbuster's organic volume
  is out of scope, and lifts little);
- the campaign's accounts are its young raters; every account of every campaign is
  flagged, and training leaves them out whole.

Nothing here knows the simulator: the rule sees only ratings, times and sign-ups, as the
course's log gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom

PUSH, NUKE = "push", "nuke"


@dataclass(frozen=True)
class BurstRule:
    """The detector's parameters (module docstring), with defaults for a site with
    ~1M users; see docs/security.md for how they were chosen."""

    window_s: float = 6 * 3600.0
    young_s: float = 7 * 86400.0
    min_accounts: int = 10
    min_share: float = 0.5
    alpha: float = 1e-6


@dataclass(frozen=True)
class Campaign:
    """One detected burst on one movie: its window (seconds, the data's clock), the
    young accounts in it, the raters in all, and the test's numbers."""

    movie: str
    direction: str
    start_s: float
    end_s: float
    accounts: frozenset[int]
    raters: int
    expected: float
    p_value: float


@dataclass
class Detection:
    campaigns: list[Campaign] = field(default_factory=list)
    baseline_young_share: float = 0.0
    extreme_ratings: int = 0

    @property
    def accounts(self) -> frozenset[int]:
        return frozenset().union(*(c.accounts for c in self.campaigns))

    @property
    def targets(self) -> list[str]:
        return sorted({c.movie for c in self.campaigns})


def detect(users: np.ndarray, movies: np.ndarray, times_s: np.ndarray, ratings: np.ndarray,
           born_s: dict[int, float], *, scale_max: int, rule: BurstRule = BurstRule()
           ) -> Detection:
    """Campaigns among ratings given as parallel arrays (user ids, movie ids, times in
    seconds, stars from 1 to ``scale_max``). ``born_s`` maps a user to their birth
    (``births``); users missing from it are taken as old, born before the data."""
    users = np.asarray(users, dtype=np.int64)
    times_s = np.asarray(times_s, dtype=np.float64)
    ratings = np.asarray(ratings)
    movies = np.asarray(movies)
    if len(users) == 0:
        return Detection()
    born = _births(users, born_s)
    young = (times_s - born) <= rule.young_s
    out = Detection()
    extreme = (ratings >= scale_max) | (ratings <= 1)
    out.extreme_ratings = int(extreme.sum())
    if out.extreme_ratings == 0:
        return out
    young_extreme, n_extreme = int((young & extreme).sum()), out.extreme_ratings
    out.baseline_young_share = young_extreme / n_extreme
    per_movie = _counts(movies[extreme])
    young_per_movie = _counts(movies[young & extreme])
    for direction, mask in ((PUSH, ratings >= scale_max), (NUKE, ratings <= 1)):
        chosen = np.flatnonzero(mask)
        order = np.lexsort((times_s[chosen], movies[chosen]))
        rows = chosen[order]
        bounds = np.flatnonzero(movies[rows][1:] != movies[rows][:-1]) + 1
        for group in np.split(rows, bounds):
            if int(young[group].sum()) < rule.min_accounts:
                continue
            movie = movies[group[0]]
            rest = n_extreme - per_movie.get(movie, 0)
            g = (young_extreme - young_per_movie.get(movie, 0)) / rest if rest else 0.0
            out.campaigns += _bursts(group, users, times_s, young, g, direction, str(movie),
                                     rule)
    return out


def births(signups_s: dict[int, float], first_seen_s: dict[int, float], *,
           data_start_s: float, young_s: float = BurstRule.young_s) -> dict[int, float]:
    """Each user's birth for ``detect``: the sign-up time where the log has one, else the
    first event of any kind, but only when it comes more than ``young_s`` after the
    data's start (before that an old account's first appearance looks like a birth)."""
    out = {u: t for u, t in first_seen_s.items() if t - data_start_s > young_s}
    out.update(signups_s)
    return out


def _counts(values: np.ndarray) -> dict:
    keys, counts = np.unique(values, return_counts=True)
    return dict(zip(keys.tolist(), counts.tolist(), strict=True))


def _births(users: np.ndarray, born_s: dict[int, float]) -> np.ndarray:
    """Each row's user's birth time (-inf: old, born before the data)."""
    return np.array([born_s.get(u, -np.inf) for u in users.tolist()], dtype=np.float64)


def _bursts(group: np.ndarray, users: np.ndarray, times_s: np.ndarray, young: np.ndarray,
            g: float, direction: str, movie: str, rule: BurstRule) -> list[Campaign]:
    """The campaigns on one movie in one direction: windows starting at each young
    rating (rows of ``group`` sorted by time), merged when they overlap."""
    t = times_s[group]
    found: list[Campaign] = []
    for i in np.flatnonzero(young[group]):
        if found and t[i] <= found[-1].end_s:
            continue  # inside the campaign already found
        j = int(np.searchsorted(t, t[i] + rule.window_s, side="right"))
        window = group[i:j]
        raters = np.unique(users[window])
        accounts = np.unique(users[window][young[window]])
        k, n = len(accounts), len(raters)
        if k < rule.min_accounts or k / n < rule.min_share:
            continue
        p = float(binom.sf(k - 1, n, g)) if g < 1 else 1.0  # g = 0: any young rater is news
        if p < rule.alpha:
            found.append(Campaign(movie, direction, float(t[i]), float(t[j - 1]),
                                  frozenset(int(u) for u in accounts), n, n * g, p))
    return found
