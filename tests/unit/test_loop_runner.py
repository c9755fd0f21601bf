"""The loop's runner over a fake world: a promotion, a rollback, a guardrail stop, a gate
refusal, a failed training, an inconclusive canary, and a crash before and after every
effect, each restarted from the journal alone to the same end state."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from online_eval.sequential import ArmHealth, ArmSample
from recommender.loop.cycle import Action, Cycle, Result, Stage, counts, open_cycle
from recommender.loop.effects import CanaryBlocked
from recommender.loop.journal import Journal
from recommender.loop.runner import CanaryView, CycleSettings, Ports, Trained, run_until_idle
from recommender.loop.triggers import Trigger

T0 = datetime(2026, 12, 7, tzinfo=UTC)
TRIGGER = Trigger("manual", "a test", {})
HEALTHY = ArmHealth(requests=500, fallbacks=5, p99_ms=30, plays=100, cost=50)


class Crash(BaseException):
    """A SIGKILL stand-in: not an Exception, so nothing inside the runner catches it."""


@dataclass
class World:
    """The registry's alias, the experiment file and the canary's users, as plain data."""

    champion: str | None = "v1"
    challenger: str | None = "v2"
    experiment: str | None = None
    canary_began: datetime | None = None
    rates: tuple[float, float] = (0.2, 0.3)
    health: ArmHealth = HEALTHY
    fail_training: bool = False
    blocked: bool = False
    clock: datetime = T0
    users_per_look: int = 400
    looks: int = 0
    canary_records: dict[str, dict] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    crash_at: tuple[str, str] | None = None  # (port, "before" | "after")

    def _maybe_crash(self, port: str, when: str) -> None:
        if self.crash_at == (port, when):
            self.crash_at = None
            raise Crash(f"{when} {port}")

    def ports(self) -> Ports:
        def wrap(name, fn):
            def called(*args):
                self.calls.append(name)
                self._maybe_crash(name, "before")
                out = fn(*args)
                self._maybe_crash(name, "after")
                return out
            return called
        return Ports(champion=lambda: self.champion, train=wrap("train", self._train),
                     start_canary=wrap("start_canary", self._start),
                     look=wrap("look", self._look), promote=wrap("promote", self._promote),
                     retire=wrap("retire", self._retire), now=lambda: self.clock)

    def _train(self, cycle: str) -> Trained:
        if self.fail_training:
            raise RuntimeError("no events in the snapshot")
        return Trained(self.challenger, {"ndcg@20": 0.1})

    def _start(self, cycle: str, challenger: str, share: float) -> datetime | None:
        if self.blocked:
            raise CanaryBlocked("experiment ab-1 is running")
        if self.experiment != f"canary-{cycle}":  # started once: a redo finds it
            self.experiment, self.canary_began = f"canary-{cycle}", self.clock
        self.clock += timedelta(minutes=1)  # the journal entry comes later than the start
        return self.canary_began

    def _look(self, cycle: Cycle) -> CanaryView:
        self.looks += 1
        self.clock += timedelta(minutes=10)
        rng = np.random.default_rng(self.looks)
        n = self.users_per_look * self.looks
        a = rng.binomial(4, self.rates[0], size=int(n * 0.9)) / 4
        b = rng.binomial(4, self.rates[1], size=n - int(n * 0.9)) / 4
        return CanaryView(ArmSample.of(a), ArmSample.of(b), (HEALTHY, self.health))

    def _promote(self, cycle: Cycle, reason: str) -> None:
        self.champion = cycle.challenger
        self.experiment = None
        self.canary_records[str(cycle.challenger)] = {"result": "promoted"}

    def _retire(self, cycle: Cycle, result: Result, reason: str, numbers: dict) -> None:
        self.experiment = None
        self.canary_records[str(cycle.challenger)] = {"result": result.value, "reason": reason}


def drive(journal: Journal, world: World, settings: CycleSettings | None = None,
          rounds: int = 60) -> Cycle:
    """Run the loop, restarting after each crash, until the cycle closes."""
    trigger: Trigger | None = TRIGGER
    for _ in range(rounds):
        with contextlib.suppress(Crash):  # the process died; a new one starts from the journal
            run_until_idle(journal, world.ports(), settings or CycleSettings(), trigger)
        trigger = None
        cycles = journal.cycles()
        if cycles and open_cycle(cycles) is None:
            return cycles[-1]
    raise AssertionError(f"the cycle did not close: {journal.entries()[-1]}")


def test_a_better_challenger_is_promoted_after_a_canary(tmp_path: Path) -> None:
    world = World(rates=(0.2, 0.3))
    cycle = drive(Journal(tmp_path / "j.jsonl"), world)
    assert cycle.result is Result.PROMOTED and "challenger better" in cycle.reason
    assert world.champion == "v2" and world.experiment is None
    assert cycle.looks >= 1 and cycle.entries[-1]["champion"] == "v2"
    assert [e["stage"] for e in cycle.entries][:3] == ["triggered", "trained", "canary"]


def test_a_worse_challenger_is_rolled_back_and_marked(tmp_path: Path) -> None:
    world = World(rates=(0.3, 0.15))
    cycle = drive(Journal(tmp_path / "j.jsonl"), world)
    assert cycle.result is Result.ROLLED_BACK and "challenger worse" in cycle.reason
    assert world.champion == "v1" and world.experiment is None
    assert world.canary_records["v2"]["result"] == "rolled_back"


def test_a_guardrail_stops_the_canary_at_the_first_look(tmp_path: Path) -> None:
    world = World(rates=(0.2, 0.4), health=ArmHealth(requests=200, errors=20, p99_ms=30))
    cycle = drive(Journal(tmp_path / "j.jsonl"), world)
    assert cycle.result is Result.ROLLED_BACK and cycle.reason.startswith("guardrail")
    assert world.looks == 1 and world.champion == "v1"
    decided = next(e for e in cycle.entries if e["stage"] == "decided")
    assert decided["numbers"]["health"][1]["errors"] == 20


def test_an_inconclusive_canary_keeps_the_champion_at_the_maximum_duration(tmp_path: Path) -> None:
    world = World(rates=(0.2, 0.2))
    settings = CycleSettings(max_canary=timedelta(minutes=60))
    cycle = drive(Journal(tmp_path / "j.jsonl"), world, settings)
    assert cycle.result is Result.KEPT_CHAMPION and "maximum duration" in cycle.reason
    assert world.looks == 7 and world.champion == "v1" and world.experiment is None


def test_a_gate_refusal_and_a_failed_training_end_without_touching_serving(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    world = World(challenger=None)
    assert drive(journal, world).result is Result.GATE_REFUSED
    failing = World(fail_training=True)
    cycle = drive(journal, failing)
    assert cycle.result is Result.FAILED and "no events in the snapshot" in cycle.reason
    assert world.calls == ["train"] and failing.calls == ["train"]
    assert counts(journal.cycles())["gate_refused"] == 1


def test_with_no_champion_yet_the_gates_choice_serves_at_once(tmp_path: Path) -> None:
    world = World(champion=None)
    cycle = drive(Journal(tmp_path / "j.jsonl"), world)
    assert cycle.result is Result.PROMOTED and world.champion == "v2"
    assert "start_canary" not in world.calls


def test_a_blocked_canary_waits_without_journaling_and_starts_when_free(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    world = World(blocked=True)
    done = run_until_idle(journal, world.ports(), CycleSettings(), TRIGGER)
    assert done[-1] is Action.WAIT and journal.cycles()[-1].stage is Stage.TRAINED
    world.blocked = False
    assert drive(journal, world).result is Result.PROMOTED


PORTS = ["train", "start_canary", "look", "promote"]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("port", PORTS)
def test_a_crash_at_any_stage_restarts_to_the_same_end(tmp_path: Path, port: str, when: str) -> None:
    world = World(rates=(0.2, 0.3), crash_at=(port, when))
    cycle = drive(Journal(tmp_path / "j.jsonl"), world)
    assert world.crash_at is None, "the crash happened"
    assert cycle.result is Result.PROMOTED
    assert world.champion == "v2" and world.experiment is None
    # effects done before the crash are redone, never skipped: each ran to completion
    assert world.calls.count(port) == (2 if port != "look" else world.calls.count("look"))


def test_after_a_crash_past_the_canarys_start_its_users_count_from_the_real_start(
        tmp_path: Path) -> None:
    world = World(rates=(0.2, 0.3), crash_at=("start_canary", "after"))
    journal = Journal(tmp_path / "j.jsonl")
    drive(journal, world)
    began = [e for e in journal.entries() if e["stage"] == "canary"]
    assert len(began) == 1 and datetime.fromisoformat(began[0]["since"]) == T0
    assert journal.cycles()[-1].canary_started == T0 < datetime.fromisoformat(began[0]["at"])


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_while_retiring_still_leaves_the_champion_and_no_arm(tmp_path: Path, when: str) -> None:
    world = World(rates=(0.3, 0.15), crash_at=("retire", when))
    cycle = drive(Journal(tmp_path / "j.jsonl"), world)
    assert cycle.result is Result.ROLLED_BACK and world.calls.count("retire") == 2
    assert world.champion == "v1" and world.experiment is None


def test_a_canary_that_cannot_be_read_ends_at_the_maximum_duration(tmp_path: Path) -> None:
    world = World()
    journal = Journal(tmp_path / "j.jsonl")
    ports = world.ports()

    def unreadable(cycle: Cycle) -> CanaryView:
        world.clock += timedelta(minutes=30)
        raise RuntimeError("topic not found")

    ports.look = unreadable
    settings = CycleSettings(max_canary=timedelta(hours=1))
    with pytest.raises(RuntimeError, match="topic not found"):
        run_until_idle(journal, ports, settings, TRIGGER)
    with pytest.raises(RuntimeError):
        run_until_idle(journal, ports, settings)
    run_until_idle(journal, ports, settings)  # an hour has passed: it ends
    cycle = journal.cycles()[-1]
    assert cycle.result is Result.KEPT_CHAMPION and "could not be read" in cycle.reason
    assert world.champion == "v1" and world.experiment is None


def test_a_crash_between_trained_and_its_decision_with_no_champion_never_starts_a_canary(
        tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append("0001-x", Stage.TRIGGERED, at=T0, trigger="manual", champion=None)
    journal.append("0001-x", Stage.TRAINED, at=T0, challenger="v2")  # then the process died
    world = World(champion=None)
    run_until_idle(journal, world.ports(), CycleSettings())
    cycle = journal.cycles()[-1]
    assert cycle.result is Result.PROMOTED and world.champion == "v2"
    assert "start_canary" not in world.calls
