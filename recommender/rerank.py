"""Calibrated re-ranking: a user's list carries long-tail and older movies in the share
their own history does. Pure: arrays in, arrays out.

Why. A collaborative model concentrates its lists on the popular head: the most watched
films have the strongest factors, so they top many users' lists, are watched more
because they are shown, and weigh more at the next training (the feedback loop the
feedback audit measures), while long-tail and older films get less exposure than users'
own choices give them (the provider requirement the fairness audit checks). Calibration
(Steck, "Calibrated recommendations", RecSys 2018) asks each list to reflect the user's
own mix: a user whose history is one third long tail gets about one third long tail,
a user who only watches blockbusters keeps blockbusters. Across users the lists'
exposure then follows demand, which is what the provider requirement asks, without
pushing anyone towards films their history says nothing about.

How (Steck, section 3). For binary attributes ``a`` (``TAIL``, ``OLD``) the target
``p_a`` is the history's confidence-weighted share; a list's share ``q_a`` is the
position-weighted share of its items (weight ``1 / log2(rank + 1)``, the exposure weight
of ``audit.fairness``). The greedy picks, position by position, the candidate that
maximises::

    (1 - lam) * sum of relevance - lam * sum_a KL(p_a || q~_a),   q~ = (1 - alpha) q + alpha p

with ``alpha`` = 0.01 (Steck's smoothing, so KL stays finite). The relevance of a
candidate is ``1 / log2(r + 1)`` for its rank ``r`` in the model's own list: scores of
different models are not comparable, their orders are, so every recommender behind the
serving contract can be re-ranked alike. Greedy is Steck's choice too: the objective is
submodular-like and the greedy is within (1 - 1/e) of the best list.

``LAMBDA`` = 0.5 weighs the two terms equally on these scales (moving the first
candidate to rank 50 costs 0.41 of weighted relevance; one long-tail film in a list of
20 that has none, against a target of 0.3, gains about 0.46 of KL). It is a stated
choice, not tuned: its effect on take rate and exposure is measured online as an
experiment arm (docs/audits.md) and over a simulated week (benchmarks/loop_week.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

TAIL, OLD = 0, 1
"""Columns of ``item_flags``: outside the popular head; released before ``OLD_BEFORE_YEAR``."""
ATTRIBUTES = ("long_tail", "older")
HEAD_SHARE = 0.2
"""The most popular fifth of the catalog is the head; the rest is the long tail (the
fairness audit's definition too: one home, here)."""
OLD_BEFORE_YEAR = 2000
"""Movies released before this year are "older movies"."""
RANKING_DEPTH = 1_000_000
"""Movies read of the site's popularity ranking: all of them (the course's has 27,000)."""
LAMBDA = 0.5
CANDIDATES = 100
"""Candidates asked of the model per re-ranked list: five lists' worth, deep enough to
find tail films for most users, and the greedy stays under a millisecond."""
ALPHA = 0.01
POLICIES = ("calibrated",)
"""Re-ranking policies an experiment arm may name, as ``"calibrated"`` (``LAMBDA``) or
with its weight, ``"calibrated:0.8"`` (``parse_policy``)."""


_WEIGHT = re.compile(r"0(\.[0-9]*)?|1(\.0*)?|\.[0-9]+")
"""A weight in [0, 1] as a plain decimal (the OpenAPI description's pattern too)."""


def parse_policy(policy: str) -> float:
    """The calibration weight ``lam`` of an arm's ``rerank`` text: "calibrated" is
    ``LAMBDA``, "calibrated:<lam>" names it (a decimal in [0, 1]). ``ValueError`` with
    the reason on anything else."""
    name, colon, weight = str(policy).partition(":")
    if name not in POLICIES:
        raise ValueError(f"unknown re-ranking policy {policy!r}; known: {list(POLICIES)}")
    if not colon:
        return LAMBDA
    if not _WEIGHT.fullmatch(weight):  # plain decimals only: no sign, exponent, nan or space
        raise ValueError(f"re-ranking weight {weight!r} must be a decimal in [0, 1]")
    return float(weight)


def release_year(meta: object) -> int | None:
    """The year of a metadata mapping's ``release_date`` (YYYY-MM-DD as the movie API
    gives it), or None when missing or junk."""
    get = getattr(meta, "get", None)
    text = str(get("release_date", "") if get else "")[:4]
    return int(text) if text.isdigit() else None


def head_of(ranked: Sequence[str]) -> set[str]:
    """The head of a popularity ranking (movie ids, most popular first): its first
    ``ceil(HEAD_SHARE * len(ranked))``. Serving takes it from the consumer's play-based
    ranking and the fairness audit from the same one, so both split the catalog alike."""
    return set(ranked[: math.ceil(len(ranked) * HEAD_SHARE)])


def flags_from_head(head: np.ndarray, years: np.ndarray) -> np.ndarray:
    """Per item the attributes, (n_items, 2) bool, for ``n_items = len(years)``:
    ``TAIL`` = not in ``head`` (item indices), ``OLD`` = ``years`` (float, NaN unknown)
    below ``OLD_BEFORE_YEAR`` (unknown is not old)."""
    years = np.asarray(years, dtype=np.float64)
    flags = np.zeros((len(years), len(ATTRIBUTES)), dtype=bool)
    flags[:, TAIL] = True
    flags[np.asarray(head, dtype=np.int64), TAIL] = False
    with np.errstate(invalid="ignore"):
        flags[:, OLD] = years < OLD_BEFORE_YEAR
    return flags


def item_flags(ranking: np.ndarray, years: np.ndarray) -> np.ndarray:
    """``flags_from_head`` with the head taken from a ranking of the items themselves
    (item indices, most popular first; those missing from it are tail): its first
    ``ceil(HEAD_SHARE * n_items)``."""
    n_items = len(years)
    return flags_from_head(np.asarray(ranking, dtype=np.int64)[: max(1, math.ceil(HEAD_SHARE * n_items))],
                           years)


def user_target(items: np.ndarray, weights: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """The history's share of each attribute, weighted by ``weights`` (the confidences
    the model folds in), (n_attributes,) float64; zeros for an empty history."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if len(items) == 0 or not total > 0:
        return np.zeros(flags.shape[1])
    return (w @ flags[np.asarray(items, dtype=np.int64)]) / total


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) of Bernoulli attributes summed over the last axis; p, q in [0, 1],
    q smoothed away from 0 and 1 by the caller. 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
    return (a + b).sum(axis=-1)


def calibrate(ranked: np.ndarray, flags: np.ndarray, target: np.ndarray, n: int,
              lam: float = LAMBDA) -> np.ndarray:
    """The calibrated list: ``n`` (or fewer, when fewer candidates) item indices, int64,
    chosen greedily from ``ranked`` (the model's candidates, best first) to maximise the
    module docstring's objective for ``target`` (from ``user_target``). ``lam`` = 0
    returns ``ranked[:n]``; ``lam`` must be in [0, 1]."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    ranked = np.asarray(ranked, dtype=np.int64)
    n = min(n, len(ranked))
    if lam == 0.0 or n == 0:
        return ranked[:n].copy()
    p = np.clip(np.asarray(target, dtype=np.float64), 0.0, 1.0)
    cand_flags = flags[ranked].astype(np.float64)        # (k, a)
    relevance = 1.0 / np.log2(np.arange(len(ranked)) + 2.0)  # by the model's rank
    free = np.ones(len(ranked), dtype=bool)
    chosen: list[int] = []
    got = np.zeros_like(p)        # position-weighted sum of flags so far
    weight_sum = rel_sum = 0.0
    for position in range(n):
        w = 1.0 / math.log2(position + 2.0)
        q = (got + w * cand_flags) / (weight_sum + w)     # (k, a): the list with each candidate
        q = (1 - ALPHA) * q + ALPHA * p
        objective = (1 - lam) * (rel_sum + relevance) - lam * _kl(p, q)
        objective[~free] = -np.inf
        best = int(np.argmax(objective))   # ties: the model's higher-ranked candidate
        chosen.append(best)
        free[best] = False
        got += w * cand_flags[best]
        weight_sum += w
        rel_sum += relevance[best]
    return ranked[chosen]


def list_shares(items: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """A list's position-weighted share of each attribute (``q`` of the docstring),
    (n_attributes,) float64; zeros for an empty list."""
    items = np.asarray(items, dtype=np.int64)
    if len(items) == 0:
        return np.zeros(flags.shape[1])
    w = 1.0 / np.log2(np.arange(len(items)) + 2.0)
    return (w @ flags[items]) / w.sum()
