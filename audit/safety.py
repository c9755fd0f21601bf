"""The safety audit's pure core: every served list judged for minors.

The requirement (docs/audits.md): no movie that is adult, rated R, NC-17 or X, or whose
metadata cannot show otherwise, is served to a user under 18, on any path: the model,
cold start, the popular fallback, a shed answer, either arm of a canary. Serving promises
more: a user whose age is not on file gets the minor-safe catalog too
(``recommender.serving.core``), so a list to an unknown-age user is judged the same way
and counted apart.

Plain data in (served records, ages, movie metadata), plain data out: the adapters
(``audit.telemetry``) read the served-records topic and the online store, and the live
monitor (``online_eval``) applies ``judge`` to every record as it arrives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from recommender.serving.core import ADULT, MINOR, UNKNOWN_AGE, audience, unsafe_reason
from recommender.serving.telemetry import ServedRecord

__all__ = ["ADULT", "MINOR", "UNKNOWN_AGE", "Finding", "SafetyAudit", "audit", "judge"]


@dataclass(frozen=True)
class Finding:
    """One unsafe movie in one list served to a minor or an unknown-age user."""

    request_id: str
    time_ms: int
    user_id: int
    audience: str
    movie_id: str
    reason: str
    """``unsafe_reason``'s word: no_metadata, adult, rating_R, rating_NC17, rating_X."""
    path: str
    arm: str
    fallback: str | None


def judge(record: ServedRecord, age: int | None,
          meta: Mapping[str, Mapping[str, str] | None]) -> list[Finding]:
    """The unsafe movies of one served list (empty: safe, or an adult's list)."""
    who = audience(age)
    if who == ADULT or record.status != 200:
        return []
    out = []
    for movie in record.items:
        reason = unsafe_reason(meta.get(movie))
        if reason is not None:
            out.append(Finding(record.request_id, record.time_ms, record.user_id, who, movie,
                               reason, record.path, record.arm, record.fallback))
    return out


@dataclass
class SafetyAudit:
    """The audit of many served lists: how many were judged, on which paths, arms and
    fallbacks, and every finding. ``violations`` are findings for known minors (the
    requirement); ``policy_breaches`` for unknown-age users (serving's stricter promise)."""

    lists: int = 0
    lists_by_audience: Counter[str] = field(default_factory=Counter)
    minor_safe_lists_by_path: Counter[str] = field(default_factory=Counter)
    """Lists that had to be minor-safe (minor or unknown age), by answer path; a shed or
    failed answer's path is its fallback's (``shed``, ``redis_down``...)."""
    minor_safe_lists_by_arm: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    def add(self, record: ServedRecord, age: int | None,
            meta: Mapping[str, Mapping[str, str] | None]) -> list[Finding]:
        who = audience(age)
        self.lists += 1
        self.lists_by_audience[who] += 1
        if who != ADULT:
            self.minor_safe_lists_by_path[record.fallback or record.path] += 1
            self.minor_safe_lists_by_arm[record.arm] += 1
        found = judge(record, age, meta)
        self.findings.extend(found)
        return found

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.audience == MINOR]

    @property
    def policy_breaches(self) -> list[Finding]:
        return [f for f in self.findings if f.audience == UNKNOWN_AGE]

    @property
    def passed(self) -> bool:
        return not self.findings

    def summary(self) -> dict:
        """JSON-ready numbers (findings capped at 100, the count is whole)."""
        return {
            "lists": self.lists, "lists_by_audience": dict(self.lists_by_audience),
            "minor_safe_lists_by_path": dict(sorted(self.minor_safe_lists_by_path.items())),
            "minor_safe_lists_by_arm": dict(sorted(self.minor_safe_lists_by_arm.items())),
            "violations": len(self.violations), "policy_breaches": len(self.policy_breaches),
            "reasons": dict(Counter(f.reason for f in self.findings)),
            "findings": [vars(f) for f in self.findings[:100]],
            "passed": self.passed,
        }


def audit(records: Iterable[ServedRecord], ages: Mapping[int, int | None],
          meta: Mapping[str, Mapping[str, str] | None]) -> SafetyAudit:
    """Judge every record with the user's age (missing: unknown) and the movies' metadata."""
    result = SafetyAudit()
    for record in records:
        result.add(record, ages.get(record.user_id), meta)
    return result
