"""The online feature store in Redis: merges a batch's FeatureDelta, answers reads.

One pipelined round trip a batch. Hash fields are merged by a Lua script (max, min, or
"latest rating by event time, then the higher score"), everything else with Redis's
own idempotent commands: ZADD GT/LT, SADD, PFADD. Day-bucketed keys expire after
``retention_days``. The key layout is stores.keys.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable

import redis

from stores.feature_delta import FeatureDelta
from stores.keys import Keys

log = logging.getLogger(__name__)

# One call merges a chunk of a batch. Keys are built from templates (ARGV[1..11] and
# [15..16], prefixes and suffixes taken from stores.keys so the layout has one
# home); the updates come as text blobs (ARGV[17..21], built by merge_records), one record
# a line, fields split by tabs (accepted lines hold neither tabs nor newlines).
#
# Why it is written this way (callgrind instruction counts on Redis 7.0 with the AOF on,
# docs/benchmarks.md): the cost is the commands a record needs (a read ~3.5k, a write
# ~10k of which ~6k is its AOF propagation, ZADD ~15k) and the strings Lua makes while
# parsing (~4k a record). So: one record per (user, movie) carries both the progress
# minute and the recent-history time; the recent ZSET is trimmed only when ZADD added a
# member (with a fixed limit only then can it grow past it; after recent_history is
# lowered, a history shrinks at its next new movie, not at its next touch); first/last
# activity is one HSET; each day's active-movie set gets one SADD and one expiry per
# chunk, not one per movie-day. Numbers are compared as digit strings, longer first,
# then by bytes: they are non-negative without leading zeros (Python's str of an int, or
# what this script wrote), and tonumber (strtod) costs ~1.7k instructions; equal-length
# digit strings order the same under any collation Lua's comparison may use. Expiry is
# PEXPIREAT of the script's TIME plus the retention: what EXPIRE computes and what it is
# propagated to the AOF as, without the rewrite (~2k instructions less). Chunks keep
# each call to a few ms: Redis serves reads too. "The same state" is the same members
# and values: one SADD of many members may size (and so DUMP) a set differently from
# adding them one by one, with the same contents.
_MERGE = r"""
local T, call, gmatch = ARGV, redis.call, string.gmatch
local now = call('TIME')
local expire_at = string.format('%.0f', now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(T[14]) * 1000)
local trim = T[13]
local function sadd(k, members)  -- unpack takes fewer than 8000 values
  for i = 1, #members, 1000 do call('SADD', k, unpack(members, i, math.min(i + 999, #members))) end
end
for u, m, v, ms in gmatch(T[17], "(%d+)\t([^\t\n]+)\t(%d*)\t(%d*)\n") do
  if v ~= '' then
    local k = T[1] .. u .. T[2]
    local cur = call('HGET', k, m)
    if not cur or #v > #cur or (#v == #cur and v > cur) then call('HSET', k, m, v) end
  end
  if ms ~= '' then
    local k = T[5] .. u .. T[6]
    if call('ZADD', k, 'GT', ms, m) > 0 then call('ZREMRANGEBYRANK', k, '0', trim) end
  end
end
for u, m, ms, s in gmatch(T[18], "(%d+)\t([^\t\n]+)\t(%d+)\t(%d+)\n") do
  local k = T[3] .. u .. T[4]
  local cur = call('HGET', k, m)
  local better = not cur
  if cur then
    local cm, cs = string.match(cur, '^(%d+):(%d+)$')
    better = tonumber(ms) > tonumber(cm) or (tonumber(ms) == tonumber(cm) and tonumber(s) > tonumber(cs))
  end
  if better then call('HSET', k, m, ms .. ':' .. s) end
end
for u, first, last in gmatch(T[19], "(%d+)\t(%d+)\t(%d+)\n") do
  local k = T[7] .. u .. T[8]
  local f, l = call('HGET', k, 'first'), call('HGET', k, 'last')
  local setf = not f or #first < #f or (#first == #f and first < f)
  local setl = not l or #last > #l or (#last == #l and last > l)
  if setf and setl then call('HSET', k, 'first', first, 'last', last)
  elseif setf then call('HSET', k, 'first', first)
  elseif setl then call('HSET', k, 'last', last) end
