"""Organic history: days of simulated sessions as a time-ordered stream of log lines.

Used by ``movierec sim backfill`` to write history straight to Kafka with no service
in the loop. Sessions are simulated in blocks of simulated time (default 30 min):

1. how many sessions start in the block: Poisson(total activity x block x the hour's
   weight in a day), users drawn in proportion to their activity, start times uniform;
   users whose account does not exist yet are skipped;
2. accounts created in the block get a create_account line at their creation time;
3. each session picks a movie organically, watches minute by minute (one line a
   minute, 60 s apart), and maybe rates it shortly after;
4. events are merged with those left over from earlier blocks (sessions run for up
   to ~3.5 h), sorted by time, and everything before the block's end is emitted;
   the history's end cuts running sessions off, as a window of the real log would.

A user runs one session at a time (``busy_until``), as one person would.

So the output is in time order, as the real stream is, and memory stays bounded by
the few hours of sessions in flight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from movierec.wire import account_line, format_time, rate_line, watch_line
from simulator.behaviour import (
    BehaviourParams,
    OrganicSampler,
    WeightedSampler,
    organic_choice,
    ratings,
    watch_minutes,
)
from simulator.world import World

WATCH, RATE, ACCOUNT = 0, 1, 2

# Relative traffic by hour of day (local time): quiet nights, an evening peak.
_HOURLY = np.array([0.45, 0.3, 0.2, 0.15, 0.15, 0.2, 0.35, 0.55, 0.7, 0.8, 0.85, 0.9,
                    1.0, 1.0, 1.0, 1.05, 1.15, 1.3, 1.6, 1.9, 2.0, 1.8, 1.3, 0.8])
_HOURLY = _HOURLY / _HOURLY.mean()


@dataclass
class Events:
    """A batch of events as parallel arrays; ``t`` is seconds since the history start."""

    t: np.ndarray      # float64
    kind: np.ndarray   # int8: WATCH, RATE, ACCOUNT
    user: np.ndarray   # int32
    movie: np.ndarray  # int32 (-1 for accounts)
    value: np.ndarray  # int16: minute (watch) or stars (rate)

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        return Events(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("t", "kind", "user", "movie", "value")))

    def take(self, idx: np.ndarray) -> Events:
        return Events(self.t[idx], self.kind[idx], self.user[idx], self.movie[idx], self.value[idx])

    def __len__(self) -> int:
        return len(self.t)


def taste_drift(genre_pref: np.ndarray, rng: np.random.Generator) -> dict:
    """Half of the users warm to one genre and cool on another: ``genre_pref`` (users x
    genres) is edited in place. Returns what changed (ground truth, for measuring only)."""
    users = rng.random((genre_pref.shape[0],)) < 0.5
    warm, cool = rng.choice(genre_pref.shape[1], size=2, replace=False)
    genre_pref[users, warm] += 1.0
    genre_pref[users, cool] -= 1.0
    return {"users": int(users.sum()), "warm_genre": int(warm), "cool_genre": int(cool)}


class HistoryGenerator:
    """Simulated organic history for ``days`` days from ``start``."""

    def __init__(self, world: World, *, start: datetime, days: float, seed: int,
                 rating_scale: int = 5, params: BehaviourParams = BehaviourParams(),
                 block_s: int = 1800, shift_at_s: float | None = None,
                 drift_at_s: float | None = None) -> None:
        if drift_at_s is not None:  # the drift edits tastes: on a copy, not the caller's world
            population = dataclasses.replace(world.population,
                                              genre_pref=world.population.genre_pref.copy())
            world = World(world.spec, world.catalog, population)
        self.world = world
        self.start = start
        self.end_s = days * 86400.0
        self.rng = np.random.default_rng([seed, 6])
        self.rating_scale = rating_scale
        self.params = params
        self.block_s = block_s
        self.sampler = OrganicSampler(world)
        activity = world.population.activity.astype(np.float64)
        self.users = WeightedSampler(activity)
        self.sessions_per_s = activity.sum() / 86400.0
        self.joined_s = world.population.joined.astype(np.float64) * 86400.0
        fresh = np.flatnonzero((self.joined_s >= 0) & (self.joined_s < self.end_s))
        self.new_users = fresh[np.argsort(self.joined_s[fresh])]
        self.busy_until = np.full(len(activity), -np.inf)
        self.shift_at_s, self.drift_at_s = shift_at_s, drift_at_s
        self.changes: list[dict] = []  # ground truth of behaviour changes, in order
        self._stamp_cache: tuple[int, str] = (-1, "")

    # -- events --------------------------------------------------------------------

    def _change_world(self, b0: float) -> None:
        """Apply a scheduled popularity shift or taste drift once its time has come."""
        rng = np.random.default_rng([int(self.rng.integers(1 << 31)), 9])
        if self.shift_at_s is not None and b0 >= self.shift_at_s:
            # A sudden popularity shift: 30 long-tail films become hits (a viral trend).
            appeal = self.world.catalog.appeal.astype(np.float64).copy()
            tail = np.argsort(appeal)[: len(appeal) // 2]
            hits = rng.choice(tail, size=min(30, len(tail)), replace=False)
            appeal[hits] *= 200.0
            self.sampler = OrganicSampler(self.world, appeal)
            self.changes.append({"kind": "popularity_shift", "at_s": b0,
                                 "movies": [self.world.catalog.ids[i] for i in hits]})
            self.shift_at_s = None
        if self.drift_at_s is not None and b0 >= self.drift_at_s:
            self.changes.append({"kind": "taste_drift", "at_s": b0,
                                 **taste_drift(self.world.population.genre_pref, rng)})
            self.drift_at_s = None

    def _sessions(self, b0: float, b1: float) -> Events:
        self._change_world(b0)
        hour = int((self.start + timedelta(seconds=b0)).hour)
        n = self.rng.poisson(self.sessions_per_s * (b1 - b0) * _HOURLY[hour])
        users = self.users.sample(self.rng, n)
        starts = np.sort(b0 + self.rng.random(n) * (b1 - b0))
        # One session at a time per user: the first in the block, once the last is over,
        # and only once the account exists.
        first = np.zeros(n, bool)
        first[np.unique(users, return_index=True)[1]] = True
        keep = first & (self.busy_until[users] <= starts) & (self.joined_s[users] <= starts)
        users, starts = users[keep], starts[keep]
        movies = organic_choice(self.world, users, self.sampler, self.rng, self.params)
        u = self.world.utility(users, movies)
        minutes = watch_minutes(u, self.world.catalog.runtime[movies], self.rng, self.params)
        stars = ratings(u, self.rng, self.rating_scale, self.params)
        self.busy_until[users] = starts + minutes * 60.0 + 120.0  # rating lands within 2 min

        session = np.repeat(np.arange(len(users)), minutes)
        minute = np.arange(len(session)) - np.repeat(np.cumsum(minutes) - minutes, minutes)
        watch = Events(
            t=starts[session] + minute * 60.0 + self.rng.random(len(session)) * 2.0,
            kind=np.zeros(len(session), np.int8), user=users[session].astype(np.int32),
            movie=movies[session].astype(np.int32), value=minute.astype(np.int16),
        )
        rated = np.flatnonzero(stars > 0)
        rate = Events(
            t=starts[rated] + minutes[rated] * 60.0 + self.rng.uniform(5, 120, len(rated)),
            kind=np.full(len(rated), RATE, np.int8), user=users[rated].astype(np.int32),
            movie=movies[rated].astype(np.int32), value=stars[rated].astype(np.int16),
        )
        lo, hi = np.searchsorted(self.joined_s[self.new_users], [b0, b1])
        joined = self.new_users[lo:hi]
        account = Events(
            t=self.joined_s[joined], kind=np.full(len(joined), ACCOUNT, np.int8),
            user=joined.astype(np.int32), movie=np.full(len(joined), -1, np.int32),
            value=np.zeros(len(joined), np.int16),
        )
        return Events.concat([watch, rate, account])

    def events(self) -> Iterator[Events]:
        """Time-ordered batches of events, one per block, until the end of the history."""
        pending: Events | None = None
        b0 = 0.0
        while b0 < self.end_s:
            b1 = min(b0 + self.block_s, self.end_s)
            fresh = self._sessions(b0, b1)
            merged = fresh if pending is None else Events.concat([pending, fresh])
            merged = merged.take(np.argsort(merged.t, kind="stable"))
            # The end is a hard cut, like a window of the real log: sessions still
            # running then are cut off, so consecutive backfills never overlap.
            cut = int(np.searchsorted(merged.t, b1))
            yield merged.take(np.arange(cut))
            pending = merged.take(np.arange(cut, len(merged)))
            b0 = b1

    # -- lines ---------------------------------------------------------------------

    def timed(self, batch: Events) -> Iterator[tuple[float, bytes, bytes]]:
        """(seconds since start, line, key) for a batch."""
        for t, (line, key) in zip(batch.t.tolist(), self.format(batch), strict=True):
            yield t, line, key

    def format(self, batch: Events) -> Iterator[tuple[bytes, bytes]]:
        """(line, key) pairs for a batch; the key is the user id."""
        ids = self.world.catalog.ids
        start = self.start
        last_sec, stamp = self._stamp_cache
        for t, kind, user, movie, value in zip(batch.t.tolist(), batch.kind.tolist(),
                                               batch.user.tolist(), batch.movie.tolist(),
                                               batch.value.tolist(), strict=True):
            sec = int(t)
            if sec != last_sec:  # lines come in time order: one stamp serves many
                stamp = format_time(start + timedelta(seconds=sec))
                last_sec = sec
            if kind == WATCH:
                line = watch_line(stamp, user, ids[movie], value)
            elif kind == RATE:
                line = rate_line(stamp, user, ids[movie], value)
            else:
                line = account_line(stamp, user)
            yield line.encode(), str(user).encode()
        self._stamp_cache = (last_sec, stamp)

    def lines(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (line, key) pair of the history, in time order."""
        for batch in self.events():
            yield from self.format(batch)
