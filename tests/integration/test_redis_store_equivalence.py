"""The feature store's merge leaves the state the previous merge left.

The previous implementation (one Lua call a chunk that issued a command per record:
HGET/HSET, ZADD then ZREMRANGEBYRANK for every touched history, SADD and EXPIRE of the
day's active set for every movie-day) is frozen below as the reference. Both merge the
same FeatureDeltas under two prefixes of one real Redis, for clean, messy (duplicated,
reordered), redelivered and retried streams, and every key must match: type, contents
(what a reader gets back) and TTL within seconds. Not DUMP bytes: those matched on most
streams, but a set filled by one SADD of many members can be sized, hence serialized,
differently from one filled member by member (a CI run caught it on a day set).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
import redis

from movierec.wire import Account, Rate, Recommendation, Watch
from stores import redis_online
from stores.feature_delta import FeatureDelta
from stores.keys import Keys
from stores.redis_online import RedisOnlineStore
from tests.integration.conftest import LocalStack

# The merge as it was before the rewrite, verbatim.
_LEGACY_MERGE = r"""
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


class LegacyStore:
    """The previous store's apply (before the merge rewrite), with the chunk size as a parameter."""

    def __init__(self, client: redis.Redis, keys: Keys, *, recent_history: int, chunk: int,
                 retention_days: int = 30) -> None:
        self.client, self.keys, self.chunk = client, keys, chunk
        self.retention_s = retention_days * 86400
        self.merge = client.register_script(_LEGACY_MERGE)
        k, a, b = keys, "\x00", "\x01"
        pieces: list[str] = []
        for one in (k.user_progress, k.user_ratings, k.user_recent, k.user_activity):
            pieces += one(a).split(a)
        pre, rest = k.movie_viewers(a, b).split(a)
        pieces += [pre, *rest.split(b), k.new_users(), str(recent_history), str(self.retention_s)]
        self.head, self.day_parts = pieces, k.active_movies(a).split(a)

    def apply(self, delta: FeatureDelta, *, pending_users=(), pending_movies=()) -> None:
        blobs = [
            [f"{u}\t{m}\t{v}\n" for (u, m), v in delta.progress.items()],
            [f"{u}\t{m}\t{ms}\t{s}\n" for (u, m), (ms, s) in delta.ratings.items()],
            [f"{u}\t{m}\t{ms}\n" for (u, m), ms in delta.recent.items()],
            [f"{u}\t{delta.first_seen[u]}\t{ms}\n" for u, ms in delta.last_seen.items()],
            [f"{m}\t{d}\t{','.join(map(str, users))}\n" for (m, d), users in delta.viewers.items()],
        ]
        new_users = [f"{u}\t{ms}\n" for u, ms in delta.new_users.items()]
        pipe = self.client.pipeline(transaction=False)
        longest = max([len(b) for b in blobs] + [len(new_users), 1])
        for i in range(0, longest, self.chunk):
            args = self.head + ["".join(b[i:i + self.chunk]) for b in blobs] + self.day_parts
            args.append("".join(new_users[i:i + self.chunk]))
            self.merge(keys=[], args=args, client=pipe)
        for (kind, day), lines in delta.identities.items():
            key = self.keys.events(kind, day)
            for i in range(0, len(lines), 2000):
                pipe.pfadd(key, *lines[i:i + 2000])
            pipe.expire(key, self.retention_s)
        if pending_users:
            pipe.sadd(self.keys.pending_profiles(), *pending_users)
        if pending_movies:
            pipe.sadd(self.keys.pending_movies(), *pending_movies)
        pipe.execute()


def random_events(seed: int, n: int = 3000) -> list[tuple[object, bytes]]:
    """Events with many collisions: few users and movies, whole-second times (equal
    timestamps, rating ties), sessions spread over three days, one movie-day with more
    than 512 viewers (a hashtable set rather than an intset), sign-ups,
    served lists and a few events before 1970 (negative ms)."""
    rnd = random.Random(seed)
    start = datetime(2025, 3, 1)
    movies = [f"movie+{i}+{1990 + i}" for i in range(25)]
    events: list[tuple[object, bytes]] = []
    for i in range(n):
        user = rnd.randrange(1, 80)
        when = start + timedelta(seconds=rnd.randrange(0, 3 * 86400, 7))
        if rnd.random() < 0.005:
            when = datetime(1969, 12, 31, 23, rnd.randrange(60))
        pick = rnd.random()
        if pick < 0.6:
            event = Watch(when, user, rnd.choice(movies), rnd.randrange(0, 150))
        elif pick < 0.85:
            event = Rate(when, user, rnd.choice(movies[:6]), rnd.randrange(1, 6))
        elif pick < 0.93:
            event = Account(when, user)
        else:
            event = Recommendation(when, user, "s", 200, (movies[0],), "", 12)
        events.append((event, f"{i},{event}".encode()))
    for user in range(1000, 1600):  # one popular movie-day: 600 viewers
        event = Watch(start + timedelta(hours=5, seconds=user), user, "hit+movie+2020", 3)
        events.insert(rnd.randrange(len(events)), (event, f"hit,{user}".encode()))
    return events


