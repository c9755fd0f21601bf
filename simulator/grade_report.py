"""The grade report: the numbers the course grades, as JSON and as a table.

Built by ``simulator.grade.GradeAccumulator``; see that module for the definitions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

COURSE_SUCCESSES_24H = 2000
COURSE_PERSONALIZED = 0.10
COURSE_AVAILABILITY = 0.70
COURSE_AVAILABILITY_BONUS = 0.99


@dataclass(frozen=True, slots=True)
class Downtime:
    """Consecutive down minutes: ``start`` of the first, ``end`` just after the last."""

    start: datetime
    end: datetime
    minutes: int


@dataclass(slots=True)
class GradeReport:
    """What the course grades, for one window of requests. Shares are fractions (0..1),
    ``None`` where there is nothing to divide by; latencies are whole milliseconds."""

    deadline_ms: int
    down_threshold: float
    server: str | None
    window_start: datetime | None
    window_end: datetime | None
    window_hours: float  # last minus first event time
    total_requests: int
    successful: int  # status 200, at most 20 ids, within the deadline
    failed: dict[str, int]  # by CATEGORIES
    success_share: float | None
    answered_within_deadline: int  # an HTTP answer (200 or malformed) within the deadline
    within_deadline_share: float | None  # of all requests
    personalized: int  # successes whose list is not the hour's common list
    personalized_share: float | None  # of all requests
    distinct_lists: int  # distinct successful lists (a lower bound when capped)
    distinct_lists_capped: bool
    latency_ms: dict[str, int | None]  # p50, p95, p99 (nearest rank), max (exact)
    latency_samples: int
    observed_minutes: int  # minutes with at least one request
    down_minutes: int  # observed minutes with success share below down_threshold
    availability: float | None  # 1 - down_minutes / observed_minutes
    request_availability: float | None  # successful / total_requests
    downtime: list[Downtime]
    successes_last_24h: int  # in the 1,440 minutes ending with the last event's minute
    successes_per_24h: float | None  # successful / window_hours * 24
    other_lines: int  # lines that are not (readable) recommendation requests
    filtered_out: int  # requests outside the server or time filter
    notes: list[str] = field(default_factory=list)

    @property
    def malformed(self) -> int:
        return self.failed["malformed"]

    @property
    def late(self) -> int:
        return self.failed["late"]

    @property
    def checks(self) -> dict[str, bool | None]:
        """The course's thresholds: met, missed, or None without data. Successes in 24 h
        are the last 24 h's count when the window spans a day, else the extrapolated rate."""
        day = self.successes_last_24h if self.window_hours >= 24 else self.successes_per_24h
        return {
            "successes_24h": _at_least(day, COURSE_SUCCESSES_24H),
            "personalized": _at_least(self.personalized_share, COURSE_PERSONALIZED),
            "availability": _at_least(self.availability, COURSE_AVAILABILITY),
            "availability_bonus": _at_least(self.availability, COURSE_AVAILABILITY_BONUS),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO-8601 text, downtime as a list of objects, plus checks."""
        data = asdict(self)
        for key in ("window_start", "window_end"):
            data[key] = _iso(data[key])
        data["downtime"] = [
            {"start": _iso(d.start), "end": _iso(d.end), "minutes": d.minutes}
            for d in self.downtime
        ]
        data["malformed"] = self.malformed
        data["late"] = self.late
        data["checks"] = self.checks
        return data

    def format_table(self) -> str:
        """A human-readable summary, one figure per line."""
        lat = self.latency_ms
        window = f"{_iso(self.window_start)} .. {_iso(self.window_end)}"
        rows = [
            ("window", f"{window} ({self.window_hours:.2f} h)"),
            ("server", self.server or "all"),
            ("deadline", f"{self.deadline_ms} ms"),
            ("requests", f"{self.total_requests}"),
            ("successful", f"{self.successful}  {_pct(self.success_share)}"),
            ("answered within deadline",
             f"{self.answered_within_deadline}  {_pct(self.within_deadline_share)}"),
            *((f"failed: {c}", f"{n}") for c, n in self.failed.items()),
            ("personalized", f"{self.personalized}  {_pct(self.personalized_share)} of all"),
            ("distinct lists", f"{self.distinct_lists}{'+' if self.distinct_lists_capped else ''}"),
            ("latency ms (nearest rank)", f"p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}"
             f"  max {lat['max']}  ({self.latency_samples} samples)"),
            ("availability (minutes)", f"{_pct(self.availability)}  ({self.observed_minutes} "
             f"observed, {self.down_minutes} down, threshold {_pct(self.down_threshold)})"),
            ("availability (requests)", _pct(self.request_availability)),
            ("successes", f"{self.successful} in window, {self.successes_last_24h} in last 24 h,"
             f" {_num(self.successes_per_24h)} per 24 h extrapolated"),
            *(("downtime", f"{_iso(d.start)} .. {_iso(d.end)}  {d.minutes} min")
              for d in self.downtime),
            *((f"course: {_CHECK_LABELS[k]}", _verdict(v)) for k, v in self.checks.items()),
            ("other lines", f"{self.other_lines}  (filtered out: {self.filtered_out})"),
            *(("note", note) for note in self.notes),
        ]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


_CHECK_LABELS = {
    "successes_24h": f"successes per 24 h >= {COURSE_SUCCESSES_24H:,}",
    "personalized": f"personalized >= {COURSE_PERSONALIZED:.0%}",
    "availability": f"availability >= {COURSE_AVAILABILITY:.0%}",
    "availability_bonus": f"availability >= {COURSE_AVAILABILITY_BONUS:.0%} (bonus)",
}


def _at_least(value: float | None, threshold: float) -> bool | None:
    return None if value is None else value >= threshold


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat(timespec="seconds")


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f} %"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]
