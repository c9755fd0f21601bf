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

# One call merges a chunk of a batch. Keys are built from templates (ARGV[1..12], each a
# prefix and a suffix, taken from stream_consumer.keys so the layout has one home); the
# updates come as text blobs, one record a line, fields split by tabs (accepted lines hold
# neither tabs nor newlines). Chunks keep each call to a few ms: Redis serves reads too.
_MERGE = r"""
local T = ARGV
local limit, ttl = tonumber(ARGV[13]), tonumber(ARGV[14])
local function key(i, a, b)
  if b then return T[i] .. a .. T[i + 1] .. b .. T[i + 2] end
  return T[i] .. a .. T[i + 1]
end
for u, m, v in string.gmatch(ARGV[15], "(%d+)\t([^\t\n]+)\t(%d+)\n") do
  local k = key(1, u)
  local cur = redis.call('HGET', k, m)
  if not cur or tonumber(v) > tonumber(cur) then redis.call('HSET', k, m, v) end
end
for u, m, ms, s in string.gmatch(ARGV[16], "(%d+)\t([^\t\n]+)\t(%d+)\t(%d+)\n") do
  local k = key(3, u)
  local cur = redis.call('HGET', k, m)
  local better = not cur
  if cur then
    local cm, cs = string.match(cur, '^(%d+):(%d+)$')
    better = tonumber(ms) > tonumber(cm) or (tonumber(ms) == tonumber(cm) and tonumber(s) > tonumber(cs))
  end
  if better then redis.call('HSET', k, m, ms .. ':' .. s) end
end
local touched = {}
for u, m, ms in string.gmatch(ARGV[17], "(%d+)\t([^\t\n]+)\t(%d+)\n") do
  local k = key(5, u)
  redis.call('ZADD', k, 'GT', ms, m)
  touched[k] = true
end
for k in pairs(touched) do redis.call('ZREMRANGEBYRANK', k, 0, -limit - 1) end
for u, first, last in string.gmatch(ARGV[18], "(%d+)\t(%d+)\t(%d+)\n") do
  local k = key(7, u)
  local f, l = redis.call('HGET', k, 'first'), redis.call('HGET', k, 'last')
  if not f or tonumber(first) < tonumber(f) then redis.call('HSET', k, 'first', first) end
  if not l or tonumber(last) > tonumber(l) then redis.call('HSET', k, 'last', last) end
end
for m, d, users in string.gmatch(ARGV[19], "([^\t\n]+)\t(%d+)\t([%d,]+)\n") do
  local k = key(9, m, d)
  for u in string.gmatch(users, "%d+") do redis.call('SADD', k, u) end
  redis.call('EXPIRE', k, ttl)
  local a = T[20] .. d .. T[21]
  redis.call('SADD', a, m)
  redis.call('EXPIRE', a, ttl)
end
for u, ms in string.gmatch(ARGV[22], "(%d+)\t(%d+)\n") do
  redis.call('ZADD', T[12], 'LT', ms, u)
end
return 1
"""
_TEMPLATE_SLOTS = 14  # ARGV[1..14]: templates, recent limit, ttl
_PFADD_CHUNK = 2000
_CHUNK = 1000  # records of each kind per script call


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
        templates = self._templates()  # constant: built once, not per batch
        self._head, self._day_parts = templates[:_TEMPLATE_SLOTS], templates[_TEMPLATE_SLOTS:]

    @classmethod
    def connect(cls, url: str, keys: Keys, *, timeout_s: float = 2.0, **kwargs) -> RedisFeatureStore:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s, health_check_interval=30)
        return cls(client, keys, **kwargs)

    # -- writes ----------------------------------------------------------------------

    def _templates(self) -> list[str]:
        """Key templates as (prefix, suffix[, suffix]) pieces, from Keys itself."""
        k, a, b = self.keys, "\x00", "\x01"
        pieces: list[str] = []
        for one in (k.user_progress, k.user_ratings, k.user_recent, k.user_activity):
            pieces += one(a).split(a)                       # ARGV 1-8
        pre, rest = k.movie_viewers(a, b).split(a)
        pieces += [pre, *rest.split(b)]                     # ARGV 9-11
        pieces += [k.new_users()]                           # ARGV 12
        pieces += [str(self.recent_history), str(self.retention_s)]  # 13, 14
        day_pre, day_suf = k.active_movies(a).split(a)
        return pieces + [day_pre, day_suf]                  # 20, 21 after the blobs

    def apply(self, delta: FeatureDelta, *, pending_users: Iterable[int] = (),
              pending_movies: Iterable[str] = ()) -> None:
        """Merge a batch; raises FeatureStoreError if Redis does not take it (retry it:
        every merge is idempotent)."""
        blobs = [
            [f"{u}\t{m}\t{v}\n" for (u, m), v in delta.progress.items()],
            [f"{u}\t{m}\t{ms}\t{s}\n" for (u, m), (ms, s) in delta.ratings.items()],
            [f"{u}\t{m}\t{ms}\n" for (u, m), ms in delta.recent.items()],
            [f"{u}\t{delta.first_seen[u]}\t{ms}\n" for u, ms in delta.last_seen.items()],
            [f"{m}\t{d}\t{','.join(map(str, users))}\n" for (m, d), users in delta.viewers.items()],
        ]
        new_users = [f"{u}\t{ms}\n" for u, ms in delta.new_users.items()]
        head, day_parts = self._head, self._day_parts
        pipe = self.client.pipeline(transaction=False)
        longest = max([len(b) for b in blobs] + [len(new_users), 1])
        for i in range(0, longest, _CHUNK):
            args = head + ["".join(b[i:i + _CHUNK]) for b in blobs] + day_parts
            args.append("".join(new_users[i:i + _CHUNK]))
            self._merge(keys=[], args=args, client=pipe)
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
