"""The answers a worker already computed, reused while the user's state is unchanged.

A model's answer for a user with history is a function of the user's stored state and of
the model (view) alone: the recency clock is the state's own latest event time
(``core.clock_ms``), and seen and unsafe movies come from the state and the model. So an
answer can be served again, without decoding the state or running the model, as long as
the state is the same. The online store names a state's content by a digest
(``OnlineStore.read_user_if_changed``: SHA-1 computed in Redis): the handler sends the
digest it holds for the user, and when Redis answers "unchanged" and an answer of the
same model view is held, that answer is the one the model would give again.

Freshness is kept by construction: any write to the user's state (a watch, a rating, a
profile) changes the digest, and the next request misses and recomputes. The time to
live bounds the rest: a model view is named by its version and re-ranking policy, so a
model reloaded under the same version, or cold-start answers that also read the wall
clock, are reused for at most ``ttl_s``.

Bounded: at most ``users`` users, least recently used dropped first; each entry holds
the digest and, per model view, the answer and when it expires (a 20-id answer shares
the model's id strings: a few hundred bytes an entry). Thread-safe (gthread workers):
one lock around a few dict operations. Pure: the clock is injected.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from recommender.serving.core import Answer

View = tuple[str, str | None]
"""A model view: (version, re-ranking policy or None)."""

OUTCOMES = ("hit", "miss", "changed", "expired")
"""How a lookup ended: served from the cache; no entry for the user (or no answer of that
view); the state changed since; the answer was older than the time to live."""


@dataclass
class _Entry:
    digest: str
    answers: dict[View, tuple[Answer, float]] = field(default_factory=dict)


class AnswerCache:
    """User -> (state digest, answers per model view); see the module docstring."""

    def __init__(self, users: int, ttl_s: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if users < 1 or not ttl_s > 0:
            raise ValueError(f"answer cache needs users >= 1 and ttl_s > 0; got {users}, {ttl_s}")
        self.users, self.ttl_s, self._clock = users, ttl_s, clock
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, user: int) -> str | None:
        """The digest of the state the held answers of ``user`` were computed from."""
        entry = self._entries.get(user)
        return None if entry is None else entry.digest

    def get(self, user: int, digest: str, view: View) -> tuple[Answer | None, str]:
        """The held answer of ``view`` for ``user`` if it was computed from the state
        named ``digest`` and has not expired, and the outcome (one of ``OUTCOMES``)."""
        with self._lock:
            entry = self._entries.get(user)
            if entry is None:
                return None, "miss"
            if entry.digest != digest:
                return None, "changed"
            held = entry.answers.get(view)
            if held is None:
                return None, "miss"
            answer, expires = held
            if self._clock() >= expires:
                del entry.answers[view]
                return None, "expired"
            self._entries.move_to_end(user)
            return answer, "hit"

    def put(self, user: int, digest: str, view: View, answer: Answer) -> None:
        """Hold ``answer`` of ``view`` for ``user`` in the state ``digest``; a new digest
        drops the answers of the old state."""
        expires = self._clock() + self.ttl_s
        with self._lock:
            entry = self._entries.get(user)
            if entry is None or entry.digest != digest:
                entry = self._entries[user] = _Entry(digest)
            entry.answers[view] = (answer, expires)
            self._entries.move_to_end(user)
            while len(self._entries) > self.users:
                self._entries.popitem(last=False)
