"""The demo's stage runner: progress on the terminal, one log per stage, and failures
that name the stage and the log to read. Real child processes, no services."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest

from movierec.settings import load
from ops.demo.flow import DemoPlan
from ops.demo.settings import FULL_MOVIES, FULL_USERS, DemoSettings
from ops.demo.stages import DemoError, Stages
from ops.stack import procs


@pytest.fixture
def stages(tmp_path: Path) -> Stages:
    return Stages(log_dir=tmp_path / "log", run_dir=tmp_path / "run", total=3,
                  out=io.StringIO(), timeout_s=20)


def shown(stages: Stages) -> str:
    assert isinstance(stages.out, io.StringIO)
    return stages.out.getvalue()


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_step_numbers_stages_logs_notes_and_returns_the_result(stages: Stages) -> None:
    got = stages.step("first", "does a thing", lambda note: (note("half way"), 42)[1])
    assert got == 42
    text = shown(stages)
    assert "[1/3] first: does a thing" in text and "half way" in text
    assert "first done in" in text and "first" in stages.timings
    assert stages.log_of("first").read_text() == "half way\n"
    stages.step("second", "another", lambda note: None)
    assert "[2/3] second: another" in shown(stages)


def test_a_failing_step_names_the_stage_the_error_and_the_log(stages: Stages) -> None:
    def broken(note):
        note("about to fail")
        raise ValueError("the disk is full")

    with pytest.raises(DemoError) as caught:
        stages.step("train", "fits models", broken)
    message = str(caught.value)
    assert "stage 'train' failed: ValueError: the disk is full" in message
    assert str(stages.log_of("train")) in message and "about to fail" in message
    assert "train" not in stages.timings


def test_command_copies_output_to_the_log_and_the_terminal(stages: Stages) -> None:
    out = stages.command("backfill", "writes lines",
                         py("import sys\nprint('one')\nprint('two', file=sys.stderr)"))
    assert out.splitlines() == ["one", "two"]
    log = stages.log_of("backfill").read_text()
    assert log.startswith("$ ") and log.endswith("one\ntwo\n")
    assert "      one\n      two\n" in shown(stages)


def test_progress_bars_off_a_terminal_show_only_their_last_state(stages: Stages) -> None:
    stages.command("bar", "draws a bar",
                   py("import sys\nfor i in range(3): sys.stdout.write(f'\\r{i}/2')\nprint()"))
    text = shown(stages)
    assert "      2/2\n" in text and "0/2" not in text
    assert "0/2" in stages.log_of("bar").read_text()  # the log keeps everything


def test_a_failing_command_names_the_stage_its_status_and_its_output(stages: Stages) -> None:
    with pytest.raises(DemoError) as caught:
        stages.command("consume", "drains", py("print('broker gone'); raise SystemExit(3)"))
    message = str(caught.value)
    assert "stage 'consume' failed" in message and "exited with status 3" in message
    assert str(stages.log_of("consume")) in message and "broker gone" in message


def test_a_silent_command_past_the_timeout_is_killed(tmp_path: Path) -> None:
    stages = Stages(log_dir=tmp_path, run_dir=tmp_path, total=1, out=io.StringIO(), timeout_s=1.5)
    with pytest.raises(DemoError, match="still running after 2 s"):
        stages.command("slow", "sleeps", py("import time; time.sleep(30)"))


def test_a_stage_that_ends_early_takes_its_whole_process_group_with_it(tmp_path: Path) -> None:
    """A timed-out command's own children go too: nothing keeps writing after the stage."""
    stages = Stages(log_dir=tmp_path, run_dir=tmp_path, total=1, out=io.StringIO(), timeout_s=3)
    code = ("import subprocess, sys, time\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(g.pid, flush=True)\ntime.sleep(60)")
    with pytest.raises(DemoError, match="still running"):
        stages.command("live", "spawns", py(code))
    grandchild = int(stages.log_of("live").read_text().splitlines()[-1])
    deadline = time.monotonic() + 5
    while procs.start_ticks(grandchild) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs.start_ticks(grandchild) is None


def test_a_readiness_check_that_raises_is_polled_again(stages: Stages) -> None:
    calls = []

    def ready() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not listening yet")
        return True

    stages.service("serve", "starts", py("import time; time.sleep(60)"), ready=ready, timeout_s=20)
    try:
        assert len(calls) == 3
        assert "not ready yet: ConnectionRefusedError" in stages.log_of("serve").read_text()
    finally:
        procs.terminate(stages.pid_file("serve"), grace=5)


