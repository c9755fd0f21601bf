"""The confidence of a (user, movie) entry: one formula for training and serving.

Training scores every entry of the training set with it (``recommender.dataset``), and
serving weighs a user's current history with it at request time (fold-in), so both must
compute exactly the same numbers. It lives apart from the dataset builder so that serving
imports numpy only, not pandas or pyarrow.

The confidence of an entry (implicit feedback in the sense of Hu, Koren & Volinsky,
"Collaborative Filtering for Implicit Feedback Datasets", 2008: the matrix holds how sure
we are that the user likes the movie, the model adds its own ``1 + alpha * value``)::

    value = fraction * rating_factor * recency                    (float32, always > 0)

- ``fraction = min(1, (max_minute + 1) / runtime)``: how much of the film the user
  watched (minutes are 0-based, so minute k means k + 1 minutes). Watching to the end is
  the strongest implicit signal the log has; stopping after two minutes is a weak one,
  but still more than nothing (the user chose the film). A movie only rated, never seen
  in the log (watched before the log window, or elsewhere), gets ``rated_only_fraction``
  (default 0.5): the rating shows the user knows it, the log cannot say how much of it
  they saw.
- ``rating_factor``: linear in the stars from ``rating_low`` (0.25) at 1 star to
  ``rating_high`` (1.75) at the top of the scale (5 or 10), so the middle of the scale is
  1.0, the same as an unrated entry (``unrated_factor``). Explicit feedback corrects the
  implicit one, but a 1-star film stays a (weak) positive: the user did choose to watch it,
  and in a one-class model a zero would mean "never seen", which is false.
- ``recency = max(recency_floor, 0.5 ** (age_days / half_life_days))`` with a 30-day
  half-life and a floor of 0.1: recent sessions say more about the user's taste now, but
  the floor keeps old tastes from vanishing (the model still needs them to know the user).
  ``age`` is measured from the entry's latest event to ``as_of``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from movierec.errors import MovierecError

_SECONDS_PER_DAY = 86_400.0


class ConfidenceError(MovierecError):
    """Confidence parameters or inputs are invalid (a bound broken, a runtime <= 0)."""


@dataclass(frozen=True)
class ConfidenceParams:
    """Parameters of ``confidence`` (see the module docstring for the formula and why)."""

    rated_only_fraction: float = 0.5  # fraction credited to a movie rated but never watched
    rating_low: float = 0.25  # rating factor at 1 star
    rating_high: float = 1.75  # rating factor at the top of the scale
    unrated_factor: float = 1.0  # rating factor without a rating
    half_life_days: float = 30.0  # recency halves every this many days (math.inf: no decay)
    recency_floor: float = 0.1  # recency never drops below this
    runtime_quantile: float = 0.95  # quantile of per-user minutes watched used as runtime
    min_runtime: float = 20.0  # minutes; floor of an estimated runtime

    def __post_init__(self) -> None:
        positive = ("rated_only_fraction", "rating_low", "unrated_factor", "half_life_days",
                    "min_runtime")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfidenceError(f"ConfidenceParams.{name} must be > 0, got {getattr(self, name)}")
        if not self.rating_high >= self.rating_low:
            raise ConfidenceError("ConfidenceParams.rating_high must be >= rating_low")
        if not 0 < self.recency_floor <= 1:
            raise ConfidenceError("ConfidenceParams.recency_floor must be in (0, 1]")
        if not 0 < self.runtime_quantile <= 1:
            raise ConfidenceError("ConfidenceParams.runtime_quantile must be in (0, 1]")


def confidence(max_minute: np.ndarray, rating: np.ndarray, age_s: np.ndarray, runtime: np.ndarray,
               *, params: ConfidenceParams = ConfidenceParams(),
               rating_scale: int = 5) -> np.ndarray:  # fmt: skip
    """float32 confidence (> 0) per entry, all arrays aligned (n,): ``max_minute`` as in
    ``Interactions`` (-1: never watched), ``rating`` stars (-1: unrated), ``age_s``
    seconds since the latest event (>= 0), ``runtime`` minutes (> 0)."""
    if rating_scale < 2:
        raise ConfidenceError(f"rating_scale must be at least 2, got {rating_scale}")
    runtime = np.asarray(runtime, dtype=np.float32)
    if not (runtime > 0).all():
        raise ConfidenceError("runtimes must be > 0 minutes")
    watched = max_minute >= 0
    seen = np.minimum(np.float32(1), (max_minute.astype(np.float32) + 1) / runtime)
    fraction = np.where(watched, seen, np.float32(params.rated_only_fraction))
    slope = (params.rating_high - params.rating_low) / (rating_scale - 1)
    stars = params.rating_low + slope * (rating.astype(np.float32) - 1)
    factor = np.where(rating >= 1, stars, np.float32(params.unrated_factor))
    age_days = np.asarray(age_s, dtype=np.float32) / np.float32(_SECONDS_PER_DAY)
    recency = np.maximum(np.float32(params.recency_floor),
                         np.exp2(-age_days / np.float32(params.half_life_days)))
    return (fraction * factor * recency).astype(np.float32)
