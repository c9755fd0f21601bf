"""The whole Redis key layout of the online feature store, in one place.

Pure functions: building a key never touches Redis (tested without a server). Every
key starts with a prefix (``MOVIEREC_REDIS_PREFIX``), so tests and several deployments
can share one Redis. Movie ids may hold ``+ . - _``, which are safe in keys.

Per user ``u``:
    {p}:u:{u}:w     HASH  movie -> highest minute watched (progress; max-merged)
    {p}:u:{u}:r     HASH  movie -> "<epoch ms>:<stars>" (the latest rating by event time)
    {p}:u:{u}:h     ZSET  movie -> epoch ms of the last event (recent history, bounded)
    {p}:u:{u}:m     HASH  first/last -> epoch ms of the first/last activity
    {p}:u:{u}:p     HASH  the profile from the user API (age, gender, occupation, likes, ...)
Per movie ``m`` and event day ``d`` (YYYYMMDD):
    {p}:mv:{m}      HASH  metadata from the movie API (runtime, adult, content_rating, ...)
    {p}:mv:{m}:d:{d} SET  users who watched the movie that day (exact, order-free)
    {p}:pop:active:{d} SET  movies watched that day
    {p}:pop:{name}  ZSET  movie -> popularity score, refreshed from the day sets
Global:
    {p}:g:new       ZSET  user -> epoch ms of its create_account line (earliest)
    {p}:g:ev:{kind}:{d}  HLL  identities (the line's bytes) of the events of a kind that day
    {p}:q:profiles  SET   users whose profile is still to be fetched
    {p}:q:movies    SET   movies whose metadata is still to be fetched
Crawler walks over user ids (serving's walk guard, ``stores.redis_walks``):
    {p}:walk:up:{u}  STRING  length of the upward run of asked ids ending at u (expires)
    {p}:walk:dn:{u}  STRING  length of the downward run ending at u (expires)
Provenance of served lists (written by serving's telemetry, read by /provenance):
    {p}:prov:req:{rid}  STRING  the served record as JSON (expires after its TTL)
    {p}:prov:u:{u}      ZSET    request id -> epoch ms it was served (the newest 200)

Every write is idempotent and independent of order (maxima, latest-by-time, sets, HLLs),
so redelivered, duplicated or reordered lines converge to the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


def day_of(when: datetime) -> str:
    """The day component of day-bucketed keys: YYYYMMDD of the event time."""
    return f"{when.year:04d}{when.month:02d}{when.day:02d}"


User = int | str
"""A user id as keys take it: the int, or a placeholder string that makes a key template
(``redis_online`` builds the Lua scripts' templates from these very methods)."""


@dataclass(frozen=True)
class Keys:
    prefix: str = "mr"

    def user_progress(self, user: User) -> str:
        return f"{self.prefix}:u:{user}:w"

    def user_ratings(self, user: User) -> str:
        return f"{self.prefix}:u:{user}:r"

    def user_recent(self, user: User) -> str:
        return f"{self.prefix}:u:{user}:h"

    def user_activity(self, user: User) -> str:
        return f"{self.prefix}:u:{user}:m"

    def user_profile(self, user: User) -> str:
        return f"{self.prefix}:u:{user}:p"

    def movie_meta(self, movie: str) -> str:
        return f"{self.prefix}:mv:{movie}"

    def movie_viewers(self, movie: str, day: str) -> str:
        return f"{self.prefix}:mv:{movie}:d:{day}"

    def active_movies(self, day: str) -> str:
        return f"{self.prefix}:pop:active:{day}"

    def popularity(self, name: str) -> str:
        return f"{self.prefix}:pop:{name}"

    def new_users(self) -> str:
        return f"{self.prefix}:g:new"

    def events(self, kind: str, day: str) -> str:
        return f"{self.prefix}:g:ev:{kind}:{day}"

    def pending_profiles(self) -> str:
        return f"{self.prefix}:q:profiles"

    def pending_movies(self) -> str:
        return f"{self.prefix}:q:movies"

    def served(self, request_id: str) -> str:
        return f"{self.prefix}:prov:req:{request_id}"

    def served_by_user(self, user: User) -> str:
        return f"{self.prefix}:prov:u:{user}"

    def walk(self, direction: str, user: User) -> str:
        """The run of a crawler's walk ending at ``user``, ``direction`` "up" or "dn"."""
        return f"{self.prefix}:walk:{direction}:{user}"

    def all_pattern(self) -> str:
        """A SCAN pattern for every key of this prefix (tests, resets)."""
        return f"{self.prefix}:*"
