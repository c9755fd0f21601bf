"""Which answer a user got, and from which model: served records read back from the
online store.

``sinks.RedisProvenanceSink`` writes each served record under its request id, and the
store indexes it per user by the epoch ms it was served (the newest 200, both expiring
after the provenance TTL). This lookup reads them for the /provenance endpoint,
which joins a record with the registry's metadata of its model version (the model's
code, algorithm and training data).
"""

from __future__ import annotations

import logging

from recommender.serving.state import BadRequest, FeaturesUnavailable
from recommender.serving.telemetry import REQUEST_ID, ServedRecord
from stores.online import OnlineStore, OnlineStoreError

log = logging.getLogger(__name__)


class ProvenanceLookup:
    """Served records by request id, or by user and time. Store errors raise
    ``FeaturesUnavailable``; malformed arguments raise ``BadRequest``."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store

    def get(self, request_id: str) -> ServedRecord | None:
        """The record of ``request_id`` (32 lowercase hex digits), None when unknown or
        expired."""
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise BadRequest("request id must be 32 lowercase hex digits")
        try:
            raw = self.store.served(request_id)
        except OnlineStoreError as exc:
            raise FeaturesUnavailable(str(exc)) from None
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
            found = self.store.served_before(user, at_ms)
        except OnlineStoreError as exc:
            raise FeaturesUnavailable(str(exc)) from None
        return None if found is None else self._decode(*found)

    @staticmethod
    def _decode(request_id: str, raw: bytes) -> ServedRecord | None:
        """A stored record, or None (logged) if what is stored is not one."""
        try:
            return ServedRecord.from_json(raw)
        except ValueError as exc:
            log.warning("provenance record %s is unreadable: %s", request_id, exc)
            return None