def test_service_is_left_running_and_recorded_for_demo_down(stages: Stages) -> None:
    pid = stages.service("world", "sleeps", py("import time; time.sleep(60)"), ready=lambda: True)
    try:
        assert procs.owned_pid(stages.pid_file("world")) == pid
        assert "running as pid" in shown(stages)
    finally:
        assert procs.terminate(stages.pid_file("world"), grace=5)
    assert procs.owned_pid(stages.pid_file("world")) is None


def test_a_service_that_exits_before_it_is_ready_fails_its_stage(stages: Stages) -> None:
    with pytest.raises(DemoError) as caught:
        stages.service("serve", "starts", py("print('no model'); raise SystemExit(1)"),
                       ready=lambda: False, timeout_s=10)
    assert "stage 'serve' failed: exited" in str(caught.value)
    assert "no model" in str(caught.value)


def test_plan_passes_the_world_size_to_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOVIEREC_DEMO_USERS", "1234")
    monkeypatch.delenv("MOVIEREC_SERVE_HOST", raising=False)
    plan = DemoPlan.load()
    env = plan.env()
    assert env["MOVIEREC_SIM_USERS"] == "1234" and plan.sim.sim_users == 1234
    assert env["MOVIEREC_SIM_MOVIES"] == str(load(DemoSettings).demo_movies)
    assert env["MOVIEREC_SERVE_HOST"] == "127.0.0.1"
    monkeypatch.delenv("MOVIEREC_DEMO_USERS")
    full = DemoPlan.load(full=True)
    assert (full.demo.demo_users, full.demo.demo_movies) == (FULL_USERS, FULL_MOVIES)
    assert full.env()["MOVIEREC_SIM_USERS"] == str(FULL_USERS)
    short = DemoPlan.load(full=True, environ={"MOVIEREC_DEMO_DAYS": "0.5"})
    assert (short.demo.demo_users, short.demo.demo_days) == (FULL_USERS, 0.5)


def test_plan_runs_on_the_local_stack_whatever_the_shell_says() -> None:
    """A shell still set up for the course's broker must not receive simulated lines."""
    shell = {"MOVIEREC_KAFKA_BOOTSTRAP": "course.example:9092", "MOVIEREC_KAFKA_PORT": "19092",
             "MOVIEREC_REDIS_URL": "redis://elsewhere:6379/0", "MOVIEREC_SIM_API_PORT": "18080"}
    plan = DemoPlan.load(environ=shell)
    env = plan.env()
    assert env["MOVIEREC_KAFKA_BOOTSTRAP"] == "127.0.0.1:19092" == plan.consumer.kafka_bootstrap
    assert env["MOVIEREC_REDIS_URL"] == plan.stack.local_redis_url == plan.consumer.redis_url
    assert env["MOVIEREC_USER_API_URL"] == "http://127.0.0.1:18080" == plan.consumer.user_api_url
    assert set(plan.overridden) == {"MOVIEREC_KAFKA_BOOTSTRAP", "MOVIEREC_REDIS_URL"}


def test_a_readiness_verdict_fails_the_stage_with_its_reason(stages: Stages) -> None:
    def ready() -> bool:
        raise DemoError("the consumer committed nothing for 300 s (lag 42)")

    with pytest.raises(DemoError) as caught:
        stages.service("consume", "drains", py("import time; time.sleep(60)"), ready=ready,
                       timeout_s=20)
    assert "stage 'consume' failed: the consumer committed nothing" in str(caught.value)
    procs.terminate(stages.pid_file("consume"), grace=5)


def test_draining_is_judged_by_progress_not_by_a_deadline(stages: Stages,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from ops.demo import flow

    lags = iter([100, 60, 60, 0])
    monkeypatch.setattr(flow, "group_lag", lambda *_: next(lags))
    monkeypatch.setattr(flow.time, "sleep", lambda _s: None)
    ready = flow._drained(DemoPlan.load(environ={}), stages, stall_s=60)
    assert [ready(), ready(), ready(), ready()] == [False, False, False, True]
    assert "lag 100 lines" in shown(stages)

    stuck = iter([50, 50])
    monkeypatch.setattr(flow, "group_lag", lambda *_: next(stuck))
    ready = flow._drained(DemoPlan.load(environ={}), stages, stall_s=0)
    assert ready() is False  # the first reading is progress
    with pytest.raises(DemoError, match="committed nothing for 0 s"):
        ready()
