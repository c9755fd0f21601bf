"""One step of the retraining loop: read the journal, do the next action, journal it.

The runner knows the order of things and nothing about Kafka, Redis or files: training,
the canary's numbers and the effects on the registry and the experiment reach it through
``Ports`` (callables), so the sequence, the crash-and-restart behaviour and the decisions
are tested with plain functions (``tests/unit/test_loop_runner.py``), and the CLI wires
the real adapters (``recommender.loop.adapters``).

``step`` does exactly one action and returns what it did; ``run_until_idle`` repeats it
until the loop waits (for a trigger, or for the canary's next look). A crash anywhere
leaves the journal at the last completed stage, and the next ``step`` redoes the action
that follows it (``recommender.loop.cycle``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from online_eval.sequential import (
    ArmHealth,
    ArmSample,
    Decision,
    Guardrails,
    Outcome,
    SequentialSettings,
    decide,
)
from recommender.loop.cycle import Action, Cycle, Result, Stage, next_action, open_cycle
from recommender.loop.effects import CanaryBlocked
from recommender.loop.journal import Journal
from recommender.loop.triggers import Trigger

log = logging.getLogger(__name__)

RESULT_OF = {Outcome.PROMOTE: Result.PROMOTED, Outcome.ROLL_BACK: Result.ROLLED_BACK,
             Outcome.KEEP_CHAMPION: Result.KEPT_CHAMPION}


@dataclass(frozen=True)
class CanaryView:
    """The canary's numbers since it began: per-user take rates and serving health of
    the champion arm and the challenger arm."""

    champion: ArmSample
    challenger: ArmSample
    health: tuple[ArmHealth, ArmHealth]


@dataclass(frozen=True)
class Trained:
    """What training gave: the challenger version (None: the gate kept the champion)
    and the numbers to journal."""

    challenger: str | None
    numbers: dict = field(default_factory=dict)


@dataclass
class Ports:
    """The world as the runner sees it (each callable may raise; see ``step``)."""

    champion: Callable[[], str | None]
    train: Callable[[str], Trained]
    start_canary: Callable[[str, str, float], datetime | None]
    """Start (or find started) the cycle's canary; returns when it began serving, which
    is earlier than now when a crash came between the start and its journal entry."""
    look: Callable[[Cycle], CanaryView]
    promote: Callable[[Cycle, str], None]
    retire: Callable[[Cycle, Result, str, dict], None]
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


@dataclass(frozen=True)
class CycleSettings:
    """``share``: the canary's share of users; ``max_canary``: the longest a canary runs
    before an inconclusive one keeps the champion (wall time)."""

    share: float = 0.1
    max_canary: timedelta = timedelta(hours=6)
    sequential: SequentialSettings = SequentialSettings()
    guardrails: Guardrails = Guardrails()


def new_cycle_id(number: int, now: datetime) -> str:
    """``<number>-<UTC time>``: ordered, unique even when two cycles open in one tick."""
    return f"{number:04d}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class _Stamped:
    """The journal with every entry stamped by the ports' clock (one clock for the
    decisions and the timeline: the maximum duration is measured on it)."""

    def __init__(self, journal: Journal, now: Callable[[], datetime]) -> None:
        self.journal, self.now = journal, now

    def append(self, cycle: str, stage: Stage, **fields: object) -> dict:
        return self.journal.append(cycle, stage, at=self.now(), **fields)


def step(journal: Journal, ports: Ports, settings: CycleSettings,
         trigger: Trigger | None = None) -> Action:
    """Do the next action of the open cycle, or open one for ``trigger``; returns the
    action done (``WAIT``: nothing to do). Training that raises ends the cycle as
    ``failed`` with the error; any other exception propagates with the journal at the
    last completed stage, so the next call redoes the action."""
    cycles = journal.cycles()
    cycle = open_cycle(cycles)
    action = next_action(cycle)
    out = _Stamped(journal, ports.now)
    if action is Action.WAIT:
        if trigger is not None:
            log_time = None if trigger.log_time is None else trigger.log_time.isoformat()
            out.append(new_cycle_id(len(cycles) + 1, ports.now()), Stage.TRIGGERED,
                       trigger=trigger.kind, reason=trigger.reason, numbers=trigger.numbers,
                       log_time=log_time, champion=ports.champion())
            log.info("cycle opened: %s (%s)", trigger.kind, trigger.reason)
        return action
    assert cycle is not None
    match action:
        case Action.TRAIN:
            _train(out, ports, cycle)
        case Action.REFUSE:
            out.append(cycle.id, Stage.DECIDED, result=Result.GATE_REFUSED.value,
                           reason="the offline gate kept the champion")
        case Action.START_CANARY:
            assert cycle.challenger is not None
            if ports.champion() is None:  # a crash between "trained" and its decision
                out.append(cycle.id, Stage.DECIDED, result=Result.PROMOTED.value,
                           reason="no champion yet: the gate's choice serves at once")
                return action
            try:
                began = ports.start_canary(cycle.id, cycle.challenger, settings.share)
            except CanaryBlocked as exc:
                log.warning("%s", exc)
                return Action.WAIT
            since = {} if began is None else {"since": began.isoformat()}
            out.append(cycle.id, Stage.CANARY, experiment=f"canary-{cycle.id}",
                           share=settings.share, challenger=cycle.challenger, **since)
        case Action.WATCH:
            _look(out, ports, settings, cycle)
        case Action.CARRY_OUT:
            _carry_out(out, ports, cycle)
    return action


def _train(journal: _Stamped, ports: Ports, cycle: Cycle) -> None:
    try:
        trained = ports.train(cycle.id)
    except Exception as exc:  # any failure ends the cycle as failed, journaled
        log.exception("cycle %s: training failed", cycle.id)
        journal.append(cycle.id, Stage.DECIDED, result=Result.FAILED.value,
                       reason=f"training failed: {type(exc).__name__}: {exc}")
        return
    journal.append(cycle.id, Stage.TRAINED, challenger=trained.challenger,
                   numbers=trained.numbers)
    if trained.challenger is not None and ports.champion() is None:
        # nothing serves yet: there is no one to compare with, and no canary to route
        journal.append(cycle.id, Stage.DECIDED, result=Result.PROMOTED.value,
                       reason="no champion yet: the gate's choice serves at once")


def _look(journal: _Stamped, ports: Ports, settings: CycleSettings,
          cycle: Cycle) -> Decision | None:
    assert cycle.canary_started is not None and cycle.share is not None
    expired = ports.now() - cycle.canary_started >= settings.max_canary
    try:
        view = ports.look(cycle)
    except Exception as exc:
        if not expired:
            raise  # the service logs it and looks again at its next check
        # a canary that cannot be read must still end: unjudged, the champion stays
        reason = f"inconclusive at the maximum duration: the canary could not be read ({exc})"
        journal.append(cycle.id, Stage.DECIDED, result=Result.KEPT_CHAMPION.value,
                       reason=reason, numbers={})
        return None
    decision = decide(view.champion, view.challenger, settings=settings.sequential,
                      shares=(1 - cycle.share, cycle.share), health=view.health,
                      limits=settings.guardrails, expired=expired, previous_p=cycle.last_p)
    ev = decision.evidence
    numbers = {"users": [view.champion.n, view.challenger.n],
               "take_rate": [round(view.champion.mean, 5), round(view.challenger.mean, 5)],
               "health": [asdict(h) for h in view.health], "srm_p": decision.srm_p}
    if ev is not None:
        # an unbounded interval (no variance yet) is written as null: JSON has no infinity
        numbers |= {"diff": ev.diff, "interval": [x if math.isfinite(x) else None
                                                  for x in (ev.low, ev.high)]}
    journal.append(cycle.id, Stage.LOOKED, outcome=decision.outcome.value,
                   reason=decision.reason, numbers=numbers,
                   p_value=ev.p_value if ev is not None else cycle.last_p)
    if decision.outcome is not Outcome.CONTINUE:
        journal.append(cycle.id, Stage.DECIDED, result=RESULT_OF[decision.outcome].value,
                       reason=decision.reason, numbers=numbers)
        log.info("cycle %s decided: %s (%s)", cycle.id, decision.outcome, decision.reason)
    return decision


def _carry_out(journal: _Stamped, ports: Ports, cycle: Cycle) -> None:
    assert cycle.result is not None
    decided = cycle.entries[-1]
    if cycle.result is Result.PROMOTED:
        assert cycle.challenger is not None
        ports.promote(cycle, cycle.reason)
    elif cycle.result in (Result.ROLLED_BACK, Result.KEPT_CHAMPION) and cycle.challenger:
        ports.retire(cycle, cycle.result, cycle.reason, dict(decided.get("numbers", {})))
    journal.append(cycle.id, Stage.CLOSED, result=cycle.result.value,
                   champion=ports.champion())


def run_until_idle(journal: Journal, ports: Ports, settings: CycleSettings,
                   trigger: Trigger | None = None, *, max_steps: int = 100) -> list[Action]:
    """Step until the loop waits: no open cycle, a canary look that continues, or a
    canary blocked by another experiment. Returns the actions done."""
    done: list[Action] = []
    for _ in range(max_steps):
        before = len(journal.entries())
        action = step(journal, ports, settings, trigger if not done else None)
        done.append(action)
        if action is Action.WAIT and len(journal.entries()) == before:
            break
        if action is Action.WATCH:
            cycle = open_cycle(journal.cycles())
            if cycle is not None and cycle.stage is Stage.LOOKED:
                break  # the canary goes on: look again later
    return done
