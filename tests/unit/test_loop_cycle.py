"""The retraining cycle's state machine over its journal, the journal's durability rules,
and the lock that keeps two loops apart (a SIGKILLed holder releases it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recommender.loop.cycle import (
    Action,
    JournalError,
    Result,
    Stage,
    counts,
    fold,
    next_action,
    open_cycle,
)
from recommender.loop.journal import Journal, LoopError, LoopLock

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def entry(cycle: str, stage: Stage, minutes: int = 0, **fields: object) -> dict:
    return {"cycle": cycle, "stage": stage.value,
            "at": (T0 + timedelta(minutes=minutes)).isoformat(), **fields}


PROMOTION = [
    entry("c1", Stage.TRIGGERED, 0, trigger="schedule", champion="als-1"),
    entry("c1", Stage.TRAINED, 5, challenger="hybrid-2"),
    entry("c1", Stage.CANARY, 6, experiment="canary-c1", share=0.1),
    entry("c1", Stage.LOOKED, 10, p_value=0.4),
    entry("c1", Stage.LOOKED, 15, p_value=0.01),
    entry("c1", Stage.DECIDED, 15, result="promoted", reason="mSPRT: challenger better"),
    entry("c1", Stage.CLOSED, 16),
]


def test_each_prefix_of_a_promotion_names_the_action_to_redo() -> None:
    expected = [Action.TRAIN, Action.START_CANARY, Action.WATCH, Action.WATCH, Action.WATCH,
                Action.CARRY_OUT, Action.WAIT]
    for n, want in enumerate(expected, 1):
        assert next_action(open_cycle(fold(PROMOTION[:n]))) is want, PROMOTION[n - 1]
    assert next_action(None) is Action.WAIT


def test_a_folded_cycle_keeps_its_numbers() -> None:
    [cycle] = fold(PROMOTION)
    assert (cycle.trigger, cycle.champion, cycle.challenger) == ("schedule", "als-1", "hybrid-2")
    assert cycle.experiment == "canary-c1" and cycle.share == 0.1
    assert cycle.canary_started == T0 + timedelta(minutes=6)
    assert cycle.looks == 2 and cycle.last_p == 0.01
    assert cycle.result is Result.PROMOTED and "better" in cycle.reason
    assert not cycle.open and len(cycle.entries) == len(PROMOTION)
    assert counts([cycle])["promoted"] == 1 and counts([cycle])["rolled_back"] == 0


def test_a_gate_refusal_and_a_failed_training_end_without_a_canary() -> None:
    refused = [entry("c1", Stage.TRIGGERED), entry("c1", Stage.TRAINED, 3, challenger=None)]
    assert next_action(open_cycle(fold(refused))) is Action.REFUSE
    refused += [entry("c1", Stage.DECIDED, 3, result="gate_refused"), entry("c1", Stage.CLOSED, 3)]
    failed = [entry("c2", Stage.TRIGGERED, 10), entry("c2", Stage.DECIDED, 11, result="failed"),
              entry("c2", Stage.CLOSED, 11)]
    cycles = fold(refused + failed)
    assert open_cycle(cycles) is None
    assert counts(cycles) == {"promoted": 0, "rolled_back": 0, "kept_champion": 0,
                              "gate_refused": 1, "failed": 1}


@pytest.mark.parametrize("bad", [
    [entry("c1", Stage.TRAINED)],                                            # unknown cycle
    [entry("c1", Stage.TRIGGERED), entry("c1", Stage.CANARY, experiment="e", share=0.1)],
    [entry("c1", Stage.TRIGGERED), entry("c1", Stage.LOOKED)],               # look too early
    [entry("c1", Stage.TRIGGERED), entry("c2", Stage.TRIGGERED)],            # two open
    [*PROMOTION, entry("c1", Stage.DECIDED, result="promoted")],              # after closing
    [*PROMOTION, entry("c1", Stage.TRIGGERED)],                              # id reused
])
def test_a_history_out_of_order_is_refused(bad: list[dict]) -> None:
    with pytest.raises(JournalError):
        fold(bad)


def test_the_journal_round_trips_and_skips_only_a_torn_last_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "loop" / "journal.jsonl")
    assert journal.entries() == [] and journal.cycles() == []
    journal.append("c1", Stage.TRIGGERED, at=T0, trigger="manual", champion="als-1")
    journal.append("c1", Stage.TRAINED, challenger="hybrid-2")
    with open(journal.path, "ab") as fh:
        fh.write(b'{"cycle": "c1", "stage": "can')  # a crash mid-write
    assert [e["stage"] for e in journal.entries()] == ["triggered", "trained"]
    assert next_action(open_cycle(journal.cycles())) is Action.START_CANARY
    # an append after the torn line starts on a line of its own only if the torn line is
    # repaired; a torn line in the middle is corruption, never silently skipped
    with open(journal.path, "ab") as fh:
        fh.write(b"\n")
    journal.append("c1", Stage.CANARY, experiment="canary-c1", share=0.1)
    with pytest.raises(LoopError, match="line 3 is corrupt"):
        journal.entries()


def test_the_lock_excludes_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    path = tmp_path / "loop.lock"
    with LoopLock(path) as lock:
        assert "this process" in (lock.holder() or "")
        with pytest.raises(LoopError, match=f"pid {os.getpid()}"):
            LoopLock(path).acquire()
    assert LoopLock(path).holder() is None
    again = LoopLock(path)
    again.acquire()  # free again after release
    again.release()


def test_a_sigkilled_holder_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "loop.lock"
    code = ("import sys, time; from recommender.loop.journal import LoopLock; "
            f"lock = LoopLock({str(path)!r}); lock.acquire(); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert (LoopLock(path).holder() or "").startswith(f"pid {child.pid} since ")
        with pytest.raises(LoopError, match=f"pid {child.pid}"):
            LoopLock(path).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    deadline = time.monotonic() + 5
    while LoopLock(path).holder() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    with LoopLock(path) as lock:
        assert lock.holder() is not None


def test_an_append_after_a_torn_line_cuts_it_and_loses_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("c1", Stage.TRIGGERED, at=T0, trigger="manual")
    with open(journal.path, "ab") as fh:
        fh.write(b'{"cycle": "c1", "stage": "trai')  # a crash mid-write
    journal.append("c1", Stage.TRAINED, challenger="v2")  # the redone action
    journal.append("c1", Stage.CANARY, experiment="canary-c1", share=0.1)
    assert [e["stage"] for e in journal.entries()] == ["triggered", "trained", "canary"]
    assert journal.path.read_bytes().count(b"trai\n") == 0
