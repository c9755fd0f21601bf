"""The online store in Redis: the one adapter that writes and reads it (``stores.online``).

Writes are idempotent merges (the ``MERGE`` script, ZADD GT/LT, SADD, PFADD, SET PX), so a
redelivered batch converges to the same state; day-bucketed keys expire after
``retention_days``. The request-path read is one EVALSHA (``READ_USER``); bulk reads are
pipelined in chunks. Key layout: ``stores.keys``; scripts: ``stores.redis_scripts``;
encoding and decoding: ``stores.redis_codec``.

Every method raises ``OnlineStoreError`` when Redis does not answer or refuses (a timeout,
a refused connection, an error reply); nothing else escapes for those causes.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stores.feature_delta import FeatureDelta
from stores.keys import Keys
from stores.online import Kind, OnlineStoreError, ServedLine, UserRead, UserState
from stores.redis_codec import decode_state, merge_records, served_lines, text
from stores.redis_scripts import (
    MERGE,
    PROVENANCE_CHUNK,
    READ_USER,
    READ_USER_IF_CHANGED,
    WRITE_SERVED,
)

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

T = TypeVar("T")

_PFADD_CHUNK = 2000
_CHUNK = 1000  # records of each kind per MERGE call
BULK_CHUNK = 2000
"""Keys per pipelined round trip of a bulk read: big enough to amortise the trip, small
enough that one reply stays well under a megabyte."""
PROVENANCE_PER_USER = 200
"""Newest served records kept per user in the by-user index."""
_REDIS_ERRORS = (redis.RedisError, OSError)
# The clients here return bytes (no decode_responses); redis-py's types allow str replies
# too, and awaitables, hence the casts to what a reply here is.


def _call(what: str, action: Callable[[], T]) -> T:
    try:
        return action()
    except _REDIS_ERRORS as exc:
        raise OnlineStoreError(f"redis {what} failed: {type(exc).__name__}: {exc}") from None


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class RedisOnlineStore:
    """``stores.online.OnlineStore`` on one Redis client (see the module docstring)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, recent_history: int = 50,
                 retention_days: int = 30, provenance_ttl_s: float = 7 * 86400.0) -> None:
        if not provenance_ttl_s > 0:
            raise ValueError(f"provenance_ttl_s must be > 0, got {provenance_ttl_s}")
        self.client = client
        self.keys = keys
        self.recent_history = recent_history
        self.retention_s = retention_days * 86400
        self.provenance_ttl_ms = max(1, round(provenance_ttl_s * 1000))
        # EVALSHA; after a Redis restart (script cache empty) each script loads once again.
        self._merge = client.register_script(MERGE)
        self._read = client.register_script(READ_USER)
        self._read_if_changed = client.register_script(READ_USER_IF_CHANGED)
        self._served = client.register_script(WRITE_SERVED)
        self._merge_head = self._merge_templates()  # constant: built once, not per batch
        mark = "\x00"  # key templates from Keys itself, so the layout keeps one home
        self._served_head = [*keys.served(mark).split(mark), *keys.served_by_user(mark).split(mark),
                             str(self.provenance_ttl_ms), str(PROVENANCE_PER_USER)]

    @classmethod
    def connect(cls, url: str, keys: Keys, *, timeout_s: float = 2.0, pool_size: int | None = None,
                **kwargs: Any) -> RedisOnlineStore:
        """A store on a new client with socket and connect timeouts of ``timeout_s``.

        ``pool_size=None``: a client for background work (the consumer, training, tools),
        with redis-py's default retries and a health check every 30 s. ``pool_size=N``: a
        client for the request path, a blocking pool of N connections (a thread waits at
        most ``timeout_s`` for one) and no retries (a retry doubles the worst case, and
        the caller has a fallback). Either connects lazily, and re-opens its connections
        in a forked child (redis-py checks the pid)."""
        if pool_size is None:
            client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                          socket_connect_timeout=timeout_s, health_check_interval=30)
        else:
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=pool_size, timeout=timeout_s, socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
            client = redis.Redis(connection_pool=pool)
        return cls(client, keys, **kwargs)

    # -- written by the consumer -----------------------------------------------------------

    def _merge_templates(self) -> list[str]:
        """ARGV[1..16] of ``MERGE``: key templates as (prefix, suffix[, suffix]) pieces, from
        Keys itself, the recent-history trim rank and the retention in seconds."""
        k, a, b = self.keys, "\x00", "\x01"
        pieces: list[str] = []
        for one in (k.user_progress, k.user_ratings, k.user_recent, k.user_activity):
            pieces += one(a).split(a)                       # 1-8
        pre, rest = k.movie_viewers(a, b).split(a)
        pieces += [pre, *rest.split(b)]                     # 9-11
        pieces += [k.new_users()]                           # 12
        pieces += [str(-self.recent_history - 1), str(self.retention_s)]  # 13, 14
        return pieces + k.active_movies(a).split(a)         # 15, 16

    def write(self, delta: FeatureDelta, *, pending_users: Iterable[int] = (),
              pending_movies: Iterable[str] = ()) -> None:
        """Merge a batch in one pipelined round trip; raises ``OnlineStoreError`` if Redis
        does not take it (retry it: every merge is idempotent)."""
        blobs = merge_records(delta)
        head = self._merge_head
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
        _call("write", pipe.execute)

    def refresh_popularity(self, days: list[str], *, half_life_days: float = 1.0,
                           window_days: int = 7) -> int:
        """Rebuild ``pop:decayed`` (viewers per day, halving every ``half_life_days``) and
        ``pop:window`` (viewers over the last ``window_days``) from the day sets.

        ``days``: YYYYMMDD, newest first, ending at the stream's current day. Returns the
        number of movies scored. Both ZSETs are replaced atomically (RENAME).
        """
        return _call("popularity refresh", lambda: self._refresh(days, half_life_days, window_days))

    def _refresh(self, days: list[str], half_life_days: float, window_days: int) -> int:
        k = self.keys
        decayed: dict[str, float] = defaultdict(float)
        window: dict[str, float] = defaultdict(float)
        for age, day in enumerate(days):
            members = cast("set[bytes]", self.client.smembers(k.active_movies(day)))
            movies = sorted(m.decode() for m in members)
            pipe = self.client.pipeline(transaction=False)
            for movie in movies:
                pipe.scard(k.movie_viewers(movie, day))
            weight = math.pow(0.5, age / half_life_days)
            for movie, count in zip(movies, pipe.execute(), strict=True):
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
        return len(decayed)

    # -- written by the enrichment worker --------------------------------------------------

    def _pending(self, kind: Kind) -> str:
        return self.keys.pending_profiles() if kind == "user" else self.keys.pending_movies()

    def _record_key(self, kind: Kind, item: str) -> str:
        return self.keys.user_profile(int(item)) if kind == "user" else self.keys.movie_meta(item)

    def take_pending(self, kind: Kind, n: int) -> list[str]:
        popped = _call("take pending",
                       lambda: cast("list[bytes] | None", self.client.spop(self._pending(kind), n)))
        return [x.decode() for x in popped or []]

    def requeue(self, kind: Kind, ids: Sequence[str]) -> None:
        if ids:
            _call("requeue", lambda: self.client.sadd(self._pending(kind), *ids))

    def stored_marks(self, kind: Kind, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for item in ids:
            pipe.hmget(self._record_key(kind, item), ["fetched_at", "runtime"])
        out = {}
        for item, (fetched, runtime) in zip(ids, _call("read marks", pipe.execute), strict=True):
            if fetched is not None:
                out[item] = {"fetched_at": fetched.decode()}
                if runtime is not None:
                    out[item]["runtime"] = runtime.decode("utf-8", "replace")
        return out

    def write_records(self, kind: Kind, records: Mapping[str, Mapping[str, str]]) -> None:
        """Each record gets ``fetched_at`` (epoch seconds now), the mark that it is stored."""
        stamp = str(int(time.time()))
        pipe = self.client.pipeline(transaction=False)
        for item, fields in records.items():
            # item by item: redis-py's field type is a union a Mapping[str, str] cannot unpack into
            record: dict[FieldT, EncodableT] = {name: value for name, value in fields.items()}
            record["fetched_at"] = stamp
            pipe.hset(self._record_key(kind, item), mapping=record)
        _call("write records", pipe.execute)

    # -- written by serving's telemetry ----------------------------------------------------

    def write_served(self, lines: Sequence[ServedLine]) -> None:
        """Per record ``SET served(rid) <json> PX ttl`` and ``ZADD served_by_user(user)
        time_ms rid``; each touched index is trimmed to the newest ``PROVENANCE_PER_USER``
        and expires after the TTL too (refreshed by every new record). One pipeline of one
        script call per ``PROVENANCE_CHUNK`` records."""
        pipe = self.client.pipeline(transaction=False)
        for i in range(0, len(lines), PROVENANCE_CHUNK):
            self._served(keys=[], args=[*self._served_head,
                                        served_lines(lines[i:i + PROVENANCE_CHUNK])], client=pipe)
        _call("provenance write", pipe.execute)

    # -- read on the request path ----------------------------------------------------------

    def read_user(self, user: int) -> UserState:
        k = self.keys
        try:
            reply = self._read(keys=[k.user_progress(user), k.user_ratings(user),
                                     k.user_recent(user), k.user_profile(user)])
        except _REDIS_ERRORS as exc:
            raise OnlineStoreError(f"redis read failed: {type(exc).__name__}: {exc}") from None
        return decode_state(reply)

    def read_user_if_changed(self, user: int, digest: str | None, *,
                             walk_keys: Sequence[str] = (), walk_gap_ms: int = 0) -> UserRead:
        k = self.keys
        keys = [k.user_progress(user), k.user_ratings(user), k.user_recent(user), k.user_profile(user)]
        if walk_keys:
            if len(walk_keys) != 4 or walk_gap_ms < 1:
                raise ValueError(f"a walk step needs 4 keys and a gap >= 1 ms, got "
                                 f"{len(walk_keys)} and {walk_gap_ms}")
            keys.extend(walk_keys)
        try:
            reply = self._read_if_changed(keys=keys, args=[digest or "", walk_gap_ms])
        except _REDIS_ERRORS as exc:
            raise OnlineStoreError(f"redis read failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(reply, list) or len(reply) < 2 or not isinstance(reply[0], bytes):
            raise OnlineStoreError(f"redis read returned {type(reply).__name__}, not a digest")
        walk, run, error = reply[1], None, None
        if isinstance(walk, int):
            run = walk or None
        else:
            error = bytes(walk).decode("utf-8", "replace") if walk else "no answer"
        state = decode_state(reply[2:]) if len(reply) > 2 else None
        return UserRead(reply[0].decode("ascii", "replace"), state, run, error)

    def popular(self, n: int) -> list[str]:
        if n <= 0:
            return []
        raw = _call("popular", lambda: self.client.zrevrange(self.keys.popularity("decayed"), 0, n - 1))
        return [m for m in map(text, raw) if m]

    def served(self, request_id: str) -> bytes | None:
        return _call("provenance read",
                     lambda: cast("bytes | None", self.client.get(self.keys.served(request_id))))

    def served_before(self, user: int, at_ms: int) -> tuple[str, bytes] | None:
        """Two round trips: the user's index, then the record."""
        found = _call("provenance read", lambda: cast("list[bytes]", self.client.zrevrangebyscore(
            self.keys.served_by_user(user), at_ms, "-inf", start=0, num=1)))
        if not found:
            return None
        request_id = found[0].decode("ascii", "replace")
        raw = self.served(request_id)
        return None if raw is None else (request_id, raw)

    # -- read in bulk ----------------------------------------------------------------------

    def _hashes(self, keys: list[str]) -> Iterator[dict[bytes, bytes]]:
        for part in _chunks(keys, BULK_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for key in part:
                pipe.hgetall(key)
            yield from _call("bulk read", pipe.execute)

    def _text_hashes(self, ids: Sequence[T], keys: list[str]) -> dict[T, dict[str, str]]:
        out = {}
        for item, raw in zip(ids, self._hashes(keys), strict=True):
            if raw:
                out[item] = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                             for k, v in raw.items()}
        return out

    def profiles(self, users: Sequence[int]) -> dict[int, dict[str, str]]:
        return self._text_hashes([int(u) for u in users], [self.keys.user_profile(int(u)) for u in users])

    def movies(self, movies: Sequence[str]) -> dict[str, dict[str, str]]:
        return self._text_hashes(list(movies), [self.keys.movie_meta(m) for m in movies])

    def user_state(self, user: int) -> dict:
        """Everything the store holds on a user, decoded, first/last activity included (for
        tests and tools; serving reads ``read_user``)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(k.user_progress(user))
        pipe.hgetall(k.user_ratings(user))
        pipe.zrange(k.user_recent(user), 0, -1, withscores=True)
        pipe.hgetall(k.user_activity(user))
        pipe.hgetall(k.user_profile(user))
        progress, ratings, recent, activity, profile = _call("read", pipe.execute)
        return {
            "progress": {m.decode(): int(v) for m, v in progress.items()},
            "ratings": {m.decode(): tuple(int(x) for x in v.split(b":")) for m, v in ratings.items()},
            "recent": {m.decode(): int(s) for m, s in recent},
            "activity": {f.decode(): int(v) for f, v in activity.items()},
            "profile": {f.decode(): v.decode() for f, v in profile.items()},
        }

    # -- housekeeping ----------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except _REDIS_ERRORS:
            return False

    def close(self) -> None:
        self.client.connection_pool.disconnect()
