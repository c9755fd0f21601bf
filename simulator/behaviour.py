"""How simulated users react: pick from a recommended list or organically, watch, rate.

Pure functions over numpy arrays for a batch of sessions (B sessions at once), so the
backfill can simulate a million users' days at Kafka speed. The world's hidden
utility ``u`` drives everything:

- list choice (cascade model): the user scans the list top-down and accepts item i
  with probability ``sigmoid(accept_slope * (u_i - accept_center)) * position_decay**i``;
  the first accepted item is watched. See Craswell et al., "An experimental
  comparison of click position-bias models", WSDM 2008, for the cascade model.
- organic choice: among ``organic_candidates`` movies drawn by appeal (popularity),
  pick by softmax(u / temperature) (Gumbel-max trick).
- watching: the watched fraction of the runtime is ``sigmoid(watch_slope * (u -
  watch_center))`` times Beta noise; one log line per minute watched.
- rating: with probability ``rate_prob`` (higher for strong feelings), stars from
  the utility plus noise, on a 1..scale grid.

So good recommendations are accepted more often and watched longer, and rated higher.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.world import World


@dataclass(frozen=True)
class BehaviourParams:
    accept_slope: float = 1.5
    accept_center: float = 3.0
    position_decay: float = 0.9
    organic_candidates: int = 64
    organic_temperature: float = 0.5
    watch_slope: float = 1.2
    watch_center: float = 1.5
    watch_noise: float = 8.0  # Beta concentration: higher = less noise around the mean
    rate_prob: float = 0.25
    rating_center: float = 2.5
    rating_spread: float = 0.9
    rating_noise: float = 0.6


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def accept_probabilities(u: np.ndarray, params: BehaviourParams) -> np.ndarray:
    """P(accept item i | the user looks at it), times the chance of looking that far.

    ``u``: (..., L) utilities of a list in rank order.
    """
    positions = np.arange(u.shape[-1])
    attention = params.position_decay ** positions
    return sigmoid(params.accept_slope * (u - params.accept_center)) * attention


def choose_from_lists(u: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
                      params: BehaviourParams) -> np.ndarray:
    """Index of the accepted item per session, or -1 when none is accepted.

    ``u``, ``valid``: (B, L) utilities and a mask of real entries (lists can be short).
    """
    accept = (rng.random(u.shape) < accept_probabilities(u, params)) & valid
    first = accept.argmax(axis=1)
    return np.where(accept.any(axis=1), first, -1)


class WeightedSampler:
    """Draws indices in proportion to non-negative weights (binary search over the
    cumulative weights: O(log n) a draw, no table to rebuild beyond one cumsum)."""

    def __init__(self, weights: np.ndarray) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        self.cumulative = np.cumsum(weights / weights.sum())

    def sample(self, rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
        picks = np.searchsorted(self.cumulative, rng.random(shape), side="right")
        return np.minimum(picks, len(self.cumulative) - 1)


class OrganicSampler(WeightedSampler):
    """Candidate movies in proportion to appeal (or to ``appeal`` given, after a shift)."""

    def __init__(self, world: World, appeal: np.ndarray | None = None) -> None:
        super().__init__(world.catalog.appeal if appeal is None else appeal)


def organic_choice(world: World, users: np.ndarray, sampler: OrganicSampler,
                   rng: np.random.Generator, params: BehaviourParams) -> np.ndarray:
    """A movie per user, chosen by taste among popular candidates."""
    candidates = sampler.sample(rng, (len(users), params.organic_candidates))
    u = world.utility(users, candidates)
    gumbel = -np.log(-np.log(rng.random(u.shape)))
    best = np.argmax(u / params.organic_temperature + gumbel, axis=1)
    return candidates[np.arange(len(users)), best]


def watch_minutes(u: np.ndarray, runtime: np.ndarray, rng: np.random.Generator,
                  params: BehaviourParams) -> np.ndarray:
    """Minutes watched (>= 1, <= runtime) for utilities ``u`` and runtimes in minutes."""
    mean = np.clip(sigmoid(params.watch_slope * (u - params.watch_center)), 0.02, 0.98)
    fraction = rng.beta(mean * params.watch_noise, (1 - mean) * params.watch_noise)
    return np.clip(np.ceil(fraction * runtime), 1, runtime).astype(np.int32)


def ratings(u: np.ndarray, rng: np.random.Generator, scale: int,
            params: BehaviourParams) -> np.ndarray:
    """Stars in 1..scale, or 0 where the user does not rate."""
    strength = np.abs(u - params.rating_center)
    rates = rng.random(u.shape) < params.rate_prob * (0.6 + 0.4 * np.minimum(strength, 2))
    score = sigmoid(params.rating_spread * (u - params.rating_center)
                    + rng.normal(0, params.rating_noise, u.shape))
    stars = np.clip(np.ceil(score * scale), 1, scale).astype(np.int8)
    return np.where(rates, stars, 0).astype(np.int8)


@dataclass
class Outcomes:
    """What B sessions did: the movie watched, whether it came from the list, minutes,
    stars (0 = not rated) and its hidden utility."""

    movie: np.ndarray      # int64 movie index
    from_list: np.ndarray  # bool
    minutes: np.ndarray    # int32
    stars: np.ndarray      # int8
    utility: np.ndarray    # float32


def react(world: World, users: np.ndarray, lists: np.ndarray, sampler: OrganicSampler,
          rng: np.random.Generator, params: BehaviourParams, rating_scale: int) -> Outcomes:
    """Sessions of ``users`` shown ``lists`` ((B, L) movie indices, -1 = no item)."""
    users = np.asarray(users)
    valid = lists >= 0
    picked = choose_from_lists(world.utility(users, np.maximum(lists, 0)), valid, rng, params)
    organic = organic_choice(world, users, sampler, rng, params)
    rows = np.arange(len(users))
    movie = np.where(picked >= 0, lists[rows, np.maximum(picked, 0)], organic)
    u = world.utility(users, movie)
    return Outcomes(
        movie=movie, from_list=picked >= 0,
        minutes=watch_minutes(u, world.catalog.runtime[movie], rng, params),
        stars=ratings(u, rng, rating_scale, params), utility=u,
    )