def deltas(events: list[tuple[object, bytes]], batch: int) -> list[FeatureDelta]:
    out = []
    for i in range(0, len(events), batch):
        delta = FeatureDelta()
        for event, raw in events[i:i + batch]:
            delta.add(event, raw)
        out.append(delta)
    return out


def messy(events: list, rnd: random.Random) -> list:
    stream = events + rnd.sample(events, len(events) // 10)  # 10% duplicated
    for i in range(0, len(stream) - 30, 5):  # locally reordered
        j = i + rnd.randrange(30)
        stream[i], stream[j] = stream[j], stream[i]
    return stream


def _content(client: redis.Redis, name: bytes, kind: bytes):
    """A key's value as plain data: what a reader sees, not how Redis lays it out (a set
    filled by one SADD of many members may be sized, hence DUMPed, differently from one
    filled member by member; its members are the same)."""
    if kind == b"hash":
        return client.hgetall(name)
    if kind == b"set":
        return client.smembers(name)
    if kind == b"zset":
        return client.zrange(name, 0, -1, withscores=True)
    if kind == b"string":  # HyperLogLogs: registers are order-free, so bytes compare
        return client.get(name)
    raise AssertionError(f"unexpected type {kind!r} of {name!r}")


def assert_same_state(client: redis.Redis, old: str, new: str) -> int:
    """Every key of prefix ``old`` matches its twin under ``new`` (type, contents, TTL);
    the number of keys."""
    old_keys = {k[len(old) + 1:] for k in client.scan_iter(f"{old}:*", count=1000)}
    new_keys = {k[len(new) + 1:] for k in client.scan_iter(f"{new}:*", count=1000)}
    assert old_keys == new_keys
    for key in sorted(old_keys):
        a, b = f"{old}:".encode() + key, f"{new}:".encode() + key
        kind_a, kind_b = client.type(a), client.type(b)
        assert kind_a == kind_b, key
        assert _content(client, a, kind_a) == _content(client, b, kind_b), key
        ttl_a, ttl_b = client.pttl(a), client.pttl(b)
        assert (ttl_a == -1) == (ttl_b == -1), key
        assert abs(ttl_a - ttl_b) < 5000, key
    return len(old_keys)


@pytest.mark.parametrize("recent_history", [3, 50])
def test_merge_matches_the_previous_merge_key_for_key(
        stack: LocalStack, redis_client: redis.Redis, unique: str, monkeypatch,
        recent_history: int) -> None:
    rnd = random.Random(recent_history)
    events = random_events(seed=recent_history)
    half = len(events) // 2
    runs = {  # name: (batches of deltas, chunk size of a script call)
        "clean": (deltas(events, 250), 1000),
        "messy": (deltas(messy(events, rnd), 97), 1000),
        "redelivered": (deltas(events[:half], 300) + deltas(events[half // 2:], 300), 1000),
        "small-chunks": (deltas(events, 400), 7),
    }
    # Retried merges: half a batch lands (a crash mid-batch), then the whole batch comes
    # again, twice (a retry after a lost reply).
    retried = []
    for i in range(0, len(events), 200):
        retried += deltas(events[i:i + 100], 100) + deltas(events[i:i + 200], 200) * 2
    runs["retried"] = (retried, 1000)

    checked = 0
    for name, (batches, chunk) in runs.items():
        old_keys, new_keys = Keys(f"{unique}-{name}-old"), Keys(f"{unique}-{name}-new")
        legacy = LegacyStore(redis_client, old_keys, recent_history=recent_history, chunk=chunk)
        store = RedisOnlineStore(redis_client, new_keys, recent_history=recent_history)
        monkeypatch.setattr(redis_online, "_CHUNK", chunk)
        for n, delta in enumerate(batches):
            pending = sorted(delta.users)[:3] if n % 3 == 0 else []
            legacy.apply(delta, pending_users=pending, pending_movies=sorted(delta.movies)[:2])
            store.write(delta, pending_users=pending, pending_movies=sorted(delta.movies)[:2])
        checked += assert_same_state(redis_client, old_keys.prefix, new_keys.prefix)
        for prefix in (old_keys.prefix, new_keys.prefix):
            redis_client.delete(*redis_client.scan_iter(f"{prefix}:*", count=1000))
    assert checked > 5 * 300  # every kind of key, in every run


def test_the_comparison_sees_a_difference(stack: LocalStack, redis_client: redis.Redis,
                                          unique: str) -> None:
    """assert_same_state is not vacuous: one field written differently fails it."""
    events = random_events(seed=9, n=300)
    old_keys, new_keys = Keys(f"{unique}-old"), Keys(f"{unique}-new")
    LegacyStore(redis_client, old_keys, recent_history=5, chunk=1000).apply(deltas(events, 300)[0])
    RedisOnlineStore(redis_client, new_keys, recent_history=5).write(deltas(events, 300)[0])
    assert_same_state(redis_client, old_keys.prefix, new_keys.prefix)
    user = next(e.user_id for e, _ in events if isinstance(e, Watch))
    redis_client.hset(new_keys.user_activity(user), "last", "1")
    with pytest.raises(AssertionError):
        assert_same_state(redis_client, old_keys.prefix, new_keys.prefix)
    for prefix in (old_keys.prefix, new_keys.prefix):
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)
