"""Feature arithmetic: a batch of events folded into the updates the Redis store merges.

Pure (no I/O). Folding first matters for speed: a session's 90 minute lines become one
"max minute" per (user, movie) per batch. Every fold is idempotent and commutative, and
so is every merge in Redis (maxima, latest rating by event time with the higher score
winning a tie, set unions, HyperLogLog adds), hence redelivered, duplicated and
reordered lines give the same state as the clean stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from movierec.wire import Account, Event, Rate, Recommendation, Watch
from stream_consumer.keys import day_of

_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


def epoch_ms(when: datetime) -> int:
    """Milliseconds since 1970-01-01 of a naive event time (read as if UTC: only
    differences and order matter, and they are the same in every zone)."""
    return (when - _EPOCH) // _MS


@dataclass
class FeatureDelta:
    """What one batch changes, folded per key."""

    progress: dict[tuple[int, str], int] = field(default_factory=dict)            # max minute
    ratings: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)  # (ms, stars)
    recent: dict[tuple[int, str], int] = field(default_factory=dict)              # last ms
    first_seen: dict[int, int] = field(default_factory=dict)
    last_seen: dict[int, int] = field(default_factory=dict)
    viewers: dict[tuple[str, str], set[int]] = field(default_factory=dict)        # (movie, day)
    new_users: dict[int, int] = field(default_factory=dict)                       # earliest ms
    identities: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)  # (kind, day)
    movies: set[str] = field(default_factory=set)
    events: int = 0

    def __post_init__(self) -> None:
        self._days: dict[date, str] = {}

    def _day(self, when: datetime) -> str:
        d = when.date()
        text = self._days.get(d)
        if text is None:
            text = self._days[d] = day_of(when)
        return text

    def add(self, event: Event, raw: bytes) -> None:
        """Fold one accepted event; ``raw`` is its line, the event's identity."""
        ms = epoch_ms(event.time)
        user = event.user_id
        day = self._day(event.time)
        self.events += 1
        if self.first_seen.get(user, ms + 1) > ms:
            self.first_seen[user] = ms
        if self.last_seen.get(user, -1) < ms:
            self.last_seen[user] = ms
        self.identities.setdefault((event.kind, day), []).append(raw)
        if isinstance(event, Watch):
            key = (user, event.movie_id)
            if self.progress.get(key, -1) < event.minute:
                self.progress[key] = event.minute
            if self.recent.get(key, -1) < ms:
                self.recent[key] = ms
            viewers = self.viewers.get((event.movie_id, day))
            if viewers is None:
                viewers = self.viewers[(event.movie_id, day)] = set()
                self.movies.add(event.movie_id)
            viewers.add(user)
        elif isinstance(event, Rate):
            key = (user, event.movie_id)
            if self.ratings.get(key, (-1, -1)) < (ms, event.rating):
                self.ratings[key] = (ms, event.rating)
            if self.recent.get(key, -1) < ms:
                self.recent[key] = ms
            self.movies.add(event.movie_id)
        elif isinstance(event, Account):
            if self.new_users.get(user, ms + 1) > ms:
                self.new_users[user] = ms
        elif isinstance(event, Recommendation):
            pass  # served lists are the online evaluator's; here only the activity counts

    @property
    def users(self) -> set[int]:
        return set(self.last_seen)
