"""Movie runtimes (minutes) for the watched fraction of the confidence, one rule for
training and serving.

Training (``item_runtimes``): a mapping ``movie_id -> minutes`` (the movie API's
``runtime``) is used where given and valid (``given_runtime``: a finite number > 0).
Otherwise the runtime is estimated from the rows themselves, as a high quantile
(``runtime_quantile``, 0.95) of the per-user minutes watched of that movie, at least
``min_runtime`` (20) minutes: most viewers stop before the end, but the top 5% of sessions
reach it, and a quantile ignores the rare minute logged past the end. Why not always ask
the API: training must be reproducible from an event-store snapshot alone, and the API
may be down, rate-limited, or changed since. A caller that passes runtimes is responsible
for recording them with the model's provenance.

Serving (``serving_runtimes``) weighs a user's current history with the same confidence
formula, so it must use the same runtimes, or the same history gets other weights than
the model was trained on (train/serve skew). The estimate needs the training rows, which
serving does not have, so the pipeline stores the runtimes training used with the model
version (``RUNTIME_ARRAY``, float32 per model item, ``Registry.register(arrays=...)``).
Serving takes the stored training runtimes, all of them; only a version registered before
runtimes were stored falls back to the movie metadata's runtime where valid (the rule of
``api_runtimes``, which also filtered training's API runtimes), else
a flat default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recommender.dataset import Interactions

RUNTIME_ARRAY = "item_runtime"
"""Name of the version array holding the runtimes training used (float32 minutes, one per
model item, in the model's item order)."""


def given_runtime(value: object) -> float:
    """A runtime from the movie API as minutes, NaN when missing or not a positive number."""
    try:
        minutes = float(value)  # type: ignore[arg-type]  # any object: what float refuses is NaN
    except (TypeError, ValueError):
        return math.nan
    return minutes if math.isfinite(minutes) and minutes > 0 else math.nan


def given_runtimes(item_ids: Iterable[object], runtimes: Mapping[str, object]) -> np.ndarray:
    """float32 (n_items,): ``given_runtime`` of each item's entry in ``runtimes``, NaN
    where there is none or it is not valid."""
    return np.array([given_runtime(runtimes.get(str(movie))) for movie in item_ids], dtype=np.float32)


def item_runtimes(interactions: Interactions, runtimes: Mapping[str, object] | None = None,
                  *, quantile: float = 0.95, floor: float = 20.0) -> np.ndarray:  # fmt: skip
    """Runtime in minutes of every item of ``interactions`` (float32, (n_items,)): the
    given runtime where valid (a finite number > 0), else the ``quantile`` of the items'
    per-user minutes watched (``max_minute + 1``), at least ``floor``; ``floor`` for an
    item nobody watched. The quantile is the inverted CDF one: the smallest watched
    length that at least ``quantile`` of the users' lengths do not exceed."""
    n_items = len(interactions.item_ids)
    watched = interactions.max_minute >= 0
    items = interactions.item[watched].astype(np.int64)
    packed = (items << 16) | (interactions.max_minute[watched].astype(np.int64) + 1)  # minutes < 2**16
    packed.sort()  # by item, then minutes watched
    counts = np.bincount(items, minlength=n_items)
    has = counts > 0
    rank = np.ceil(quantile * counts[has]).astype(np.int64) - 1  # 0-based, within the item's run
    first = (np.cumsum(counts) - counts)[has]
    out = np.full(n_items, floor, dtype=np.float32)
    out[has] = np.maximum(out[has], packed[first + rank] & 0xFFFF)
    if runtimes:
        given = given_runtimes(interactions.item_ids, runtimes)
        out = np.where(np.isnan(given), out, given)
    return out


def serving_runtimes(item_ids: Sequence[str], metadata: Mapping[str, int],
                     trained: np.ndarray | None, default: float) -> np.ndarray:  # fmt: skip
    """float32 (n_items,) minutes per model item for serving: ``trained`` (the version's
    stored training runtimes, aligned with ``item_ids``) whenever the version has them,
    all of them: they already hold the API's runtime wherever training had one, and a
    runtime the metadata learned after training (the enricher fetches new films' metadata
    in the background) would weigh the history otherwise than training did. Only for a
    version stored without them: ``metadata`` (movie id -> minutes, already filtered by
    ``api_runtimes``) where present, else ``default``.
    ``ValueError`` if ``trained`` is not (n_items,) finite values > 0: a version whose
    stored runtimes are broken is refused rather than served with other weights than it
    was trained on."""
    n_items = len(item_ids)
    if trained is not None:
        stored = np.asarray(trained, dtype=np.float32)
        if stored.shape != (n_items,):
            raise ValueError(f"stored {RUNTIME_ARRAY} has shape {stored.shape}, "
                             f"the model has {n_items} items")
        if not (np.isfinite(stored) & (stored > 0)).all():
            raise ValueError(f"stored {RUNTIME_ARRAY} holds values that are not finite > 0")
        return stored.copy()
    known = np.array([metadata.get(m, math.nan) for m in item_ids], dtype=np.float32)
    return np.where(np.isnan(known), np.float32(default), known).astype(np.float32)


def api_runtimes(movies: Mapping[str, Mapping[str, str]]) -> dict[str, int]:
    """movie id -> runtime in minutes from stored movie metadata (``OnlineStore.movies``),
    for movies whose ``runtime`` is a positive integer (digits only)."""
    out = {}
    for movie, fields in movies.items():
        value = fields.get("runtime", "")
        if value.isdigit() and int(value) > 0:
            out[movie] = int(value)
    return out
