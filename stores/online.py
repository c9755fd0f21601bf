"""The online store's contract: one interface to write and read it, whatever holds it.

After Feast's ``OnlineStore`` (one interface, write and read, one adapter per backend):
the consumer, the enrichment worker and serving's telemetry write through it; serving,
training and the tools read through it; only the adapter (``stores.redis_online``) knows
the key layout (``stores.keys``) and the Redis commands. What is stored:

- per user: watch progress, latest ratings, a bounded recent history, first/last activity
  and the profile from the user API (read as one ``UserState`` on the request path);
- per movie: metadata from the movie API, and who watched it each day (the day sets the
  decayed popularity is rebuilt from);
- queues of users and movies still to be enriched;
- provenance of served lists: each served record under its request id, and a per-user
  index by time.

Every write is idempotent and independent of order, so a redelivered batch converges to
the same state. Errors: every method raises ``OnlineStoreError`` when the backend does not
answer or refuses (callers decide: the consumer retries, serving degrades).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from movierec.errors import MovierecError
from stores.feature_delta import FeatureDelta

Kind = Literal["user", "movie"]
"""What an enrichment record describes: a user (profile) or a movie (metadata)."""


class OnlineStoreError(MovierecError):
    """The online store did not take or give the data (down, slow, refused)."""


@dataclass(frozen=True)
class UserState:
    """One user's online features, decoded: what serving reads on every request.

    - ``progress``: movie id -> highest minute watched (0-based), every movie ever watched.
    - ``ratings``: movie id -> (epoch ms of the rating event, stars), the latest rating.
    - ``recent``: movie id -> epoch ms of the user's last event on it (bounded: the most
      recent ``recent_history`` movies only, see the consumer's settings).
    - ``profile``: the raw profile fields from the user API as stored by the enrichment
      worker (``age``, ``gender``, ``occupation``, optional ``likes``/``dislikes`` texts);
      empty when the profile is not fetched yet.

    The mappings are the decoder's own fresh dicts, held as they are: read-only by
    convention. Copying them into read-only proxies cost every request a copy and a
    slower lookup per movie in serving's ``core.history_of``.
    """

    progress: Mapping[str, int] = field(default_factory=dict)
    ratings: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    recent: Mapping[str, int] = field(default_factory=dict)
    profile: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> UserState:
        return cls()

    def seen(self) -> set[str]:
        """Every movie the user watched or rated: never recommended back."""
        return set(self.progress) | set(self.ratings)


@dataclass(frozen=True)
class UserRead:
    """One read of the request path (``OnlineStore.read_user_if_changed``)."""

    digest: str
    """Names the state's content (SHA-1 computed by the store)."""
    state: UserState | None
    """The state; None when it still had the digest the caller sent."""
    walk_run: int | None = None
    """The run of consecutive ids this request made, when a walk step was asked and made."""
    walk_error: str | None = None
    """Why the asked walk step failed (the read itself did not)."""


@dataclass(frozen=True)
class ServedLine:
    """One served list's provenance as the store keeps it: the record is opaque JSON
    (serving's ``ServedRecord``), indexed by request id and by (user, epoch ms)."""

    request_id: str
    user_id: int
    time_ms: int
    record_json: bytes


class OnlineStore(Protocol):
    """Writes and reads of the online store (see the module docstring)."""

    # -- written by the consumer ---------------------------------------------------------

    def write(self, delta: FeatureDelta, *, pending_users: Iterable[int] = (),
              pending_movies: Iterable[str] = ()) -> None:
        """Merge one batch's folded features, and queue the users and movies to enrich."""

    def refresh_popularity(self, days: list[str], *, half_life_days: float = 1.0,
                           window_days: int = 7) -> int:
        """Rebuild the popularity rankings from the day sets of ``days`` (YYYYMMDD, newest
        first); the number of movies scored."""

    # -- written by the enrichment worker ------------------------------------------------

    def take_pending(self, kind: Kind, n: int) -> list[str]:
        """Up to ``n`` ids still to be enriched, removed from the queue."""

    def requeue(self, kind: Kind, ids: Sequence[str]) -> None:
        """Put ids back in the queue (their fetch failed; they are tried again later)."""

    def stored_marks(self, kind: Kind, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """For the ids already enriched: their ``fetched_at`` and (movies) ``runtime``
        fields; ids never enriched are left out."""

    def write_records(self, kind: Kind, records: Mapping[str, Mapping[str, str]]) -> None:
        """Store cleaned profiles (``kind="user"``, keyed by user id) or movie metadata."""

    # -- written by serving's telemetry --------------------------------------------------

    def write_served(self, lines: Sequence[ServedLine]) -> None:
        """Keep served records for provenance lookups (expiring; newest per user kept)."""

    # -- read on the request path --------------------------------------------------------

    def read_user(self, user: int) -> UserState:
        """Progress, ratings, recent history and profile of ``user`` in one round trip."""

    def read_user_if_changed(self, user: int, digest: str | None, *,
                             walk_keys: Sequence[str] = (), walk_gap_ms: int = 0) -> UserRead:
        """The digest of ``user``'s state and the state unless it still has ``digest``
        (the caller holds what it derived from it: a digest names the state's content, so
        a request whose user did nothing since skips decoding it), in one round trip.
        With ``walk_keys`` (``stores.redis_walks.RedisWalkStore.keys_of``) a walk step
        rides the same call, its failure reported apart (``UserRead.walk_error``)."""

    def popular(self, n: int) -> list[str]:
        """The ``n`` most popular movies by the decayed popularity, best first."""

    def served(self, request_id: str) -> bytes | None:
        """The served record of ``request_id`` (JSON bytes), None if unknown or expired."""

    def served_before(self, user: int, at_ms: int) -> tuple[str, bytes] | None:
        """(request id, record) of the latest list served to ``user`` at or before
        ``at_ms``, None if none is kept."""

    # -- read in bulk (training, serving's model loads) ----------------------------------

    def profiles(self, users: Sequence[int]) -> dict[int, dict[str, str]]:
        """Stored profile fields of ``users`` (users without one are left out)."""

    def movies(self, movies: Sequence[str]) -> dict[str, dict[str, str]]:
        """Stored metadata fields of ``movies`` (movies without any are left out)."""

    # -- housekeeping --------------------------------------------------------------------

    def ping(self) -> bool:
        """Does the store answer now? Never raises."""

    def close(self) -> None:
        """Close the connections."""
