"""The online store on the request path: reads behind a circuit breaker.

Failure rule of the request-path calls (``read``, ``popular``): they raise only
``FeaturesUnavailable``. While the breaker is open they raise at once, without touching
the socket; a timeout, a refused connection or any other store error counts as a breaker
failure. The store itself (``stores.redis_online``, connected with ``pool_size`` for the
request path) has no retries and short socket and connect timeouts.
"""

from __future__ import annotations

from collections.abc import Sequence

from recommender.serving.breaker import CircuitBreaker
from recommender.serving.state import FeaturesUnavailable
from stores.online import OnlineStore, OnlineStoreError, UserRead, UserState


class OnlineFeatures:
    """The store's request-path reads, guarded by ``breaker`` (see the module docstring)."""

    def __init__(self, store: OnlineStore, breaker: CircuitBreaker) -> None:
        self.store = store
        self.breaker = breaker

    def _guard(self) -> None:
        if not self.breaker.allow():
            raise FeaturesUnavailable("redis circuit breaker is open")

    def _failed(self, exc: OnlineStoreError) -> FeaturesUnavailable:
        self.breaker.failure()
        return FeaturesUnavailable(str(exc))

    def read(self, user: int) -> UserState:
        """Progress, ratings, recent history and profile of ``user`` in one round trip
        (an unknown user is ``UserState.empty()``). Raises only ``FeaturesUnavailable``."""
        self._guard()
        try:
            state = self.store.read_user(user)
        except OnlineStoreError as exc:
            raise self._failed(exc) from None
        self.breaker.success()
        return state

    def read_if_changed(self, user: int, digest: str | None, *,
                        walk_keys: Sequence[str] = (), walk_gap_ms: int = 0) -> UserRead:
        """``OnlineStore.read_user_if_changed`` (the state unless it still has ``digest``,
        a walk step riding along with ``walk_keys``). Same failure rule as ``read``: a
        failed walk step alone is no failure here (``UserRead.walk_error``)."""
        self._guard()
        try:
            out = self.store.read_user_if_changed(user, digest, walk_keys=walk_keys,
                                                  walk_gap_ms=walk_gap_ms)
        except OnlineStoreError as exc:
            raise self._failed(exc) from None
        self.breaker.success()
        return out

    def popular(self, n: int) -> list[str]:
        """The ``n`` most popular movies by the consumer's decayed popularity, best first:
        the last-resort list when no model is loaded. Same failure rule."""
        if n <= 0:
            return []
        self._guard()
        try:
            movies = self.store.popular(n)
        except OnlineStoreError as exc:
            raise self._failed(exc) from None
        self.breaker.success()
        return movies

    def ping(self) -> bool:
        """Does the store answer now? For /ready; never raises, and does not touch the
        breaker."""
        return self.store.ping()

    def close(self) -> None:
        """Close the store's connections (shutdown)."""
        self.store.close()
