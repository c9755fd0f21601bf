"""The fairness audit's read of the event log: one pass feeds the online evaluation's
join twice (lists by age group and by gender) and counts what the providers' measures
need (each list's movies by rank, the films users started). Adapter over Kafka."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from movierec.wire import LineParser, Recommendation, Rejection, Watch
from online_eval.join import OutcomeJoin
from online_eval.source import read_topic


@dataclass
class FairnessRead:
    by_age: OutcomeJoin
    by_gender: OutcomeJoin
    lists: list[tuple[str, ...]] = field(default_factory=list)
    started: Counter[str] = field(default_factory=Counter)
    """Films started (a watch line of minute 0) per movie: the demand."""
    lines: int = 0
    rejected: int = 0
    notes: list[str] = field(default_factory=list)


def read_fairness(bootstrap: str, topic: str, by_age: OutcomeJoin, by_gender: OutcomeJoin, *,
                  rating_scale: int, timeout_s: float, idle_s: float,
                  written_since_ms: int | None = None) -> FairnessRead:
    parser = LineParser(rating_scale)
    out = FairnessRead(by_age, by_gender)

    def feed(value: bytes, _written_ms: int) -> None:
        event = parser.parse(value)
        if isinstance(event, Rejection):
            out.rejected += 1
            return
        by_age.add(event)
        by_gender.add(event)
        if isinstance(event, Recommendation) and event.status == 200 and event.items:
            out.lists.append(tuple(event.items))
        elif isinstance(event, Watch) and event.minute == 0:
            out.started[event.movie_id] += 1

    out.lines, out.notes = read_topic(bootstrap, topic, feed, timeout_s=timeout_s,
                                      idle_s=idle_s, written_since_ms=written_since_ms)
    return out


def joins(age_of: Mapping[int, str], gender_of: Mapping[int, str],
          window_min: float) -> tuple[OutcomeJoin, OutcomeJoin]:
    """The two joins, with the take window of ``movierec eval online`` (minutes)."""
    window = timedelta(minutes=window_min)
    follow_up = max(window, timedelta(hours=4))
    return (OutcomeJoin(age_of, window=window, follow_up=follow_up),
            OutcomeJoin(gender_of, window=window, follow_up=follow_up))
