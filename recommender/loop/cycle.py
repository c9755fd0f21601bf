"""The retraining cycle as a state machine over its journal. Pure: journal entries in, the
cycle's state and the next action out; the loop's adapters carry the actions out.

A cycle moves through these stages, each journaled (``recommender.loop.journal``) *after*
its effect is done and durable::

    triggered ──► trained ──► canary ──► decided ──► closed
        │            │  (gate refused)     ▲   │
        │            └────────────────────────┘ (outcome: gate_refused)
        └─ (a crash while training: the next start trains again)

- ``triggered``: why the cycle runs (schedule, drift, decay, by hand), with the numbers.
- ``trained``: the pipeline ran on a snapshot; either a challenger version was
  registered (the gate preferred it over the champion) or the gate kept the champion.
- ``canary``: the experiment routing ``share`` of users to the challenger was written.
- ``looked`` entries (not a stage): each look at the canary's numbers, for the timeline.
- ``decided``: the outcome (promote, roll back, keep the champion) and its reason.
- ``closed``: the outcome is carried out: the alias moved or the arm is gone.

Crash safety comes from two properties. Every action is idempotent (writing the same
experiment again, promoting the version the alias already holds, stopping a stopped
experiment all change nothing), and a stage is journaled only after its action, so after
a crash at any point ``next_action`` of the journal names an action that is safe to redo.
The alias only ever moves from one complete version to another (``Registry.promote``), so
the service always has a champion.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from movierec.errors import MovierecError


class Stage(enum.StrEnum):
    TRIGGERED = "triggered"
    TRAINED = "trained"
    CANARY = "canary"
    LOOKED = "looked"
    DECIDED = "decided"
    CLOSED = "closed"


class Action(enum.StrEnum):
    """What the loop must do next for the open cycle (``WAIT``: no open cycle)."""

    WAIT = "wait"
    TRAIN = "train"
    START_CANARY = "start_canary"
    WATCH = "watch"
    REFUSE = "refuse"
    """The gate kept the champion: decide ``gate_refused`` (nothing to carry out)."""
    CARRY_OUT = "carry_out"


class Result(enum.StrEnum):
    """How a cycle ended."""

    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    KEPT_CHAMPION = "kept_champion"
    GATE_REFUSED = "gate_refused"
    FAILED = "failed"


ORDER = (Stage.TRIGGERED, Stage.TRAINED, Stage.CANARY, Stage.DECIDED, Stage.CLOSED)
"""The stages in the order a cycle passes them; ``looked`` may repeat inside ``canary``."""


class JournalError(MovierecError, ValueError):
    """A journal whose entries do not form a valid history (an entry out of order)."""


@dataclass
class Cycle:
    """One cycle as its journal tells it: ``stage`` is the last stage reached."""

    id: str
    stage: Stage
    trigger: str
    started: datetime
    log_time: datetime | None = None
    """The log's latest event time when the cycle began (the schedule counts from it)."""
    challenger: str | None = None
    champion: str | None = None
    experiment: str | None = None
    canary_started: datetime | None = None
    share: float | None = None
    looks: int = 0
    last_p: float = 1.0
    result: Result | None = None
    reason: str = ""
    entries: list[dict] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.stage is not Stage.CLOSED


def _time(entry: Mapping) -> datetime:
    return datetime.fromisoformat(str(entry["at"]))


