"""The oracle: what any list is truly worth to a user, from the world's hidden truth.

Only the simulator and evaluation tools that say so may call this. It lets online
metrics (which see only behaviour) be checked against the truth.

The value of a list is the expected utility a user gets from it under the same
cascade model the simulated users follow (see simulator.behaviour): item i is taken
with probability ``p_i = a_i * prod_{j<i} (1 - a_j)``, where ``a_i`` is the chance of
accepting item i on sight. Unknown ids count as worthless, never accepted.
"""

from __future__ import annotations

import numpy as np

from simulator.behaviour import BehaviourParams, accept_probabilities
from simulator.world import World


def _indices(world: World, items: list[str] | tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.array([world.movie_index.get(m, -1) for m in items], dtype=np.int64)
    return np.maximum(idx, 0), idx >= 0


def take_probabilities(world: World, user: int, items: list[str] | tuple[str, ...],
                       params: BehaviourParams = BehaviourParams()) -> np.ndarray:
    """P(the user takes item i from this list), shape (len(items),); sums to <= 1."""
    if not items:
        return np.zeros(0)
    idx, known = _indices(world, items)
    accept = accept_probabilities(world.utilities_for(user, idx), params) * known
    survive = np.concatenate([[1.0], np.cumprod(1.0 - accept)[:-1]])
    return accept * survive


def list_value(world: World, user: int, items: list[str] | tuple[str, ...],
               params: BehaviourParams = BehaviourParams()) -> float:
    """Expected utility the user takes from the list (0 if nothing is taken)."""
    if not items:
        return 0.0
    idx, known = _indices(world, items)
    u = world.utilities_for(user, idx)
    return float((take_probabilities(world, user, items, params) * np.where(known, u, 0)).sum())


def list_values(world: World, users: np.ndarray, lists: np.ndarray,
                params: BehaviourParams = BehaviourParams()) -> np.ndarray:
    """``list_value`` of many lists at once: ``users`` (B,), ``lists`` (B, L) movie indices
    (-1: no item). Returns (B,) float64."""
    lists = np.asarray(lists)
    known = lists >= 0
    u = world.utility(np.asarray(users), np.maximum(lists, 0))
    accept = accept_probabilities(u, params) * known
    survive = np.concatenate([np.ones((len(lists), 1)), np.cumprod(1.0 - accept, axis=1)[:, :-1]],
                             axis=1)
    return (accept * survive * np.where(known, u, 0.0)).sum(axis=1)


def mean_utility(world: World, user: int, items: list[str] | tuple[str, ...]) -> float:
    """Plain average utility of the listed (known) movies, position-blind."""
    idx, known = _indices(world, items)
    if not known.any():
        return float("nan")
    return float(world.utilities_for(user, idx[known]).mean())


def best_list(world: World, user: int, k: int = 20, exclude: set[str] | None = None) -> list[str]:
    """The ``k`` movies of highest utility for the user, best first."""
    u = world.utilities_for(user)
    if exclude:
        for mid in exclude:
            i = world.movie_index.get(mid)
            if i is not None:
                u[i] = -np.inf
    top = np.argpartition(-u, k)[:k]
    top = top[np.argsort(-u[top])]
    return [world.catalog.ids[i] for i in top]
