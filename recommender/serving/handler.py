"""The /recommend decision with its deadline and fallbacks, independent of Flask.

One call of ``RecommendHandler.answer`` does, in order: route the user to an arm (stable
hash, ``experiments``), shed the request if it queued too long, read the user's online
features (one Redis round trip, short timeout, circuit breaker) with the walk guard's step
riding the same call (``walks``; a guard kept in process checks apart), answer a step of
a walk over the user ids with the popular list, rank with the
arm's model (fold-in of the current history, cold start), and hand a served record to
telemetry (a bounded buffer, never waits). Whatever fails, the answer is a 200 with a
list: a degraded one, counted by reason, when

- ``redis``: the feature store did not answer (timeout, refused, breaker open);
- ``no_model``: no model version is loaded (nothing trained yet, or every load failed);
- ``shed``: the request waited in the kernel's queue at least the shed limit before a
  worker took it (load shedding: answered at once, without Redis or the model, which
  are most of a request's cost, so an overloaded service drains its queue);
- ``scraping``: the request is a step of a walk over the user ids (a crawler's: the run of
  consecutive ids ending at it reached ``MOVIEREC_SERVE_WALK_MIN_RUN``); answered like a
  shed request, without the features or the model: the crawler learns nothing personal,
  and a rare organic request that happens to extend a walk still gets a list. A walk
  check that fails (Redis down, breaker open) counts and lets the request through;
- ``budget``: the features arrived after the internal budget was spent (the budget counts
  from the request's arrival, queue time included);
- ``model_error``: the model raised while scoring;
- ``error``: anything unexpected (a bug): logged with its traceback, still answered.

With an answer cache (``answer_cache``, per worker), the feature read sends the digest
of the state the held answers came from, and Redis answers "unchanged" without the state:
the held answer of the user's model view is served again, without decoding the state or
running the model. Any write to the user's state changes the digest, so a user's own new
event still changes their next list.

The degraded list is the model's precomputed popular list (minor-safe when the user's
age is unknown, as it always is for a shed or scraping request), minus what the user has seen when
the features are known. Without any model it is the consumer's popularity ranking from
Redis for a known adult and empty otherwise: with no model there is no content metadata
to keep a minor safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from recommender.serving.answer_cache import AnswerCache
from recommender.serving.core import (
    PATH_POPULAR,
    Answer,
    clock_ms,
    format_answer,
    needs_minor_filter,
    parse_user_id,
)
from recommender.serving.serving_metrics import ServingMetrics
from recommender.serving.state import FeaturesUnavailable, ServingError
from recommender.serving.telemetry import ServedRecord, new_request_id
from recommender.serving.walks import WalkGuard, WalkUnavailable
from stores.online import UserRead, UserState

log = logging.getLogger(__name__)

FALLBACK_REASONS = ("shed", "scraping", "redis", "no_model", "budget", "model_error", "error")


class Features(Protocol):
    def read(self, user: int) -> UserState: ...
    def read_if_changed(self, user: int, digest: str | None, *, walk_keys: Sequence[str] = (),
                        walk_gap_ms: int = 0) -> UserRead: ...
    def popular(self, n: int) -> list[str]: ...
    def ping(self) -> bool: ...


class Models(Protocol):
    def current(self) -> Any: ...
    def wake(self) -> None: ...


class Sink(Protocol):
    def submit(self, record: ServedRecord) -> bool: ...


@dataclass(frozen=True)
class _Read:
    """What ``RecommendHandler._features`` found (see there)."""

    digest: str | None = None
    state: UserState | None = None
    answer: Answer | None = None
    fallback: str | None = None
    walk: bool = False


@dataclass(frozen=True)
class Served:
    """What the HTTP layer sends back: the body and the facts for the headers."""

    body: str
    request_id: str
    arm: str
    version: str | None
    path: str
    fallback: str | None


class RecommendHandler:
    """Answers one /recommend request; safe to share between threads (its one mutable
    part, the bound metric children, only ever gains entries)."""

    def __init__(self, *, features: Features, models: Models, telemetry: Sink,
                 metrics: ServingMetrics, list_size: int, budget_s: float, max_user_id: int,
                 shed_s: float = 0.0, walks: WalkGuard | None = None,
                 cache: AnswerCache | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``budget_s``: internal budget from arrival; ``shed_s``: queue age (seconds) from
        which a request is shed, 0 to never shed; ``walks``: the walk guard, None for none;
        ``cache``: the worker's answer cache, None for none."""
        self.features, self.models, self.telemetry = features, models, telemetry
        self.metrics, self.n, self.budget_s, self.shed_s = metrics, list_size, budget_s, shed_s
        self.max_user_id, self.walks, self.cache, self.clock = max_user_id, walks, cache, clock
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label values: ``labels`` checks
        its arguments and takes a lock each call, a few percent of a request's CPU. (Two
        threads may both look one up the first time: ``labels`` gives both the same.)"""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def parse(self, raw: str) -> int:
        """The user id of the URL; ``BadRequest`` (-> 400) when it is not a sane one."""
        return parse_user_id(raw, max_id=self.max_user_id)

    def answer(self, user: int, started: float, queue_s: float = 0.0) -> Served:
        """The list for ``user``. ``started``: ``time.perf_counter()`` when the worker
        took the request; ``queue_s``: seconds it had waited before that (0 when unknown).

        The budget counts both (a request that queued 80 ms has 20 ms of a 100 ms budget
        left); the served record's ``latency_ms`` counts from ``started`` only, as the
        request latency histogram does: the queue age comes in kernel ticks (4 ms at
        HZ=250), which would blur millisecond latencies, and has its own histogram."""
        now = self.clock()
        request_id = new_request_id()
        arm, model, state, answer, fallback = "default", None, None, None, None
        try:
            models = self.models.current()
            arm, model = models.route(user, datetime.fromtimestamp(now, UTC))
            if self.shed_s and queue_s >= self.shed_s:
                fallback = "shed"  # no Redis, no model: the cheapest answer there is
            elif self._walk_step(user) or (read := self._features(user, model)).walk:
                fallback = "scraping"  # as cheap: the crawler learns nothing personal
                self.metrics.walk_steps.inc()
            else:
                digest, state, answer, fallback = read.digest, read.state, read.answer, read.fallback
                if model is None:
                    fallback = fallback or "no_model"
                elif answer is not None:
                    pass  # the held answer of an unchanged state: no budget spent on it
                elif fallback is None and time.perf_counter() - started + queue_s > self.budget_s:
                    fallback = "budget"
                if answer is None and fallback is None and state is not None:  # (state read)
                    answer, fallback = self._rank(model, state, clock_ms(state, int(now * 1000)))
                    if answer is not None and digest is not None and self.cache is not None:
                        self.cache.put(user, digest, _view(model), answer)
        except Exception:  # a bug must still not cost the user an answer
            log.exception("unexpected error answering user %d", user)
            fallback = "error"
        if answer is None:
            answer = self._degraded(model, state)
            self._child(self.metrics.fallbacks, str(fallback)).inc()
        version = getattr(model, "version", None)
        self._child(self.metrics.answers, arm, version or "none", answer.path).inc()
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.telemetry.submit(ServedRecord(
            request_id=request_id, time_ms=int(now * 1000), user_id=user, arm=arm,
            model_version=version, items=answer.items, path=answer.path, fallback=fallback,
            latency_ms=round(latency_ms, 3), status=200))
        return Served(format_answer(answer.items), request_id, arm, version, answer.path, fallback)

    def _walk_step(self, user: int) -> bool:
        """Is this request a step of a walk, by a guard checked apart (in process)? False
        when there is no such guard (none, or one that rides the feature read:
        ``_features``) or the check failed (counted by reason): the guard fails open."""
        if self.walks is None or self.walks.rides:
            return False
        t0 = time.perf_counter()
        try:
            return self.walks.is_step(user)
        except WalkUnavailable as exc:
            self.metrics.walk_failures.labels(exc.reason).inc()
        except Exception:  # a bug in the guard must not cost the answer either
            log.exception("walk check failed for user %d", user)
            self.metrics.walk_failures.labels("error").inc()
        finally:
            self._child(self.metrics.stage, "walk").observe(time.perf_counter() - t0)
        return False

    def _features(self, user: int, model: Any) -> _Read:
        """The user's state (with its digest when there is a cache), or the cache's
        answer for ``model`` when the state is unchanged since it was computed (then the
        state is not decoded: None), or the fallback "redis"; and whether a walk step
        that rode the read (``WalkGuard.rides``) makes this request one."""
        t0 = time.perf_counter()
        walk = self._walk_ride(user)
        cached = self.cache is not None and model is not None
        try:
            if not cached and walk is None:
                return _Read(state=self.features.read(user))
            held = self.cache.digest(user) if self.cache is not None and cached else None
            read = self.features.read_if_changed(user, held, walk_keys=walk[0] if walk else (),
                                                 walk_gap_ms=walk[1] if walk else 0)
        except FeaturesUnavailable as exc:
            if walk is not None:
                self._walk_judge(None, str(exc) or "redis read failed", read_failed=True)
            return _Read(fallback="redis")
        finally:
            self._child(self.metrics.stage, "features").observe(time.perf_counter() - t0)
        if walk is not None and self._walk_judge(read.walk_run, read.walk_error):
            return _Read(walk=True)
        if not cached or self.cache is None:
            return _Read(digest=read.digest, state=read.state)
        if read.state is not None:
            self._child(self.metrics.answer_cache, "changed" if held else "miss").inc()
            return _Read(digest=read.digest, state=read.state)
        answer, outcome = self.cache.get(user, read.digest, _view(model))
        self._child(self.metrics.answer_cache, outcome).inc()
        if answer is not None:
            return _Read(digest=read.digest, answer=answer)
        try:  # unchanged, but no answer of this view held (any more): the state itself
            read = self.features.read_if_changed(user, None)
        except FeaturesUnavailable:
            return _Read(fallback="redis")
        return _Read(digest=read.digest, state=read.state)

    def _walk_ride(self, user: int) -> tuple[list[str], int] | None:
        """The walk keys and gap of a step riding the feature read, or None (no riding
        guard, or its breaker is open: counted, the guard fails open)."""
        if self.walks is None or not self.walks.rides:
            return None
        try:
            return self.walks.ride(user)
        except WalkUnavailable as exc:
            self.metrics.walk_failures.labels(exc.reason).inc()
        return None

    def _walk_judge(self, run: int | None, error: str | None, *, read_failed: bool = False) -> bool:
        """A ridden step's result -> walk step or not; a failed step (or a failed read it
        rode: ``read_failed``) counts and is no walk (fail open)."""
        assert self.walks is not None
        try:
            if read_failed:
                self.walks.failed(error or "redis read failed")
            return self.walks.judge(run, error)
        except WalkUnavailable as exc:
            self.metrics.walk_failures.labels(exc.reason).inc()
        return False

    def _rank(self, model: Any, state: UserState | None, now_ms: int) -> tuple[Answer | None, str | None]:
        t0 = time.perf_counter()
        try:
            return model.recommend(state, n=self.n, now_ms=now_ms), None
        except ServingError as exc:
            log.warning("model %s failed: %s", getattr(model, "version", "?"), exc)
            return None, "model_error"
        finally:
            self._child(self.metrics.stage, "model").observe(time.perf_counter() - t0)

    def _degraded(self, model: Any, state: UserState | None) -> Answer:
        try:
            if model is not None:
                if state is None:
                    return Answer(tuple(model.popular(self.n, minor=True)), PATH_POPULAR)
                return Answer(tuple(model.popular_for(state, self.n)), PATH_POPULAR)
            if state is not None and not needs_minor_filter(state):
                seen = state.seen()
                items = [m for m in self.features.popular(self.n + len(seen)) if m not in seen]
                return Answer(tuple(items[: self.n]), PATH_POPULAR)
        except Exception:  # the last resort must not raise either
            log.exception("degraded answer failed")
        return Answer((), PATH_POPULAR)


def _view(model: Any) -> tuple[str, str | None]:
    """The answer cache's name of a model view: its version and re-ranking policy."""
    return str(getattr(model, "version", "")), getattr(model, "rerank", None)