def fold(entries: Iterable[Mapping]) -> list[Cycle]:
    """Every cycle of the journal, oldest first, each as far as its entries go.

    ``JournalError`` when an entry names an unknown cycle, skips a stage, goes back, or
    opens a cycle while another is open: the journal is written by one loop at a time
    (``recommender.loop.lock``), so any of these means it was edited or corrupted."""
    cycles: list[Cycle] = []
    by_id: dict[str, Cycle] = {}
    for entry in entries:
        stage = Stage(entry["stage"])
        cid = str(entry["cycle"])
        if stage is Stage.TRIGGERED:
            if cid in by_id or (cycles and cycles[-1].open):
                raise JournalError(f"cycle {cid} opened while {cycles[-1].id} is open"
                                   if cycles and cycles[-1].open else f"cycle {cid} opened twice")
            log_time = entry.get("log_time")
            cycle = Cycle(cid, stage, str(entry.get("trigger", "")), _time(entry),
                          log_time=None if log_time is None else datetime.fromisoformat(log_time),
                          champion=entry.get("champion"))
            by_id[cid] = cycle
            cycles.append(cycle)
        else:
            cycle = _advance(by_id, cid, stage, entry)
        cycle.entries.append(dict(entry))
    return cycles


def _advance(by_id: dict[str, Cycle], cid: str, stage: Stage, entry: Mapping) -> Cycle:
    cycle = by_id.get(cid)
    if cycle is None:
        raise JournalError(f"entry {stage} of unknown cycle {cid}")
    if stage is Stage.LOOKED:
        if cycle.stage not in (Stage.CANARY, Stage.LOOKED):
            raise JournalError(f"cycle {cid}: a canary look in stage {cycle.stage}")
        cycle.looks += 1
        cycle.last_p = min(cycle.last_p, float(entry.get("p_value", 1.0)))
        cycle.stage = Stage.LOOKED
        return cycle
    current = Stage.CANARY if cycle.stage is Stage.LOOKED else cycle.stage
    allowed = {ORDER[ORDER.index(current) + 1]} if current is not Stage.CLOSED else set()
    if current is Stage.TRAINED:
        allowed.add(Stage.DECIDED)  # the gate kept the champion: no canary
    if current is Stage.TRIGGERED:
        allowed.add(Stage.DECIDED)  # training failed: the cycle ends as failed
    if stage not in allowed:
        raise JournalError(f"cycle {cid}: {stage} cannot follow {cycle.stage}")
    cycle.stage = stage
    if stage is Stage.TRAINED:
        cycle.challenger = entry.get("challenger")
    elif stage is Stage.CANARY:
        cycle.experiment = str(entry["experiment"])
        cycle.share = float(entry["share"])
        # "since": when the canary began serving (a crash may have come between its
        # start and this entry); older journals have only the entry's time
        cycle.canary_started = (datetime.fromisoformat(str(entry["since"])) if entry.get("since")
                                else _time(entry))
    elif stage is Stage.DECIDED:
        cycle.result = Result(entry["result"])
        cycle.reason = str(entry.get("reason", ""))
    return cycle


def open_cycle(cycles: list[Cycle]) -> Cycle | None:
    """The cycle still in progress, if any (at most one: ``fold`` checks)."""
    return cycles[-1] if cycles and cycles[-1].open else None


def next_action(cycle: Cycle | None) -> Action:
    """What to do for ``cycle`` (the open one) now; each action is safe to repeat.

    A cycle found at ``triggered`` after a restart crashed while training: it trains
    again (a version registered by the crashed run and never journaled stays in the
    registry unreferenced, as any rejected candidate does). At ``trained`` with no
    challenger, the gate kept the champion, and the cycle is decided at once."""
    if cycle is None or not cycle.open:
        return Action.WAIT
    match cycle.stage:
        case Stage.TRIGGERED:
            return Action.TRAIN
        case Stage.TRAINED:
            return Action.START_CANARY if cycle.challenger else Action.REFUSE
        case Stage.CANARY | Stage.LOOKED:
            return Action.WATCH
        case Stage.DECIDED:
            return Action.CARRY_OUT
    raise AssertionError(cycle.stage)  # pragma: no cover - CLOSED returned above


def counts(cycles: Iterable[Cycle]) -> dict[str, int]:
    """Closed cycles by result, for ``loop status`` and the metrics."""
    out: dict[str, int] = {r.value: 0 for r in Result}
    for c in cycles:
        if c.stage is Stage.CLOSED and c.result is not None:
            out[c.result.value] += 1
    return out
