"""Process supervision: pid files that cannot point at someone else's process."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from ops.stack.procs import (
    StackError,
    owned_pid,
    parse_pid_file,
    port_open,
    spawn,
    start_ticks,
    tail,
    terminate,
)


def test_pid_file_format() -> None:
    assert parse_pid_file("123 456\n") == (123, 456)
    for bad in ("", "123", "x 1", "1 2 3", "-1 2"):
        assert parse_pid_file(bad) is None


def test_owned_pid_requires_the_same_start_time(tmp_path: Path) -> None:
    pid_file = tmp_path / "me.pid"
    me = os.getpid()
    pid_file.write_text(f"{me} {start_ticks(me)}")
    assert owned_pid(pid_file) == me
    pid_file.write_text(f"{me} {start_ticks(me) + 1}")  # same pid, another process
    assert owned_pid(pid_file) is None
    pid_file.write_text("garbage")
    assert owned_pid(pid_file) is None
    assert owned_pid(tmp_path / "missing.pid") is None


def _wait_for(log: Path, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in tail(log) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert text in tail(log)


def test_spawn_then_terminate(tmp_path: Path) -> None:
    pid_file, log = tmp_path / "run" / "sleeper.pid", tmp_path / "log" / "sleeper.log"
    pid = spawn(["sh", "-c", "echo started; exec sleep 60"], pid_file=pid_file, log=log)
    assert owned_pid(pid_file) == pid
    _wait_for(log, "started")  # output goes to the log file
    assert os.getsid(pid) == pid  # its own session: a terminal's Ctrl-C does not reach it
    assert terminate(pid_file, grace=5) is True
    assert start_ticks(pid) is None
    assert not pid_file.exists()
    assert terminate(pid_file) is False  # nothing left to stop


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "stubborn.pid"
    pid = spawn(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"],
                pid_file=pid_file, log=tmp_path / "stubborn.log")
    _wait_for(tmp_path / "stubborn.log", "ready")
    assert terminate(pid_file, grace=0.5) is True
    assert start_ticks(pid) is None


def test_spawn_reports_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="cannot run"):
        spawn(["/nonexistent/program"], pid_file=tmp_path / "x.pid", log=tmp_path / "x.log")


def test_port_open_sees_a_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_open(port)
    assert not port_open(port)
