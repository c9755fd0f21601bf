"""Walks over the user ids, kept in Redis for every serving worker at once.

The state of ``recommender.serving.walks`` (its docstring has the rule and why): per
direction, the length of the run of consecutive ids that ends at a user, as a plain
string key that expires ``gap_s`` after the request that set it::

    {p}:walk:up:{u}   STRING  length of the upward run ending at u   (PX gap)
    {p}:walk:dn:{u}   STRING  length of the downward run ending at u (PX gap)
(built by ``stores.keys.Keys.walk``, the layout's one home)

One request is one EVALSHA of ``WALK_STEP`` (redis-py's ``Script`` sends the script
again on NOSCRIPT, after a Redis restart): MGET of four keys, at most two DELs and two
SETs, atomic, so two workers taking the neighbours of one walk at the same moment still
see each other. Redis's expiry stands for the ``gap_s`` test, on Redis's one clock. On the
service's request path the same step rides the user's feature read instead
(``RedisOnlineStore.read_user_if_changed`` with ``keys_of(user)``): one round trip for
both, which saved about 0.7 ms of a worker's CPU a request (docs/benchmarks.md).

Memory: at most two keys per request of the last ``gap_s``, about 120 bytes each with
their expiry; measured, 120,000 requests over a million ids (a minute at 2,000
requests/s) left 213,000 keys, 25 MB. Redis spends about 14 us of CPU on a call.

The store is connected like the request path's feature reads (share its client:
``RedisOnlineStore.client``, a small blocking pool, a 25 ms socket timeout, no retries),
and raises ``OnlineStoreError`` when Redis does not answer or refuses.
"""

from __future__ import annotations

from typing import cast

import redis

from stores.keys import Keys
from stores.online import OnlineStoreError

# The rule as a Lua function of the four keys (up:(u-1), up:u, dn:(u+1), dn:u) and the gap
# in ms; returns the longer run this request made. A value that is not a number (or a key
# of another type, which MGET reads as nil) counts as absent, so a stray key never fails
# the request path. ``WALK_STEP`` calls it alone; ``stores.redis_scripts.READ_USER_IF_CHANGED``
# calls it before a user's read, in the same round trip (the request path's one call).
WALK_FUNCTION = r"""
local function walk_step(k1, k2, k3, k4, gap)
  local k = {k1, k2, k3, k4}
  local v = redis.call('MGET', k1, k2, k3, k4)
  local longest = 0
  for i = 1, 3, 2 do
    local grown = 1
    local before = tonumber(v[i])
    if before then
      grown = before + 1
      redis.call('DEL', k[i])
    end
    local here = tonumber(v[i + 1])
    if not here or here <= grown then
      redis.call('SET', k[i + 1], grown, 'PX', gap)
    end
    if grown > longest then longest = grown end
  end
  return longest
end
"""
# KEYS: up:(u-1), up:u, dn:(u+1), dn:u. ARGV[1]: the gap in ms.
WALK_STEP = WALK_FUNCTION + "return walk_step(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])\n"

_REDIS_ERRORS = (redis.RedisError, OSError)


class RedisWalkStore:
    """``recommender.serving.walks.WalkState`` in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, gap_s: float) -> None:
        if not gap_s > 0:
            raise ValueError(f"gap_s must be > 0, got {gap_s}")
        self.client = client
        self.keys = keys
        self.gap_ms = str(max(1, round(gap_s * 1000)))
        self._script = client.register_script(WALK_STEP)

    def keys_of(self, user: int) -> list[str]:
        """The four keys a step for ``user`` reads and writes, in ``walk_step``'s order."""
        walk = self.keys.walk
        return [walk("up", user - 1), walk("up", user), walk("dn", user + 1), walk("dn", user)]

    def step(self, user: int) -> int:
        keys = self.keys_of(user)
        try:
            return int(cast(int, self._script(keys=keys, args=[self.gap_ms])))
        except _REDIS_ERRORS as exc:
            raise OnlineStoreError(f"redis walk step failed: {type(exc).__name__}: {exc}") from None

    def pattern(self) -> str:
        """A SCAN pattern for every key of this store (tests, resets)."""
        return self.keys.walk("*", "*")
