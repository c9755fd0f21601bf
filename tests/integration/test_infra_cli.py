"""`movierec infra` as a user runs it: up, status, a killed broker, down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ops.stack.procs import start_ticks
from tests.conftest import free_ports


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "movierec", "--log-level", "WARNING", "infra", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_up_status_kill_status_down(tmp_path: Path) -> None:
    kafka, controller, redis_port, prom, manager, receiver = free_ports(6)
    env = {
        **os.environ,
        "MOVIEREC_VAR_DIR": str(tmp_path / "var"),
        "MOVIEREC_KAFKA_PORT": str(kafka),
        "MOVIEREC_KAFKA_CONTROLLER_PORT": str(controller),
        "MOVIEREC_REDIS_PORT": str(redis_port),
        "MOVIEREC_PROMETHEUS_PORT": str(prom),
        "MOVIEREC_ALERTMANAGER_PORT": str(manager),
        "MOVIEREC_ALERT_RECEIVER_PORT": str(receiver),
    }
    try:
        up = _cli(env, "up")
        assert up.returncode == 0, up.stderr
        again = _cli(env, "up")  # idempotent: nothing new is started
        assert again.returncode == 0, again.stderr

        status = _cli(env, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {row["name"]: row for row in json.loads(status.stdout)}
        assert {name: row["state"] for name, row in rows.items()} == {
            "kafka": "up", "redis": "up", "receiver": "up", "alertmanager": "up",
            "prometheus": "up"
        }

        pid = rows["kafka"]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while start_ticks(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)

        status = _cli(env, "status")
        assert status.returncode == 1
        kafka_lines = [line for line in status.stdout.splitlines()[:2]]
        assert kafka_lines[0].split()[:2] == ["kafka", "down"]
        assert str(tmp_path / "var" / "log" / "kafka" / "server.log") in kafka_lines[1]
        others = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()
                  if line and not line.startswith(" ")}
        assert {others[name] for name in ("redis", "receiver", "alertmanager", "prometheus")} == {"up"}
    finally:
        down = _cli(env, "down")
    assert down.returncode == 0, down.stderr
    assert all(name in down.stdout for name in ("redis", "receiver", "alertmanager", "prometheus"))
    final = _cli(env, "status", "--json")
    assert [row["state"] for row in json.loads(final.stdout)] == ["down"] * 5
