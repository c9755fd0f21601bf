"""One registry version made ready to serve: ``ServingModel``.

Loading reads the model memory-mapped and verified (``Registry.load``), then derives
everything a request needs so the request path only looks things up:

- ``index``: movie id -> item, ``item_ids``: item -> movie id;
- ``runtimes`` (minutes) per item: the runtimes training used, stored with the version;
  for a version stored without them, the movie metadata the consumer stored
  (``stream_consumer.enrich``) where it has a valid runtime, else ``default_runtime``
  (``recommender.runtimes.serving_runtimes``): the history is weighed as training
  weighed it;
- ``unsafe`` (for minors) per item, from the same metadata;
- a ``TitleMatcher`` over the catalog (titles read from the ids), for the
  self-descriptions of cold-start users; duplicate titles go to the more popular film;
- the model's own popularity ranking (``recommend_new(None, ...)``), all items and
  minor-safe only: the degraded answers when the time budget runs out;
- ``flags``: long-tail and older films per item, for the calibrated re-ranking an
  experiment arm may ask for (``with_rerank``, ``recommender.rerank``).

A ``ServingModel`` is immutable after ``load`` and shared by the threads of a worker;
the watcher builds a new one and swaps the reference. Every failure of the public
methods is a ``ModelUnavailable`` naming the version, so the caller can keep the model
it has (load, ``smoke_check``) or fall back to ``popular_for`` (``recommend``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recommender import rerank
from recommender.coldstart import TitleMatcher
from recommender.confidence import ConfidenceParams
from recommender.models.base import History, Recommender
from recommender.registry import Registry
from recommender.runtimes import RUNTIME_ARRAY, api_runtimes, serving_runtimes
from recommender.serving.core import (
    PATH_COLDSTART_DEMOGRAPHIC,
    PATH_COLDSTART_PROFILE,
    PATH_MODEL,
    PATH_POPULAR,
    Answer,
    history_of,
    needs_minor_filter,
    profile_of,
    unsafe_for_minors,
)
from recommender.serving.state import ModelUnavailable
from stores.online import UserState

log = logging.getLogger(__name__)

SEEN_SLACK = 500
"""Popular movies kept beyond the list size, so ``popular_for`` still fills a list after
dropping the movies a user has seen (short only past 500 of the top ones seen)."""

SMOKE_HISTORY = 5
"""Popular items in the history of ``smoke_check``'s history prediction."""


TITLE_CACHE = 65_536
"""Self-description texts whose matches a worker remembers per model version."""


class CachedTitles:
    """``TitleMatcher.match`` memoised by text. A user's self-description is the same
    text on every request and matching it costs about 0.45 ms (2 ms at p99,
    docs/models.md); a hit costs well under a microsecond. Thread-safe
    (``functools.lru_cache``); the matches are returned as an immutable tuple."""

    def __init__(self, matcher: TitleMatcher, size: int = TITLE_CACHE) -> None:
        self._match = functools.lru_cache(maxsize=size)(lambda text: tuple(matcher.match(text)))

    def match(self, text: str | None) -> tuple[tuple[int, float], ...]:
        return self._match(text)


SiteRanking = Callable[[int], list[str]]
"""At most n movie ids, most played first (in production ``OnlineStore.popular``, the
consumer's decayed popularity)."""

MovieMetadata = Callable[[Sequence[str]], Mapping[str, Mapping[str, str]]]
"""Movie ids -> the stored metadata fields of those that have any (in production
``OnlineStore.movies`` on the consumer's Redis cache)."""


