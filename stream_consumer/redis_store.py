"""The online feature store in Redis: merges a batch's FeatureDelta, answers reads.

One pipelined round trip a batch. Hash fields are merged by a Lua script (max, min, or
"latest rating by event time, then the higher score"), everything else with Redis's
own idempotent commands: ZADD GT/LT, SADD, PFADD. Day-bucketed keys expire after
``retention_days``. The key layout is stream_consumer.keys.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable

import redis

from stream_consumer.features import FeatureDelta
from stream_consumer.keys import Keys

log = logging.getLogger(__name__)

# KEYS: hashes. ARGV[1]: mode (max | min | pair); then per key: n, field, value, ... n times.
# "pair" values are "<ms>:<stars>": the later time wins, then the higher score.
_MERGE = """
local mode = ARGV[1]
local a = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    local f, v = ARGV[a], ARGV[a + 1]; a = a + 2
    local cur = redis.call('HGET', key, f)
    local better = not cur
    if cur then
      if mode == 'max' then better = tonumber(v) > tonumber(cur)
      elseif mode == 'min' then better = tonumber(v) < tonumber(cur)
      else
        local vm, vs = string.match(v, '^(%d+):(%d+)$')
        local cm, cs = string.match(cur, '^(%d+):(%d+)$')
        vm, vs, cm, cs = tonumber(vm), tonumber(vs), tonumber(cm), tonumber(cs)
        better = vm > cm or (vm == cm and vs > cs)
      end
    end
    if better then redis.call('HSET', key, f, v) end
  end
end
return 1
"""

_PFADD_CHUNK = 2000


class FeatureStoreError(RuntimeError):
    """Redis did not take or give the features (down, slow, refused)."""


def _grouped(pairs: Iterable[tuple[tuple[int, str], object]]) -> dict[int, list[tuple[str, object]]]:
    by_user: dict[int, list[tuple[str, object]]] = defaultdict(list)
    for (user, movie), value in pairs:
        by_user[user].append((movie, value))
    return by_user


class RedisFeatureStore:
    def __init__(self, client: redis.Redis, keys: Keys, *, recent_history: int = 50,
                 retention_days: int = 30) -> None:
        self.client = client
        self.keys = keys
        self.recent_history = recent_history
        self.retention_s = retention_days * 86400
        self._merge = client.register_script(_MERGE)

    @classmethod
    def connect(cls, url: str, keys: Keys, *, timeout_s: float = 2.0, **kwargs) -> RedisFeatureStore:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s, health_check_interval=30)
        return cls(client, keys, **kwargs)

    # -- writes ----------------------------------------------------------------------

    def _merge_call(self, pipe, mode: str, groups: dict[str, list[tuple[str, object]]]) -> None:
        if not groups:
            return
        args: list[object] = [mode]
        for fields in groups.values():
            args.append(len(fields))
            for f, v in fields:
                args += (f, v)
        self._merge(keys=list(groups), args=args, client=pipe)

    def apply(self, delta: FeatureDelta, *, pending_users: Iterable[int] = (),
              pending_movies: Iterable[str] = ()) -> None:
        """Merge a batch; raises FeatureStoreError if Redis does not take it (retry it:
        every merge is idempotent)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        self._merge_call(pipe, "max", {k.user_progress(u): fs for u, fs in _grouped(delta.progress.items()).items()})
        self._merge_call(pipe, "pair", {
            k.user_ratings(u): [(m, f"{ms}:{stars}") for m, (ms, stars) in fs]
            for u, fs in _grouped(delta.ratings.items()).items()})
        self._merge_call(pipe, "max", {k.user_activity(u): [("last", ms)] for u, ms in delta.last_seen.items()})
        self._merge_call(pipe, "min", {k.user_activity(u): [("first", ms)] for u, ms in delta.first_seen.items()})
        for user, movies in _grouped(delta.recent.items()).items():
            key = k.user_recent(user)
            pipe.zadd(key, dict(movies), gt=True)
            pipe.zremrangebyrank(key, 0, -self.recent_history - 1)
        days: set[str] = set()
        for (movie, day), users in delta.viewers.items():
            key = k.movie_viewers(movie, day)
            pipe.sadd(key, *users)
            pipe.expire(key, self.retention_s)
            pipe.sadd(k.active_movies(day), movie)
            days.add(day)
        for day in days:
            pipe.expire(k.active_movies(day), self.retention_s)
        if delta.new_users:
            pipe.zadd(k.new_users(), delta.new_users, lt=True)
        for (kind, day), lines in delta.identities.items():
            key = k.events(kind, day)
            for i in range(0, len(lines), _PFADD_CHUNK):
                pipe.pfadd(key, *lines[i:i + _PFADD_CHUNK])
            pipe.expire(key, self.retention_s)
        users, movies = list(pending_users), list(pending_movies)
        if users:
            pipe.sadd(k.pending_profiles(), *users)
        if movies:
            pipe.sadd(k.pending_movies(), *movies)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise FeatureStoreError(f"redis write failed: {type(exc).__name__}: {exc}") from exc

    # -- popularity ------------------------------------------------------------------

    def refresh_popularity(self, days: list[str], *, half_life_days: float = 1.0,
                           window_days: int = 7) -> int:
        """Rebuild ``pop:decayed`` (viewers per day, halving every ``half_life_days``) and
        ``pop:window`` (viewers over the last ``window_days``) from the day sets.

        ``days``: YYYYMMDD, newest first, ending at the stream's current day. Returns the
        number of movies scored. Both ZSETs are replaced atomically (RENAME).
        """
        k = self.keys
        decayed: dict[str, float] = defaultdict(float)
        window: dict[str, float] = defaultdict(float)
        try:
            for age, day in enumerate(days):
                movies = sorted(m.decode() for m in self.client.smembers(k.active_movies(day)))
                pipe = self.client.pipeline(transaction=False)
                for movie in movies:
                    pipe.scard(k.movie_viewers(movie, day))
                weight = math.pow(0.5, age / half_life_days)
                for movie, count in zip(movies, pipe.execute()):
                    decayed[movie] += weight * count
                    if age < window_days:
                        window[movie] += count
            for name, scores in (("decayed", decayed), ("window", window)):
                if scores:
                    tmp = k.popularity(name) + ":tmp"
                    pipe = self.client.pipeline(transaction=True)
                    pipe.delete(tmp)
                    pipe.zadd(tmp, scores)
                    pipe.rename(tmp, k.popularity(name))
                    pipe.execute()
        except redis.RedisError as exc:
            raise FeatureStoreError(f"popularity refresh failed: {exc}") from exc
        return len(decayed)

    # -- reads -----------------------------------------------------------------------

    def user_state(self, user: int) -> dict:
        """Everything the store holds on a user, decoded (for tests, tools and serving)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(k.user_progress(user))
        pipe.hgetall(k.user_ratings(user))
        pipe.zrange(k.user_recent(user), 0, -1, withscores=True)
        pipe.hgetall(k.user_activity(user))
        pipe.hgetall(k.user_profile(user))
        try:
            progress, ratings, recent, activity, profile = pipe.execute()
        except redis.RedisError as exc:
            raise FeatureStoreError(f"redis read failed: {exc}") from exc
        return {
            "progress": {m.decode(): int(v) for m, v in progress.items()},
            "ratings": {m.decode(): tuple(int(x) for x in v.split(b":")) for m, v in ratings.items()},
            "recent": {m.decode(): int(s) for m, s in recent},
            "activity": {f.decode(): int(v) for f, v in activity.items()},
            "profile": {f.decode(): v.decode() for f, v in profile.items()},
        }
