"""``movierec loop`` as real processes on the real stack: one loop at a time, a second one
refused with its holder named; a SIGKILLed loop leaves no stale lock; SIGTERM stops a
running loop cleanly; its /metrics answer while it runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_ports
from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def loop_env(stack: LocalStack, tmp_path: Path, metrics_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    env.update({"MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap, "MOVIEREC_REDIS_URL": stack.redis_url,
                "MOVIEREC_LOOP_DIR": str(tmp_path / "loop"),
                "MOVIEREC_REGISTRY_DIR": str(tmp_path / "registry"),
                "MOVIEREC_SERVE_EXPERIMENTS_FILE": str(tmp_path / "registry" / "experiments.json"),
                "MOVIEREC_STORE_DIR": str(tmp_path / "store"),
                "MOVIEREC_LOOP_PROMETHEUS_URL": "", "MOVIEREC_LOOP_CHECK_S": "0.5",
                "MOVIEREC_LOOP_METRICS_PORT": str(metrics_port)})
    return env


def movierec(*args: str) -> list[str]:
    return [sys.executable, "-m", "movierec", *args]


def wait_for(check, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def metrics_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return b"movierec_loop_cycles_total" in answer.read()
    except OSError:
        return False


@contextlib.contextmanager
def running_loop(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[str]]:
    """``movierec loop run`` as a child, once its /metrics answer; killed if still alive."""
    loop = subprocess.Popen(movierec("loop", "run"), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: metrics_up(port))
        yield loop
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait(timeout=10)
        if loop.stderr is not None:
            loop.stderr.close()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(movierec("loop", *args), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_one_loop_at_a_time_and_a_killed_loop_leaves_no_lock(stack: LocalStack,
                                                             tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = loop_env(stack, tmp_path, port)
    with running_loop(env, port) as first:
        status = run(env, "status")
        assert f"running, pid {first.pid}" in status.stdout, status.stdout + status.stderr
        second = run(env, "once")
        assert second.returncode != 0
        assert f"the loop is already running (pid {first.pid}" in second.stdout + second.stderr
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    after = run(env, "once")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "actions: wait" in after.stdout  # an empty store: nothing to train on yet


def test_sigterm_stops_a_running_loop_and_frees_its_lock(stack: LocalStack,
                                                          tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = loop_env(stack, tmp_path, port)
    with running_loop(env, port) as loop:
        loop.send_signal(signal.SIGTERM)
        assert loop.wait(timeout=20) == 0
    status = run(env, "status")
    assert "loop: not running" in status.stdout, status.stdout