@dataclass(frozen=True, eq=False)
class ServingModel:
    """A loaded registry version and everything derived from it (see the module
    docstring). Arrays are per item, (n_items,), read-only; ``popular_all`` and
    ``popular_safe`` are movie ids best first, ``list_size + SEEN_SLACK`` at most."""

    version: str
    name: str
    meta: dict[str, Any]
    model: Recommender
    index: Mapping[str, int]
    item_ids: tuple[str, ...]
    runtimes: np.ndarray
    unsafe: np.ndarray
    matcher: TitleMatcher
    titles: CachedTitles
    popular_all: tuple[str, ...]
    popular_safe: tuple[str, ...]
    confidence: ConfidenceParams
    rating_scale: int
    list_size: int
    unsafe_items: np.ndarray
    """int64 item indices where ``unsafe``: the exclusion added for (possible) minors."""
    flags: np.ndarray
    """(n_items, 2) bool: long tail (by the model's popularity ranking) and older (by the
    metadata's release year), ``recommender.rerank.item_flags``: what re-ranking balances."""
    rerank: str | None = None
    """The re-ranking policy of this view (``with_rerank``); None: the model's order."""
    rerank_lambda: float = 0.0
    """Its calibration weight (``recommender.rerank.parse_policy``)."""

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def load(cls, registry: Registry, version: str, *, movies: MovieMetadata,
             confidence: ConfidenceParams = ConfidenceParams(), rating_scale: int = 5,
             default_runtime: float = 90.0, list_size: int = 20,
             ranking: SiteRanking | None = None) -> ServingModel:
        """Load ``version`` (id or alias) memory-mapped and verified, and derive the rest
        from the metadata ``movies`` gives for the model's movies and the runtimes stored
        with the version (``default_runtime`` minutes, for a movie without a metadata
        runtime, only when the version stored none). ``confidence`` weighs histories
        unless the version stored the parameters it was trained with. ``ranking`` gives
        the site's play-based popularity (the consumer's), whose head ``flags`` marks; without
        it, or when it fails or is empty, the model's own popularity ranking does. Any failure,
        a failed metadata read included, raises ``ModelUnavailable`` naming the version and
        the cause."""
        try:
            if not default_runtime > 0 or list_size < 1 or rating_scale < 2:
                raise ValueError(f"bad settings default_runtime={default_runtime} "
                                 f"list_size={list_size} rating_scale={rating_scale}")
            mv = registry.get(version)
            model = registry.load(mv.version, mmap=True, verify=True)
            trained = registry.arrays(mv).get(RUNTIME_ARRAY)  # None: stored before runtimes were
            # the confidence the version was trained with (tuned, perhaps): a history must
            # be weighed as training weighed it; versions stored before it was kept: ours
            if mv.meta.get("confidence"):
                confidence = ConfidenceParams(**mv.meta["confidence"])
            return cls._build(mv.version, mv.name, mv.meta, model, movies, confidence,
                              rating_scale, float(default_runtime), list_size, trained,
                              ranking)
        except Exception as exc:
            # Whatever breaks (files, hashes, shapes, an unknown model, a bug in a
            # candidate), this version cannot be served and the caller keeps its model.
            raise ModelUnavailable(f"model version {version!r} cannot be served: "
                                   f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def _build(cls, version: str, name: str, meta: dict[str, Any], model: Recommender,
               movies: MovieMetadata, confidence: ConfidenceParams,
               rating_scale: int, default_runtime: float, list_size: int,
               trained_runtimes: np.ndarray | None = None,
               site_ranking: SiteRanking | None = None) -> ServingModel:
        item_ids = tuple(str(i) for i in model.item_ids)
        n_items = len(item_ids)
        if n_items == 0:
            raise ValueError("the model has no items")
        index = {movie: item for item, movie in enumerate(item_ids)}
        if len(index) != n_items:
            raise ValueError(f"{n_items - len(index)} duplicate item id(s)")
        metadata = movies(item_ids)
        # api_runtimes: training's rule for a usable runtime (it filtered training's too)
        runtimes = serving_runtimes(item_ids, api_runtimes(metadata), trained_runtimes, default_runtime)
        unsafe = np.array([unsafe_for_minors(metadata.get(m)) for m in item_ids], dtype=bool)
        years = np.array([rerank.release_year(metadata.get(m)) or np.nan for m in item_ids],
                         dtype=np.float64)
        ranking = _checked(model.recommend_new(None, n_items), n_items, set(), "popular ranking")
        # Higher = more popular; from_ids gives a duplicated title to the most popular film.
        popularity = np.zeros(n_items, dtype=np.float64)
        popularity[ranking] = np.arange(len(ranking), 0, -1)
        depth = list_size + SEEN_SLACK
        matcher = TitleMatcher.from_ids(item_ids, popularity=popularity)
        return cls(
            version=version, name=name, meta=meta, model=model, index=index,
            item_ids=item_ids, runtimes=_read_only(runtimes), unsafe=_read_only(unsafe),
            matcher=matcher, titles=CachedTitles(matcher),
            popular_all=tuple(item_ids[i] for i in ranking[:depth]),
            popular_safe=tuple(item_ids[i] for i in ranking[~unsafe[ranking]][:depth]),
            confidence=confidence, rating_scale=rating_scale, list_size=list_size,
            unsafe_items=_read_only(np.flatnonzero(unsafe).astype(np.int64)),
            flags=_read_only(_flags(site_ranking, index, ranking, years)),
        )

    def with_rerank(self, policy: str | None) -> ServingModel:
        """This model answering with ``policy``'s re-ranking (``recommender.rerank``): a
        view sharing every array, for an experiment arm that re-ranks. ``ValueError`` on
        an unknown policy."""
        lam = 0.0 if policy is None else rerank.parse_policy(policy)
        return dataclasses.replace(self, rerank=policy, rerank_lambda=lam)

    # -- checks -------------------------------------------------------------------------------

    def smoke_check(self) -> None:
        """One cold-start and one history prediction (the ``SMOKE_HISTORY`` most popular
        items watched), then one full ``recommend`` of that user. Each list must hold
        items in range, unique, none banned, and be full (``list_size``, or the rest of
        the catalog): ``top_n`` drops non-finite scores, so NaN factors show as a short
        list. ``ModelUnavailable`` if anything is off. Call it before serving a model: it
        also builds what a model computes lazily (ALS's Y^T Y) off the request path."""
        n, n_items = self.list_size, len(self.item_ids)
        items = np.array([self.index[m] for m in self.popular_all[:SMOKE_HISTORY]], np.int32)
        try:
            if not self.popular_safe:
                raise ValueError("no movie is known to be safe for minors (movie metadata "
                                 "missing?): users of unknown age would get empty lists")
            cold = self.model.recommend_new(None, n)
            _checked(cold, n_items, set(), "cold start", want=min(n, n_items))
            history = History(np.sort(items), np.ones(len(items), np.float32))
            warm = self.model.recommend(history, n)
            _checked(warm, n_items, set(items.tolist()), "history",
                     want=min(n, n_items - len(items)))
            state = UserState(progress={self.item_ids[i]: 10 for i in items.tolist()})
            self.recommend(state, n=n, now_ms=0)
        except Exception as exc:
            raise ModelUnavailable(f"model version {self.version!r} failed its smoke check: "
                                   f"{type(exc).__name__}: {exc}") from exc

    # -- answering ----------------------------------------------------------------------------

    def recommend(self, state: UserState, *, n: int, now_ms: int) -> Answer:
        """The answer for a user in ``state`` at ``now_ms`` (the stored times' clock):
        at most ``n`` movie ids, best first, never a seen movie, never an ``unsafe`` one
        when ``needs_minor_filter(state)``.

        A history the model knows is ranked by the model (path "model"); otherwise cold
        start from the profile: "coldstart_profile" with liked titles, else
        "coldstart_demographic" with an age or gender, else "popular". A view
        ``with_rerank("calibrated")`` re-ranks the model path's ``rerank.CANDIDATES``
        best by ``rerank.calibrate`` towards the history's share of long-tail and older
        films (cold start is not re-ranked: there is no history to calibrate to). The model's list
        is checked again on the way out (a broken candidate must not leak a seen or
        unsafe movie); any failure is a ``ModelUnavailable``."""
        try:
            history = history_of(state, self.index, self.runtimes, now_ms=now_ms,
                                 params=self.confidence, rating_scale=self.rating_scale)
            seen = history.items  # every watched or rated movie the model knows
            minor = needs_minor_filter(state)
            banned = np.concatenate([seen, self.unsafe_items]) if minor else seen
            if len(history):
                # The self-description serves cold start only: once a user has history,
                # their behaviour speaks, and matching titles (about 0.45 ms a text, most
                # texts seen once) would be a third of a request's time.
                profile = profile_of(state, None)
                if self.rerank is None:
                    picks = self.model.recommend(history, n, exclude=banned, profile=profile)
                else:  # "calibrated[:lam]", the one policy: the history's mix of tail and old films
                    ranked = self.model.recommend(history, max(n, rerank.CANDIDATES),
                                                  exclude=banned, profile=profile)
                    target = rerank.user_target(history.items, history.weights, self.flags)
                    picks = rerank.calibrate(np.asarray(ranked), self.flags, target, n,
                                             self.rerank_lambda)
                path = PATH_MODEL
            else:
                profile = profile_of(state, self.titles)
                picks = self.model.recommend_new(profile, n, exclude=banned)
                if profile.liked:
                    path = PATH_COLDSTART_PROFILE
                elif profile.age is not None or profile.gender is not None:
                    path = PATH_COLDSTART_DEMOGRAPHIC
                else:
                    path = PATH_POPULAR
            picks = _checked(picks, len(self.item_ids), set(seen.tolist()), "answer", most=n)
            if minor and self.unsafe[picks].any():
                raise ValueError("the model returned a movie unsafe for minors")
            return Answer(tuple(self.item_ids[i] for i in picks.tolist()), path)
        except Exception as exc:  # the request path lets only serving errors out
            raise ModelUnavailable(f"model version {self.version!r} failed to answer: "
                                   f"{type(exc).__name__}: {exc}") from exc

    def popular(self, n: int, *, minor: bool) -> tuple[str, ...]:
        """The ``n`` most popular movies (minor-safe ones only when ``minor``)."""
        return (self.popular_safe if minor else self.popular_all)[:max(n, 0)]

    def popular_for(self, state: UserState, n: int) -> tuple[str, ...]:
        """The fallback answer: ``popular`` for this user (minor-safe when
        ``needs_minor_filter(state)``) without the movies they have seen. Never raises."""
        seen_a, seen_b = state.progress, state.ratings
        out: list[str] = []
        for movie in self.popular_safe if needs_minor_filter(state) else self.popular_all:
            if len(out) >= n:
                break
            if movie not in seen_a and movie not in seen_b:
                out.append(movie)
        return tuple(out)


def _flags(site_ranking: SiteRanking | None, index: Mapping[str, int], ranking: np.ndarray,
           years: np.ndarray) -> np.ndarray:
    """Long-tail and older flags per item: the head from the site's ranking when it can
    be read and is not empty (the fairness audit's head), else from the model's own."""
    site: list[str] = []
    if site_ranking is not None:
        try:
            site = site_ranking(rerank.RANKING_DEPTH)
        except Exception:  # a fairness input: never a reason to refuse a model
            log.warning("the site's popularity ranking could not be read; the model's "
                        "own ranking marks the long tail", exc_info=True)
    if not site:
        return rerank.item_flags(ranking, years)
    head = np.array(sorted(index[m] for m in rerank.head_of(site) if m in index), np.int64)
    return rerank.flags_from_head(head, years)


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def _checked(picks: np.ndarray, n_items: int, banned: set[int], what: str, *,
             most: int | None = None, want: int | None = None) -> np.ndarray:
    """``picks`` as int64 after checking the model's contract: 1-d integers in
    [0, n_items), unique, none in ``banned``, at most ``most`` and exactly ``want`` of
    them when given; ``ValueError`` naming ``what`` otherwise."""
    arr = np.asarray(picks)
    if arr.ndim != 1 or (len(arr) and arr.dtype.kind not in "iu"):
        raise ValueError(f"{what}: not a 1-d integer array ({arr.dtype}, shape {arr.shape})")
    arr = arr.astype(np.int64)
    if len(arr) and (arr.min() < 0 or arr.max() >= n_items):
        raise ValueError(f"{what}: item index out of range [0, {n_items})")
    listed = arr.tolist()
    if len(set(listed)) != len(listed):
        raise ValueError(f"{what}: an item appears twice")
    if banned.intersection(listed):
        raise ValueError(f"{what}: a banned item came back")
    if most is not None and len(arr) > most:
        raise ValueError(f"{what}: {len(arr)} items, asked for {most}")
    if want is not None and len(arr) != want:
        raise ValueError(f"{what}: {len(arr)} items, expected {want} (non-finite scores?)")
    return arr
