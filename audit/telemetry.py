"""The audits' reads of the running system: served records from Kafka, ages and movie
metadata from the online store. Thin adapters; the judging is in the pure cores."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from movierec.kafka_read import read_once
from recommender.models.profiles import profile_fields
from recommender.serving.telemetry import ServedRecord, decode_served
from stores.online import OnlineStore

BATCH = 500
"""Users or movies per store read."""


@dataclass
class ServedRead:
    """The served records read from the topic, and the count of its lines that were not one."""

    records: list[ServedRecord] = field(default_factory=list)
    rejected: int = 0
    notes: list[str] = field(default_factory=list)


def read_served(bootstrap: str, topic: str, *, since_ms: int | None = None,
                timeout_s: float = 600.0, idle_s: float = 10.0) -> ServedRead:
    """Every served record of ``topic`` (from ``since_ms``, epoch ms, when given) up to
    its end at the time of the call. Malformed values are counted, never fatal."""
    out = ServedRead()

    def feed(value: bytes, _written_ms: int) -> None:
        records, bad = decode_served(value)
        out.records.extend(records)
        out.rejected += bad

    out.notes = read_once(bootstrap, topic, feed, client_id="movierec-audit",
                          timeout_s=timeout_s, idle_s=idle_s, since_ms=since_ms)
    return out


def _chunks(values: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(values), n):
        yield values[i:i + n]


def ages(store: OnlineStore, users: Iterable[int]) -> dict[int, int | None]:
    """Each user's plausible age in years from their enriched profile (None: none on
    file, or junk), read as serving and training read it (``profiles.profile_fields``)."""
    wanted = sorted(set(users))
    out: dict[int, int | None] = dict.fromkeys(wanted)
    for chunk in _chunks(wanted, BATCH):
        for user, fields in store.profiles(list(chunk)).items():
            out[user] = profile_fields(fields)[0]
    return out


def movie_meta(store: OnlineStore, movies: Iterable[str]) -> dict[str, dict[str, str] | None]:
    """Each movie's stored metadata (None: nothing on file)."""
    wanted = sorted(set(movies))
    out: dict[str, dict[str, str] | None] = dict.fromkeys(wanted)
    for chunk in _chunks(wanted, BATCH):
        for movie, fields in store.movies(list(chunk)).items():
            out[movie] = fields or None
    return out


class GroupOf(Mapping[int, str]):
    """user id -> group label, looked up in the online store the first time a user is
    asked for (``OutcomeJoin`` asks with ``get`` as it meets each list); ``label`` makes
    the group from the profile's (age, gender, occupation)."""

    def __init__(self, store: OnlineStore,
                 label: Callable[[tuple[int | None, str | None, str | None]], str]) -> None:
        self.store, self.label = store, label
        self.known: dict[int, str] = {}

    def __getitem__(self, user: int) -> str:
        if user not in self.known:
            fields = self.store.profiles([user]).get(user) or {}
            self.known[user] = self.label(profile_fields(fields))
        return self.known[user]

    def __iter__(self) -> Iterator[int]:
        return iter(self.known)

    def __len__(self) -> int:
        return len(self.known)
