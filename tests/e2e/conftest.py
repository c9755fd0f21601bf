"""The e2e tests' one demo: a small `movierec demo up` on free ports in a temporary
folder, started once for the session and shared by every e2e module (the demo, the
dashboard in a real browser, the Grafana queries, a drill). Its services keep running
until the session ends, or until the test marked ``stops_the_demo`` (run last) stops it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_ports

REPO = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_S = 900


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    var = tmp_path_factory.mktemp("demo-var")
    (kafka, controller, redis_port, prom, serve, api, metrics, manager, receiver, online,
     loop, dashboard) = free_ports(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")}
    env.update({
        "MOVIEREC_VAR_DIR": str(var),
        "MOVIEREC_KAFKA_LIB_DIR": str(REPO / "var" / "lib" / "kafka-4.1.1"),
        "MOVIEREC_KAFKA_PORT": str(kafka), "MOVIEREC_KAFKA_CONTROLLER_PORT": str(controller),
        "MOVIEREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "MOVIEREC_REDIS_PORT": str(redis_port),
        "MOVIEREC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MOVIEREC_PROMETHEUS_PORT": str(prom),
        "MOVIEREC_ALERTMANAGER_PORT": str(manager), "MOVIEREC_ALERT_RECEIVER_PORT": str(receiver),
        "MOVIEREC_SCRAPE_TARGETS": (f"recommender=127.0.0.1:{serve},"
                                    f"stream_consumer=127.0.0.1:{metrics},"
                                    f"simulator_api=127.0.0.1:{api},"
                                    f"online=127.0.0.1:{online},loop=127.0.0.1:{loop}"),
        "MOVIEREC_ONLINE_METRICS_PORT": str(online), "MOVIEREC_LOOP_METRICS_PORT": str(loop),
        "MOVIEREC_DASHBOARD_PORT": str(dashboard),
        "MOVIEREC_SERVE_PORT": str(serve), "MOVIEREC_SIM_API_PORT": str(api),
        "MOVIEREC_USER_API_URL": f"http://127.0.0.1:{api}",
        "MOVIEREC_METRICS_PORT": str(metrics),
        "MOVIEREC_STORE_DIR": str(var / "store"),
        "MOVIEREC_REGISTRY_DIR": str(var / "registry"),
        "MOVIEREC_REPORTS_DIR": str(var / "reports"),
        "MOVIEREC_SERVE_EXPERIMENTS_FILE": str(var / "registry" / "experiments.json"),
        # small: 2,000 users x 1,000 movies x 25 days (~1.1M lines), 30 s of live users
        "MOVIEREC_DEMO_USERS": "2000", "MOVIEREC_DEMO_MOVIES": "1000",
        "MOVIEREC_DEMO_DAYS": "25", "MOVIEREC_DEMO_LIVE_S": "45",
        "MOVIEREC_DEMO_LIVE_RATE": "20", "MOVIEREC_DEMO_STAGE_TIMEOUT_S": "300",
    })
    try:
        yield env
    finally:
        movierec(env, "demo", "down", timeout=180)


def movierec(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "movierec", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def report(demo_env: dict[str, str]) -> dict:
    # Popen, not run(timeout=...): on a timeout run() would SIGKILL `demo up`, whose stage
    # child would then outlive it; SIGTERM lets the demo stop what it started.
    with subprocess.Popen([sys.executable, "-m", "movierec", "demo", "up"], cwd=REPO,
                          env=demo_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as up:
        try:
            stdout, stderr = up.communicate(timeout=DEMO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            up.terminate()
            stdout, stderr = up.communicate(timeout=120)
            pytest.fail(f"demo up ran past {DEMO_TIMEOUT_S} s:\n{stdout[-4000:]}{stderr[-4000:]}")
    assert up.returncode == 0, stdout[-4000:] + stderr[-4000:]
    for stage in ("stack", "world", "backfill", "consume", "train", "serve", "online",
                  "dashboard", "loop", "live", "verdict", "report"):
        assert f"] {stage}: " in stdout and f"{stage} done in" in stdout, stage
    var = Path(demo_env["MOVIEREC_VAR_DIR"])
    assert (var / "demo" / "report.md").read_text().startswith("# movierec demo report")
    return json.loads((var / "demo" / "report.json").read_text())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that stop the demo run after every other test that uses it."""
    items.sort(key=lambda item: item.get_closest_marker("stops_the_demo") is not None)
