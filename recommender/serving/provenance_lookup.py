"""Which answer a user got, and from which model: served records read back from Redis.

``sinks.RedisProvenanceSink`` writes each served record under its request id, and
indexes it in a per-user ZSET scored by the epoch ms it was served (the newest 200, both
expiring after the provenance TTL). This adapter reads them for the /provenance endpoint,
which joins a record with the registry's metadata of its model version (the model's
code, algorithm and training data).
"""

from __future__ import annotations

import logging

import redis

from recommender.serving.state import BadRequest, FeaturesUnavailable
from recommender.serving.telemetry import REQUEST_ID, ServedRecord
from stores.keys import Keys

log = logging.getLogger(__name__)


class ProvenanceLookup:
    """Served records by request id, or by user and time. Redis errors raise
    ``FeaturesUnavailable``; malformed arguments raise ``BadRequest``."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys

    def get(self, request_id: str) -> ServedRecord | None:
        """The record of ``request_id`` (32 lowercase hex digits), None when unknown or
        expired."""
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise BadRequest("request id must be 32 lowercase hex digits")
        try:
            raw = self.client.get(self.keys.served(request_id))
        except (redis.RedisError, OSError) as exc:
            raise FeaturesUnavailable(f"provenance read failed: {type(exc).__name__}: {exc}") from None
        return None if raw is None else self._decode(request_id, raw)

    def by_user(self, user: int, at_ms: int) -> ServedRecord | None:
        """The latest record served to ``user`` at or before ``at_ms`` (epoch ms), None if
        there is none among the user's newest 200 still kept. Two round trips: the index,
        then the record."""
        if not isinstance(user, int) or isinstance(user, bool) or user < 0:
            raise BadRequest("user id must be a non-negative integer")
        if not isinstance(at_ms, int) or isinstance(at_ms, bool):
            raise BadRequest("time must be integer epoch milliseconds")
        try:
            found = self.client.zrevrangebyscore(self.keys.served_by_user(user), at_ms, "-inf",
                                                 start=0, num=1)
            if not found:
                return None
            request_id = found[0].decode("ascii", "replace")
            raw = self.client.get(self.keys.served(request_id))
        except (redis.RedisError, OSError) as exc:
            raise FeaturesUnavailable(f"provenance read failed: {type(exc).__name__}: {exc}") from None
        return None if raw is None else self._decode(request_id, raw)

    @staticmethod
    def _decode(request_id: str, raw: bytes) -> ServedRecord | None:
        """A stored record, or None (logged) if what is stored is not one."""
        try:
            return ServedRecord.from_json(raw)
        except ValueError as exc:
            log.warning("provenance record %s is unreadable: %s", request_id, exc)
            return None
