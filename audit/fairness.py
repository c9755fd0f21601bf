"""The fairness audit's pure core: outcomes by user group, exposure by provider group.

**Users.** Each group's lists are judged by what its users did next, with the online
evaluation's own join (``online_eval.join``: a list is *taken* when a listed film starts
within the window; minutes are those watched of taken films), the group standing where
the join has an arm. A group meets the requirement when its take rate is at least
``RATIO`` (0.8) of the overall rate, the "four-fifths rule" of disparate impact (US
EEOC Uniform Guidelines, 29 CFR 1607.4(D)), judged with the Wilson 95% interval: *fail*
when the interval's upper end is below the bar, *pass* when its lower end is above it,
*inconclusive* in between (too few lists to say).

**Providers.** A movie's *exposure* is the sum over the lists it appears in of the
position weight ``1 / log2(rank + 1)`` (rank 1 = first; Singh and Joachims, "Fairness of
exposure in rankings", KDD 2018, with DCG's position bias). A provider group (long-tail
movies; older movies) meets the requirement when its share of the exposure is at least
``RATIO`` of its share of the *demand*, the films started in the log over the same time:
a recommender should not shrink a group's audience below what users choose on their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from online_eval.join import ArmOutcome
from online_eval.stats import wilson_interval

# The provider groups' definitions have one home, the re-ranker that serves them:
from recommender.rerank import HEAD_SHARE
from recommender.rerank import OLD_BEFORE_YEAR as OLD_BEFORE_YEAR
from recommender.rerank import head_of as head_of
from recommender.rerank import release_year as release_year

RATIO = 0.8
AGE_BANDS: tuple[tuple[int, str], ...] = ((18, "under 18"), (25, "18-24"), (35, "25-34"),
                                          (50, "35-49"), (200, "50+"))
UNKNOWN = "unknown"


def age_group(age: int | None) -> str:
    if age is None:
        return UNKNOWN
    return next(label for limit, label in AGE_BANDS if age < limit)


def gender_group(gender: str | None) -> str:
    return {"F": "female", "M": "male"}.get(gender or "", UNKNOWN)


@dataclass(frozen=True)
class GroupResult:
    """One user group's lists: take rate with its interval, minutes per list, verdict."""

    group: str
    eligible: int
    taken: int
    take_rate: float | None
    low: float | None
    high: float | None
    minutes_per_list: float | None
    verdict: str
    """pass, fail or inconclusive against ``RATIO`` x the overall take rate; "n/a" for
    the unknown group (no requirement can name it)."""


def judge_groups(outcomes: Mapping[str, ArmOutcome]) -> tuple[float | None, list[GroupResult]]:
    """The overall take rate and each group's result (the join's arms are the groups)."""
    eligible = sum(o.eligible for o in outcomes.values())
    taken = sum(o.taken for o in outcomes.values())
    overall = taken / eligible if eligible else None
    out = []
    for group, o in sorted(outcomes.items()):
        if o.eligible == 0:
            out.append(GroupResult(group, 0, 0, None, None, None, None, "inconclusive"))
            continue
        low, high = wilson_interval(o.taken, o.eligible)
        if group == UNKNOWN or overall is None:
            verdict = "n/a"
        elif high < RATIO * overall:
            verdict = "fail"
        elif low >= RATIO * overall:
            verdict = "pass"
        else:
            verdict = "inconclusive"
        out.append(GroupResult(group, o.eligible, o.taken, o.taken / o.eligible, low, high,
                               o.minutes / o.eligible, verdict))
    return overall, out


def exposure(lists: Iterable[tuple[str, ...]]) -> dict[str, float]:
    """Position-weighted exposure of each movie over served lists (module docstring)."""
    out: dict[str, float] = {}
    for items in lists:
        for rank, movie in enumerate(items, 1):
            out[movie] = out.get(movie, 0.0) + 1.0 / math.log2(rank + 1)
    return out


def head_movies(popularity: Mapping[str, float]) -> set[str]:
    """The most popular ``HEAD_SHARE`` of the movies with a popularity on file."""
    ranked = sorted(popularity, key=lambda m: (-popularity[m], m))
    return set(ranked[: max(1, math.ceil(len(ranked) * HEAD_SHARE))]) if ranked else set()


@dataclass(frozen=True)
class ProviderResult:
    """One provider group's share of exposure against its share of demand."""

    group: str
    movies: int
    exposure_share: float
    demand_share: float
    verdict: str


def judge_provider(group: str, members: set[str], exposed: Mapping[str, float],
                   demand: Mapping[str, int]) -> ProviderResult:
    total_e, total_d = sum(exposed.values()), sum(demand.values())
    e = sum(v for m, v in exposed.items() if m in members) / total_e if total_e else 0.0
    d = sum(v for m, v in demand.items() if m in members) / total_d if total_d else 0.0
    verdict = ("inconclusive" if total_e == 0 or total_d == 0
               else "pass" if e >= RATIO * d else "fail")
    return ProviderResult(group, len(members), e, d, verdict)


@dataclass(frozen=True)
class ArmFairness:
    """One experiment arm's lists: its take rate (Wilson 95%) and each provider group's
    exposure share against demand, so a mitigation arm is judged beside its control on
    both the fairness measure and the overall outcome."""

    arm: str
    rerank: str | None
    lists: int
    eligible: int
    take_rate: float | None
    low: float | None
    high: float | None
    providers: tuple[ProviderResult, ...]


def judge_arms(outcomes: Mapping[str, ArmOutcome], lists: Mapping[str, list[tuple[str, ...]]],
               policies: Mapping[str, str | None], groups: Mapping[str, set[str]],
               demand: Mapping[str, int]) -> list[ArmFairness]:
    """Per arm in ``policies`` (arm -> its re-ranking policy): outcomes from the join by
    arm, exposure from the arm's ``lists``, each of ``groups`` (name -> movies) against
    the one ``demand`` of the whole log (every arm's users choose from one catalog)."""
    out = []
    for arm, policy in policies.items():
        o = outcomes.get(arm)
        eligible, taken = (o.eligible, o.taken) if o else (0, 0)
        low, high = wilson_interval(taken, eligible) if eligible else (None, None)
        exposed = exposure(lists.get(arm, []))
        out.append(ArmFairness(
            arm, policy, len(lists.get(arm, [])), eligible,
            taken / eligible if eligible else None, low, high,
            tuple(judge_provider(g, members, exposed, demand) for g, members in groups.items())))
    return out
