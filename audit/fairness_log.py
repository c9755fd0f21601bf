"""The fairness audit's read of the event log: one pass feeds the online evaluation's
join twice (lists by age group and by gender), a third time by experiment arm when an
experiment runs, and counts what the providers' measures need (each list's movies by
rank, per arm too, and the films users started). Adapter over Kafka."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from movierec.wire import LineParser, Recommendation, Rejection, Watch
from online_eval.join import OutcomeJoin
from online_eval.source import read_topic
from recommender.serving.experiments import Experiment, arm_at, bucket


class ArmOf(Mapping[int, str]):
    """user id -> the arm ``experiment`` assigns them (``experiments.bucket``, the
    serving process's own sticky hash), whatever the time: the audit's window is meant
    to lie inside the experiment's (say ``--since-min`` no longer than it has run)."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.known: dict[int, str] = {}

    def __getitem__(self, user: int) -> str:
        if user not in self.known:
            self.known[user] = arm_at(self.experiment.arms, bucket(user, self.experiment.id)).name
        return self.known[user]

    def __iter__(self) -> Iterator[int]:
        return iter(self.known)

    def __len__(self) -> int:
        return len(self.known)


@dataclass
class FairnessRead:
    by_age: OutcomeJoin
    by_gender: OutcomeJoin
    lists: list[tuple[str, ...]] = field(default_factory=list)
    started: Counter[str] = field(default_factory=Counter)
    """Films started (a watch line of minute 0) per movie: the demand."""
    by_arm: OutcomeJoin | None = None
    arm_lists: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    """The lists of each arm, when ``by_arm`` is given."""
    lines: int = 0
    rejected: int = 0
    notes: list[str] = field(default_factory=list)


def read_fairness(bootstrap: str, topic: str, by_age: OutcomeJoin, by_gender: OutcomeJoin, *,
                  rating_scale: int, timeout_s: float, idle_s: float,
                  written_since_ms: int | None = None,
                  by_arm: OutcomeJoin | None = None) -> FairnessRead:
    """One pass over ``topic``; ``by_arm`` (a join whose ``arm_of`` is an ``ArmOf``)
    also splits outcomes and lists by experiment arm."""
    parser = LineParser(rating_scale)
    out = FairnessRead(by_age, by_gender, by_arm=by_arm)

    def feed(value: bytes, _written_ms: int) -> None:
        event = parser.parse(value)
        if isinstance(event, Rejection):
            out.rejected += 1
            return
        by_age.add(event)
        by_gender.add(event)
        if by_arm is not None:
            by_arm.add(event)
        if isinstance(event, Recommendation) and event.status == 200 and event.items:
            out.lists.append(tuple(event.items))
            if by_arm is not None:
                arm = by_arm.arm_of[event.user_id]
                out.arm_lists.setdefault(arm, []).append(tuple(event.items))
        elif isinstance(event, Watch) and event.minute == 0:
            out.started[event.movie_id] += 1

    out.lines, out.notes = read_topic(bootstrap, topic, feed, timeout_s=timeout_s,
                                      idle_s=idle_s, written_since_ms=written_since_ms)
    return out


def joins(age_of: Mapping[int, str], gender_of: Mapping[int, str],
          window_min: float) -> tuple[OutcomeJoin, OutcomeJoin]:
    """The two joins, with the take window of ``movierec eval online`` (minutes)."""
    return join(age_of, window_min), join(gender_of, window_min)


def join(group_of: Mapping[int, str], window_min: float) -> OutcomeJoin:
    """One join by ``group_of``, with the take window of ``movierec eval online``."""
    window = timedelta(minutes=window_min)
    return OutcomeJoin(group_of, window=window, follow_up=max(window, timedelta(hours=4)))
