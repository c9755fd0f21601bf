"""What serving knows about one user at request time, and the serving errors.

``UserState`` is plain data decoded from the online feature store (layout:
``stores.keys``); the hot path builds it from one pipelined Redis round trip and
the pure core turns it into a model history, a profile and the banned items.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class ServingError(Exception):
    """Base of every error the serving component raises; the HTTP layer maps each kind to
    an answer (400 for ``BadRequest``, a degraded 200 for the others on /recommend)."""


class BadRequest(ServingError):
    """The request itself is wrong (non-numeric or absurd user id, bad admin payload);
    the message is the short plain-text reason sent back with status 400."""


class FeaturesUnavailable(ServingError):
    """The online feature store did not answer in time (timeout, refused, breaker open)."""


class ModelUnavailable(ServingError):
    """No model can answer: none loaded yet, or a model failed validation or scoring."""


@dataclass(frozen=True)
class UserState:
    """One user's online features, decoded.

    - ``progress``: movie id -> highest minute watched (0-based), every movie ever watched.
    - ``ratings``: movie id -> (epoch ms of the rating event, stars), the latest rating.
    - ``recent``: movie id -> epoch ms of the user's last event on it (bounded: the most
      recent ``recent_history`` movies only, see the consumer's settings).
    - ``profile``: the raw profile fields from the user API as stored by the consumer
      (``age``, ``gender``, ``occupation``, optional ``likes``/``dislikes`` texts); empty
      when the profile is not fetched yet.

    The mappings are the decoder's own fresh dicts, held as they are: read-only by
    convention. Copying them into read-only proxies cost every request a copy and a
    slower lookup per movie in ``core.history_of``.
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
