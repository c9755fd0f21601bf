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
  account's birth (its sign-up line, or its first event when the log has none);
- ``g``, the share of all extreme ratings (the scale's top, or its bottom) given by young
  accounts, is the baseline, measured on the same data;
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
    seconds, stars from 1 to ``scale_max``). ``born_s`` maps a user to their sign-up
    time; users missing from it are born at their first rating here."""
    users = np.asarray(users, dtype=np.int64)
    times_s = np.asarray(times_s, dtype=np.float64)
    ratings = np.asarray(ratings)
    movies = np.asarray(movies)
    if len(users) == 0:
        return Detection()
    born = _births(users, times_s, born_s)
    young = (times_s - born) <= rule.young_s
    out = Detection()
    extreme = (ratings >= scale_max) | (ratings <= 1)
    out.extreme_ratings = int(extreme.sum())
    if out.extreme_ratings == 0:
        return out
    g = float(young[extreme].mean())
    out.baseline_young_share = g
    for direction, mask in ((PUSH, ratings >= scale_max), (NUKE, ratings <= 1)):
        chosen = np.flatnonzero(mask)
        order = np.lexsort((times_s[chosen], movies[chosen]))
        rows = chosen[order]
        bounds = np.flatnonzero(movies[rows][1:] != movies[rows][:-1]) + 1
        for group in np.split(rows, bounds):
            if int(young[group].sum()) >= rule.min_accounts:
                out.campaigns += _bursts(group, users, times_s, young, g, direction,
                                         str(movies[group[0]]), rule)
    return out


def _births(users: np.ndarray, times_s: np.ndarray, born_s: dict[int, float]) -> np.ndarray:
    """Each row's user's birth time: their sign-up, or their first rating here."""
    first: dict[int, float] = {}
    for user, t in zip(users.tolist(), times_s.tolist(), strict=True):
        if t < first.get(user, np.inf):
            first[user] = t
    return np.array([born_s.get(u, first[u]) for u in users.tolist()], dtype=np.float64)


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
        p = float(binom.sf(k - 1, n, g)) if g < 1 else 1.0
        if p < rule.alpha:
            found.append(Campaign(movie, direction, float(t[i]), float(t[j - 1]),
                                  frozenset(int(u) for u in accounts), n, n * g, p))
    return found
