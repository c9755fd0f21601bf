"""`movierec demo up` end to end, small (the session's demo, ``tests/e2e/conftest.py``):
every stage as a user runs it, then assertions on the grade report it wrote.

Checks the issue's promises: at least 99% of live requests answered successfully within
600 ms, at least 90% personalized, and a served list traceable through /provenance to
its model, the code version and the training data snapshot. Then `demo status` and
`demo down` work on what the demo left running.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ops.stack import procs
from recommender.registry import Registry
from tests.e2e.conftest import REPO, movierec

pytestmark = pytest.mark.e2e


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def test_live_requests_succeed_within_the_deadline(report: dict, demo_env: dict[str, str]) -> None:
    grade = report["grade"]
    assert grade["server"] == f"127.0.0.1:{demo_env['MOVIEREC_SERVE_PORT']}"
    assert grade["deadline_ms"] == 600
    assert grade["total_requests"] >= 600  # 45 s at 20 req/s
    assert grade["successful"] / grade["total_requests"] >= 0.99
    assert all(grade["checks"][name] for name in ("successes_24h", "personalized", "availability"))


def test_lists_are_personalized(report: dict) -> None:
    assert report["grade"]["personalized_share"] >= 0.90


def test_a_served_list_traces_to_its_model_code_and_data(report: dict,
                                                         demo_env: dict[str, str]) -> None:
    trace = report["provenance"]
    registry = Registry(Path(demo_env["MOVIEREC_REGISTRY_DIR"]))
    champion = registry.get("champion")
    model = trace["model"]
    assert trace["served"]["request_id"] == trace["request_id"]
    assert trace["served"]["model_version"] == model["version"] == champion.version
    assert model["name"] == champion.name
    assert len(trace["served"]["items"]) == 20
    head = _git_head()
    assert model["code"]["commit"] == head if head else model["code"]["commit"]
    assert model["data"]["snapshot_id"] == champion.meta["data"]["snapshot_id"]
    assert model["data"]["rows"] > 1_000_000 and model["data"]["topic"] == "movielog"


def test_the_loop_promoted_its_challenger_after_a_canary(report: dict,
                                                        demo_env: dict[str, str]) -> None:
    """Day one's popularity champion, the loop's first cycle, a canary both arms reached,
    and a promotion decided online; the registry's champion is the challenger."""
    loop = report["loop"]
    assert loop["trigger"] == "schedule", loop
    assert loop["result"] == "promoted", f"{loop['result']}: {loop['reason']}"
    assert [e["stage"] for e in loop["entries"]][:3] == ["triggered", "trained", "canary"]
    assert loop["reason"].startswith("mSPRT: challenger better"), loop["reason"]
    registry = Registry(Path(demo_env["MOVIEREC_REGISTRY_DIR"]))
    assert registry.get("champion").version == loop["challenger"]
    assert registry.get(loop["champion_before"]).name == "popularity"
    arms = {row["arm"]: row for row in report["online"]["arms"]}
    assert arms["champion"]["requests"] > 0 and arms["challenger"]["requests"] > 0
    assert report["online"]["comparisons"], "the challenger was compared with the champion"


@pytest.mark.stops_the_demo
def test_status_then_down_stop_everything(report: dict, demo_env: dict[str, str]) -> None:
    up = movierec(demo_env, "demo", "status", timeout=60)
    assert up.returncode == 0, up.stdout
    movierec(demo_env, "demo", "down", timeout=180)
    down = movierec(demo_env, "demo", "status", timeout=60)
    assert down.returncode == 1 and " up " not in down.stdout, down.stdout
    for port in ("MOVIEREC_SERVE_PORT", "MOVIEREC_SIM_API_PORT", "MOVIEREC_METRICS_PORT",
                 "MOVIEREC_ONLINE_METRICS_PORT", "MOVIEREC_LOOP_METRICS_PORT",
                 "MOVIEREC_DASHBOARD_PORT",
                 "MOVIEREC_KAFKA_PORT", "MOVIEREC_REDIS_PORT"):
        assert not procs.port_open(int(demo_env[port])), port
