"""``movierec sim live``: simulated users against a running recommendation service.

Sessions run on a compressed clock (``clock_ratio`` simulated seconds per real
second). Requests arrive as a Poisson process at ``rate_per_s``. For each arrival:

1. a new user first writes a create_account line;
2. the user calls ``GET /recommend/<uid>`` with the deadline (600 ms), and the
   simulator writes the recommendation line as the course's client does: status 200
   with the list, or a non-200 status (0 for transport failures) with an error text;
3. the user reacts (simulator.behaviour): takes a movie from the list or organically,
   watches it minute by minute (one line per simulated minute) and maybe rates it.

Watch and rate lines are scheduled on the simulated clock and released when due, so
the stream is in time order, as the real one is. A user is in one session at a time.

The failure texts are the ones the grader classifies: "malformed answer: ...",
"... timed out after N ms", "Connection refused: host:port".

An optional scraping client walks user ids in order at its own rate, as a crawler
would; its requests write no log lines (it is not the course's client) and its
activity goes to the ground-truth file.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO
from urllib.parse import urlsplit

import numpy as np

from movierec.wire import account_line, rate_line, recommendation_line, watch_line
from simulator import course_client
from simulator.behaviour import BehaviourParams, OrganicSampler, WeightedSampler, react
from simulator.live_http import ConnectionPool, HttpError, Pool
from simulator.producer import LineSink
from simulator.world import World


@dataclass(frozen=True)
class LiveConfig:
    service_url: str = "http://127.0.0.1:8082"
    rate_per_s: float = 50.0
    duration_s: float = 60.0
    clock_ratio: float = 60.0
    deadline_ms: int = 600
    new_user_share: float = 0.05
    start_day: float = 1.0  # the world's day at which the run starts (after a backfill)
    scraper_rate_per_s: float = 0.0
    seed: int = 0
    rating_scale: int = 5


@dataclass
class LiveStats:
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    sessions_from_list: int = 0
    watch_minutes: int = 0
    scraper_requests: int = 0
    latencies_ms: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        lat = sorted(self.latencies_ms)
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: None)
        return {"requests": self.requests, "outcomes": self.outcomes, "lines": self.lines,
                "sessions_from_list": self.sessions_from_list, "watch_minutes": self.watch_minutes,
                "scraper_requests": self.scraper_requests,
                "latency_ms": {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99)}}


class LiveRun:
    """One live run: arrivals, requests, reactions and the lines they write."""

    def __init__(self, world: World, config: LiveConfig, sink: LineSink, *, start: datetime,
                 truth: IO[str] | None = None, params: BehaviourParams = BehaviourParams(),
                 pool: Pool | None = None) -> None:
        """``pool``: the HTTP client (default: ``live_http.ConnectionPool`` to the
        service); benchmarks/sim_live.py passes a library's client to compare."""
        self.world, self.config, self.sink, self.start = world, config, sink, start
        self.truth, self.params = truth, params
        self.rng = np.random.default_rng([config.seed, 10])
        self.sampler = OrganicSampler(world)
        url = urlsplit(config.service_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.server = f"{self.host}:{self.port}"
        self.pool = pool if pool is not None else ConnectionPool(self.host, self.port)
        # Users who joined before ``start_day`` exist (a backfill of that many days
        # wrote their sign-ups); later joiners sign up during the run, earliest first.
        joined = world.population.joined
        self.activity = world.population.activity.astype(np.float64)
        self.exists = joined < config.start_day
        fresh = np.flatnonzero(~self.exists)
        self.new_users = list(fresh[np.argsort(joined[fresh])][::-1])  # pop() = earliest
        self._weights_changed = True
        self.users: WeightedSampler | None = None
        # A user is in one session at a time: busy until the real time of its last line.
        self.busy_until = np.full(world.n_users, -np.inf)
        self.pending: list[tuple[float, int, bytes, bytes]] = []  # (due, seq, line, key)
        self.seq = 0
        self.stats = LiveStats()
        self._t0 = 0.0

    # -- clocks --------------------------------------------------------------------

    def sim_time(self, real: float | None = None) -> datetime:
        elapsed = (time.monotonic() if real is None else real) - self._t0
        return self.start + timedelta(seconds=elapsed * self.config.clock_ratio)

    def _stamp(self, real: float | None = None) -> str:
        return self.sim_time(real).isoformat(timespec="milliseconds")

    def _emit(self, build: Callable[[str], str], user: int, due: float | None = None) -> None:
        """Schedule ``build(stamp)`` for release at ``due`` (real time, default now); the
        stamp is the simulated time of that same instant, so release order is time order."""
        due = time.monotonic() if due is None else due
        self.seq += 1
        heapq.heappush(self.pending, (due, self.seq, build(self._stamp(due)).encode(),
                                      str(user).encode()))

    # -- one session ---------------------------------------------------------------

    def _pick_user(self, now: float) -> tuple[int, bool]:
        if self.new_users and self.rng.random() < self.config.new_user_share:
            user = int(self.new_users.pop())
            self.exists[user] = True  # from now on a regular user, weighted by activity
            self._weights_changed = True
            return user, True
        if self._weights_changed or self.users is None:
            self.users = WeightedSampler(np.where(self.exists, self.activity, 0.0))
            self._weights_changed = False
        for user in self.users.sample(self.rng, 20).tolist():
            if self.busy_until[user] <= now:
                return user, False
        return -1, False

    async def _session(self, user: int, new: bool) -> None:
        self.busy_until[user] = np.inf  # until the reaction says when the session ends
        try:
            if new:
                self._emit(lambda stamp: account_line(stamp, user), user)
            sent = time.monotonic()
            status, result, items = await self._request(user)
            elapsed_ms = int((time.monotonic() - sent) * 1000)
            self.stats.latencies_ms.append(elapsed_ms)
            self._emit(lambda stamp: recommendation_line(stamp, user, self.server, status,
                                                         result, elapsed_ms), user)
            self.busy_until[user] = self._react(user, items, time.monotonic())
        finally:
            if self.busy_until[user] == np.inf:  # cancelled mid-request: free the user
                self.busy_until[user] = time.monotonic()

    async def _request(self, user: int) -> tuple[int, str, tuple[str, ...]]:
        """(status, result text, items) as the course client would log them."""
        deadline = self.config.deadline_ms
        try:
            answer = await self.pool.get(f"/recommend/{user}", deadline / 1000)
        except (OSError, HttpError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome = course_client.failed(exc, deadline_ms=deadline, server=self.server)
        else:
            outcome = course_client.answered(answer.status, answer.body)
        self.stats.outcomes[outcome.kind] = self.stats.outcomes.get(outcome.kind, 0) + 1
        self.stats.requests += 1
        return outcome.status, outcome.text, outcome.items

    def _react(self, user: int, items: tuple[str, ...], now: float) -> float:
        """Schedule the session's watch (and rate) lines; returns when its last line is due."""
        index = self.world.movie_index
        row = np.full((1, max(1, len(items))), -1)
        for i, movie_id in enumerate(items):
            row[0, i] = index.get(movie_id, -1)
        out = react(self.world, np.array([user]), row, self.sampler, self.rng, self.params,
                    self.config.rating_scale)
        movie_id = self.world.catalog.ids[int(out.movie[0])]
        minutes, stars = int(out.minutes[0]), int(out.stars[0])
        self.stats.sessions_from_list += bool(out.from_list[0])
        self.stats.watch_minutes += minutes
        step = 60.0 / self.config.clock_ratio  # one simulated minute, in real seconds
        for minute in range(minutes):
            due = now + (minute + 0.5) * step

            def line(stamp: str, m: int = minute) -> str:
                return watch_line(stamp, user, movie_id, m)

            self._emit(line, user, due)
        due = now + (minutes + 1) * step
        if stars:
            self._emit(lambda stamp: rate_line(stamp, user, movie_id, stars), user, due)
        return due

    # -- loops ---------------------------------------------------------------------

    def _release(self, until: float) -> None:
        while self.pending and self.pending[0][0] <= until:
            _, _, line, key = heapq.heappop(self.pending)
            self.sink.send(line, key)
            self.stats.lines += 1

    async def _scraper(self, stop: float) -> None:
        rate = self.config.scraper_rate_per_s
        user = 0
        while time.monotonic() < stop:
            with contextlib.suppress(TimeoutError, OSError, HttpError, asyncio.IncompleteReadError):
                await self.pool.get(f"/recommend/{user}", self.config.deadline_ms / 1000)
            self.stats.scraper_requests += 1
            user += 1
            await asyncio.sleep(1.0 / rate)
        if self.truth is not None:
            self.truth.write(json.dumps({"kind": "scraper", "rate_per_s": rate, "first_user": 0,
                                         "last_user": user - 1,
                                         "requests": self.stats.scraper_requests}) + "\n")

    async def run(self) -> LiveStats:
        """Run for ``duration_s`` real seconds, then let the sessions in flight finish
        their requests (watch lines still pending are cut off, as a log window is)."""
        self._t0 = time.monotonic()
        stop = self._t0 + self.config.duration_s
        tasks: set[asyncio.Task] = set()
        scraper = (asyncio.create_task(self._scraper(stop))
                   if self.config.scraper_rate_per_s > 0 else None)
        tick = 0.005  # arrivals are drawn and due lines released every 5 ms
        last = self._t0
        try:
            while (now := time.monotonic()) < stop:
                for _ in range(int(self.rng.poisson(self.config.rate_per_s * (now - last)))):
                    user, new = self._pick_user(now)
                    if user >= 0:  # -1: every candidate was busy in a session
                        # busy from now, not from when the task first runs: another arrival
                        # in this tick must not pick the same user (two sessions at once)
                        self.busy_until[user] = np.inf
                        task = asyncio.create_task(self._session(user, new))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                last = now
                self._release(now)
                await asyncio.sleep(tick)
            if tasks:
                await asyncio.wait(tasks, timeout=self.config.deadline_ms / 1000 + 1)
            if scraper is not None:
                await scraper
            self._release(time.monotonic())
            self.sink.flush()
        finally:
            for task in tasks:
                task.cancel()
            self.pool.close()
        return self.stats
