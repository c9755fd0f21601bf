"""Bulk reads of the consumer's enriched profiles and movie metadata, for training.

Training needs demographics (segment popularity, cold start, evaluation slices) and
runtimes (the watched fraction of the confidence). The consumer keeps both in Redis, as
the API gave them after cleaning (``stream_consumer.enrich``); this adapter reads them in
pipelined chunks. The key layout comes from ``stores.keys.Keys``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import redis

from recommender.models.profiles import Profiles, profile_fields
from stores.keys import Keys

CHUNK = 2000
"""Keys per pipeline round trip: big enough to amortise the trip, small enough that one
reply stays well under a megabyte."""


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _hashes(client: redis.Redis, keys: Iterable[str]) -> Iterator[dict[str, str]]:
    keys = list(keys)
    for part in _chunks(keys, CHUNK):
        pipe = client.pipeline(transaction=False)
        for key in part:
            pipe.hgetall(key)
        yield from pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def read_profiles(client: redis.Redis, keys: Keys, user_ids: Sequence[int]) -> Profiles:
    """The stored profiles of ``user_ids`` (users without one are left out)."""
    records = []
    for user, raw in zip(user_ids, _hashes(client, (keys.user_profile(int(u)) for u in user_ids))):
        if not raw:
            continue
        fields = {_text(k): _text(v) for k, v in raw.items()}
        age, gender, occupation = profile_fields(fields)
        record: dict = {"user_id": int(user), "gender": gender, "occupation": occupation,
                        "age": age}
        for key in ("likes", "dislikes"):
            if fields.get(key):
                record[key] = fields[key]
        records.append(record)
    return Profiles.from_records(records)


def read_movies(client: redis.Redis, keys: Keys, movie_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Stored metadata of ``movie_ids`` as string fields (movies without any are left out)."""
    out = {}
    for movie, raw in zip(movie_ids, _hashes(client, (keys.movie_meta(m) for m in movie_ids))):
        if raw:
            out[movie] = {_text(k): _text(v) for k, v in raw.items()}
    return out


def runtimes(movies: dict[str, dict[str, str]]) -> dict[str, int]:
    """movie id -> runtime in minutes, for movies whose runtime is a positive integer."""
    out = {}
    for movie, fields in movies.items():
        value = fields.get("runtime", "")
        if value.isdigit() and int(value) > 0:
            out[movie] = int(value)
    return out