end
local day_movies, days = {}, {}
for m, d, users in gmatch(T[20], "([^\t\n]+)\t(%d+)\t([%d,]+)\n") do
  local k = T[9] .. m .. T[10] .. d .. T[11]
  if string.find(users, ',', 1, true) then
    local us = {}
    for u in gmatch(users, "%d+") do us[#us + 1] = u end
    sadd(k, us)
  else
    call('SADD', k, users)
  end
  call('PEXPIREAT', k, expire_at)
  local movies = day_movies[d]
  if not movies then movies = {}; day_movies[d] = movies; days[#days + 1] = d end
  movies[#movies + 1] = m
end
for _, d in ipairs(days) do
  local k = T[15] .. d .. T[16]
  sadd(k, day_movies[d])
  call('PEXPIREAT', k, expire_at)
end
for u, ms in gmatch(T[21], "(%d+)\t(%d+)\n") do
  call('ZADD', T[12], 'LT', ms, u)
end
return 1
"""
_PFADD_CHUNK = 2000
_CHUNK = 1000  # records of each kind per script call


def merge_records(delta: FeatureDelta) -> list[list[str]]:
    """The script's five blobs for a batch, one text line a record: (user, movie) pairs
    with progress minute and recent time, ratings, first/last activity, viewers by
    (movie, day), sign-ups. Pure; apply() joins and chunks them."""
    progress, recent = delta.progress, delta.recent
    if min(progress.values(), default=0) < 0 or min(recent.values(), default=0) < 0:
        # Times before 1970 (negative ms) are not merged: the script's (%d+) never took them.
        progress = {key: v for key, v in progress.items() if v >= 0}
        recent = {key: ms for key, ms in recent.items() if ms >= 0}
    # Either field of a pair may be empty. Progress order first, so a user's progress hash
    # gets its fields in delta order (the hash's listpack keeps insertion order).
    pairs = [f"{u}\t{m}\t{v}\t{recent.get((u, m), '')}\n" for (u, m), v in progress.items()]
    pairs += [f"{u}\t{m}\t\t{ms}\n" for (u, m), ms in recent.items() if (u, m) not in progress]
    first = delta.first_seen
    return [
        pairs,
        [f"{u}\t{m}\t{ms}\t{s}\n" for (u, m), (ms, s) in delta.ratings.items()],
        [f"{u}\t{first[u]}\t{ms}\n" for u, ms in delta.last_seen.items()],
        [f"{m}\t{d}\t{','.join(map(str, users))}\n" for (m, d), users in delta.viewers.items()],
        [f"{u}\t{ms}\n" for u, ms in delta.new_users.items()],
    ]


class FeatureStoreError(RuntimeError):
    """Redis did not take or give the features (down, slow, refused)."""


class RedisFeatureStore:
    def __init__(self, client: redis.Redis, keys: Keys, *, recent_history: int = 50,
                 retention_days: int = 30) -> None:
        self.client = client
        self.keys = keys
        self.recent_history = recent_history
        self.retention_s = retention_days * 86400
        self._merge = client.register_script(_MERGE)
        self._head = self._templates()  # constant: built once, not per batch

    @classmethod
    def connect(cls, url: str, keys: Keys, *, timeout_s: float = 2.0, **kwargs) -> RedisFeatureStore:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s, health_check_interval=30)
        return cls(client, keys, **kwargs)

    # -- writes ----------------------------------------------------------------------

    def _templates(self) -> list[str]:
        """ARGV[1..16]: key templates as (prefix, suffix[, suffix]) pieces, from Keys
        itself, the recent-history trim rank and the retention in seconds."""
        k, a, b = self.keys, "\x00", "\x01"
        pieces: list[str] = []
        for one in (k.user_progress, k.user_ratings, k.user_recent, k.user_activity):
            pieces += one(a).split(a)                       # 1-8
        pre, rest = k.movie_viewers(a, b).split(a)
        pieces += [pre, *rest.split(b)]                     # 9-11
        pieces += [k.new_users()]                           # 12
        pieces += [str(-self.recent_history - 1), str(self.retention_s)]  # 13, 14
        return pieces + k.active_movies(a).split(a)         # 15, 16

    def apply(self, delta: FeatureDelta, *, pending_users: Iterable[int] = (),
              pending_movies: Iterable[str] = ()) -> None:
        """Merge a batch; raises FeatureStoreError if Redis does not take it (retry it:
        every merge is idempotent)."""
        blobs = merge_records(delta)
        head = self._head
        pipe = self.client.pipeline(transaction=False)
        longest = max([len(b) for b in blobs] + [1])
        for i in range(0, longest, _CHUNK):
            self._merge(keys=[], args=head + ["".join(b[i:i + _CHUNK]) for b in blobs],
                        client=pipe)
        for (kind, day), lines in delta.identities.items():
            key = self.keys.events(kind, day)
            for i in range(0, len(lines), _PFADD_CHUNK):
                pipe.pfadd(key, *lines[i:i + _PFADD_CHUNK])
            pipe.expire(key, self.retention_s)
        users, movies = list(pending_users), list(pending_movies)
        if users:
            pipe.sadd(self.keys.pending_profiles(), *users)
        if movies:
            pipe.sadd(self.keys.pending_movies(), *movies)
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
