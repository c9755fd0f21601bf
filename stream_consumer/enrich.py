"""Profiles of new users and metadata of new movies, fetched once from the MLiP APIs.

The consumer only marks ids as pending (Redis sets); this worker, in a thread of its
own, takes up to 200 at a time, bulk-fetches ``GET /user/<ids>`` / ``GET /movie/<ids>``,
cleans the values (the real API sends numbers and booleans as strings at times) and
stores them. It never blocks consumption: a slow, failing or rate-limiting API (429)
only delays enrichment; the ids go back to the pending set and are retried with backoff.
Ids the API does not know are stored as such, so they are not asked for again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from movierec.mlip_api import ApiError, MlipApiClient
from stores.online import Kind, OnlineStore, OnlineStoreError

log = logging.getLogger(__name__)

MAX_BULK = 200
MOVIE_FIELDS_KEPT = ("title", "runtime", "adult", "content_rating", "license_cost", "genres",
                     "original_language", "release_date", "vote_average", "popularity")


def _int(value: object) -> int | None:
    try:
        return int(float(str(value)))
    except (TypeError, ValueError):
        return None


def clean_user(record: dict) -> dict[str, str] | None:
    """The profile fields as Redis strings, or None if the record is unusable."""
    user = _int(record.get("user_id"))
    if user is None:
        return None
    out = {"age": str(_int(record.get("age")) or ""),
           "gender": str(record.get("gender") or "").strip().upper()[:1],
           "occupation": str(record.get("occupation") or "")}
    for key in ("likes", "dislikes"):
        if record.get(key):
            out[key] = str(record[key])
    return out


def clean_movie(record: dict) -> dict[str, str] | None:
    """The kept metadata as Redis strings; genres as names joined by '|'."""
    if not isinstance(record.get("id"), str):
        return None
    out: dict[str, str] = {}
    for key in MOVIE_FIELDS_KEPT:
        value = record.get(key)
        if key == "genres" and isinstance(value, list):
            value = "|".join(str(g.get("name", "")) for g in value if isinstance(g, dict))
        elif key == "adult":
            value = "1" if str(value).strip().lower() in ("true", "1") else "0"
        elif key == "runtime":
            value = _int(value)
        out[key] = "" if value is None else str(value)
    return out


class Enricher:
    def __init__(self, store: OnlineStore, api_url: str, *, timeout_s: float = 3.0,
                 fetch: Callable[[str], object] | None = None) -> None:
        self.store = store
        self.api_url = api_url.rstrip("/")
        self.stop = threading.Event()
        self.api: MlipApiClient | None = None
        if fetch is None:
            # keep-alive connections, Retry-After honoured; a stop cuts a Retry-After wait short
            self.api = MlipApiClient(self.api_url, timeout_s=timeout_s, sleep=self.stop.wait)
            fetch = self.api.get
        self.fetch = fetch
        self.runtimes: dict[str, int | None] = {}
        self.profiled: set[int] = set()
        self.fetched = {"users": 0, "movies": 0, "unknown": 0, "errors": 0}

    # -- what the consumer asks --------------------------------------------------------

    def known_user(self, user: int) -> bool:
        return user in self.profiled

    def known_movie(self, movie: str) -> bool:
        return movie in self.runtimes

    def runtime_of(self, movie: str) -> int | None:
        return self.runtimes.get(movie)

    # -- fetching ------------------------------------------------------------------------

    def _records(self, kind: str, ids: list[str]) -> list[dict]:
        body = self.fetch(f"/{kind}/{','.join(ids)}")
        records = [body] if isinstance(body, dict) else body if isinstance(body, list) else []
        return [r for r in records if isinstance(r, dict)]

    def _work(self, kind: Kind) -> int:
        popped = self.store.take_pending(kind, MAX_BULK)
        if not popped:
            return 0
        ids = self._not_stored(kind, popped)  # after a restart most are: no API call for them
        if not ids:
            return len(popped)
        try:
            records = self._records(kind, ids)
        except ApiError:
            self.store.requeue(kind, ids)  # try again later
            raise
        found: dict[str, dict[str, str]] = {}
        for record in records:
            cleaned = clean_user(record) if kind == "user" else clean_movie(record)
            if cleaned is not None:
                found[str(_int(record["user_id"])) if kind == "user" else record["id"]] = cleaned
        self.store.write_records(kind, {item: found.get(item, {"unknown": "1"}) for item in ids})
        for item in ids:
            if kind == "user":
                self.profiled.add(int(item))
            else:
                self.runtimes[item] = _int(found.get(item, {}).get("runtime"))
        self.fetched["users" if kind == "user" else "movies"] += len(found)
        self.fetched["unknown"] += len(ids) - len(found)
        return len(popped)

    def _not_stored(self, kind: Kind, ids: list[str]) -> list[str]:
        """The ids with no stored record; the stored ones are remembered as known."""
        stored = self.store.stored_marks(kind, ids)
        missing = []
        for item in ids:
            if item not in stored:
                missing.append(item)
            elif kind == "user":
                self.profiled.add(int(item))
            else:
                self.runtimes[item] = _int(stored[item].get("runtime"))
        return missing

    def run_once(self) -> int:
        """One round: up to 200 users and 200 movies. The number of ids handled."""
        return self._work("user") + self._work("movie")

    def run(self) -> None:
        """Until stopped: work while there is work, back off on API or Redis failures.
        The API connections close when it returns (it owns them while it runs)."""
        delay = 0.5
        try:
            while not self.stop.is_set():
                try:
                    done = self.run_once()
                    delay = 0.5
                    if not done:
                        self.stop.wait(0.5)
                except (ApiError, OnlineStoreError) as exc:
                    self.fetched["errors"] += 1
                    log.warning("enrichment paused %.1fs: %s", delay, exc)
                    self.stop.wait(delay)
                    delay = min(delay * 2, 30.0)
        finally:
            if self.api is not None:
                self.api.close()
