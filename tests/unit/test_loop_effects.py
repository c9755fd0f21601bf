"""The cycle's effects on a real file registry and experiment file: each can be redone
after a crash without changing anything, the champion alias always names a version, and
a person's experiment is never replaced by a canary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recommender.loop.effects import (
    CanaryBlocked,
    canary_id,
    promote,
    retire,
    start_canary,
    stop_canary,
)
from recommender.loop.journal import LoopError
from recommender.serving.experiments import Arm, Experiment, ExperimentStore, assign
from tests.unit.test_registry import metadata, registry, trained

NOW = datetime(2026, 12, 7, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path):
    reg = registry(tmp_path)
    old = reg.register(trained(1), metadata=metadata()).version
    new = reg.register(trained(2), metadata=metadata()).version
    reg.promote(old, reason="first")
    return reg, ExperimentStore(tmp_path / "experiments.json"), old, new


def test_a_canary_routes_its_share_to_the_challenger_and_is_written_once(world) -> None:
    reg, store, old, new = world
    exp = start_canary(store, cycle="c1", challenger=new, share=0.1, at=NOW)
    generation = store.read()[0]
    assert start_canary(store, cycle="c1", challenger=new, share=0.1, at=NOW) == exp
    assert store.read()[0] == generation, "redoing it writes nothing"
    arms = [assign(u, exp, NOW) for u in range(20_000)]
    share = sum(a is not None and a.model == new for a in arms) / len(arms)
    assert 0.09 < share < 0.11
    assert {a.model for a in arms if a is not None} == {"champion", new}


def test_promotion_moves_the_alias_stops_the_canary_and_can_be_redone(world) -> None:
    reg, store, old, new = world
    start_canary(store, cycle="c1", challenger=new, share=0.1, at=NOW)
    promote(reg, store, cycle="c1", challenger=new, reason="mSPRT: better")
    assert reg.aliases()["champion"] == new and store.read()[1] is None
    events = len(reg.events())
    promote(reg, store, cycle="c1", challenger=new, reason="mSPRT: better")  # after a crash
    assert reg.aliases()["champion"] == new
    assert [e["event"] for e in reg.events()[events:]] == ["canary"], "no second alias move"
    assert reg.get(new).meta["canary"]["result"] == "promoted"
    assert reg.rollback(reason="the old champion is one step away") == old


def test_a_crash_between_the_alias_move_and_the_stop_serves_only_the_challenger(world) -> None:
    reg, store, old, new = world
    exp = start_canary(store, cycle="c1", challenger=new, share=0.1, at=NOW)
    reg.promote(new, reason="the loop died right after this")
    served = {reg.aliases()["champion"] if a.model == "champion" else a.model
              for a in (assign(u, exp, NOW) for u in range(2000)) if a is not None}
    assert served == {new}
    promote(reg, store, cycle="c1", challenger=new, reason="redone")
    assert store.read()[1] is None


def test_retiring_stops_the_canary_keeps_the_champion_and_records_the_numbers(world) -> None:
    reg, store, old, new = world
    start_canary(store, cycle="c1", challenger=new, share=0.1, at=NOW)
    retire(reg, store, cycle="c1", challenger=new, result="rolled_back",
           reason="guardrail: p99 latency 450 ms > 300 ms", numbers={"p99_ms": 450})
    assert reg.aliases()["champion"] == old and store.read()[1] is None
    canary = reg.get(new).meta["canary"]
    assert canary["result"] == "rolled_back" and canary["numbers"] == {"p99_ms": 450}
    assert "guardrail" in canary["reason"]
    retire(reg, store, cycle="c1", challenger=new, result="rolled_back", reason="redone")
    assert reg.aliases()["champion"] == old


def test_a_persons_experiment_is_never_replaced_or_stopped_by_the_loop(world) -> None:
    reg, store, old, new = world
    theirs = Experiment("ab-genres", (Arm("a", "champion", 0.5), Arm("b", old, 0.5)),
                        start=NOW - timedelta(hours=1), stop=NOW + timedelta(days=1))
    store.write(theirs, reason="a person's test")
    with pytest.raises(CanaryBlocked, match="ab-genres"):
        start_canary(store, cycle="c1", challenger=new, share=0.1, at=NOW)
    assert not stop_canary(store, cycle="c1", reason="cleanup")
    assert store.read()[1] == theirs
    # once it has ended, the canary may start
    later = NOW + timedelta(days=2)
    assert start_canary(store, cycle="c1", challenger=new, share=0.1, at=later).id == canary_id("c1")


def test_a_share_outside_zero_to_one_is_refused(world) -> None:
    _, store, _, new = world
    for share in (0.0, 1.0, 1.5):
        with pytest.raises(LoopError, match="share"):
            start_canary(store, cycle="c1", challenger=new, share=share, at=NOW)


def test_a_scheduled_experiment_is_not_replaced_either(world) -> None:
    reg, store, old, new = world
    later = Experiment("ab-tonight", (Arm("a", "champion", 0.5), Arm("b", old, 0.5)),
                       start=NOW + timedelta(hours=2))
    store.write(later, reason="a person's test, tonight")
    with pytest.raises(CanaryBlocked, match="ab-tonight"):
        start_canary(store, cycle="c1", challenger=new, share=0.1, at=NOW)
    assert store.read()[1] == later
