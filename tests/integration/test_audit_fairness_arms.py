"""`movierec audit fairness` splits a running experiment's arms, against the real Kafka
and Redis: lists and outcomes go to the arm the service's hash gives each user, and each
arm's provider exposure is measured on its own lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from recommender.serving.experiments import Arm, Experiment, ExperimentStore, assign
from stores.keys import Keys
from tests.integration.conftest import LocalStack
from tests.integration.test_online_eval import produce

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
HEAD, TAIL = "blockbuster+2010", "gem+1975"
EXPERIMENT = Experiment("fair", (Arm("control", "champion", 0.5),
                                 Arm("calibrated", "champion", 0.5, rerank="calibrated")))


def test_the_audit_compares_the_mitigation_arm_with_its_control(
        stack: LocalStack, redis_client: redis.Redis, unique: str, tmp_path: Path) -> None:
    keys = Keys(unique)
    # the consumer's play-based popularity decides the head: the first fifth of 5 films
    redis_client.zadd(keys.popularity("decayed"),
                      {HEAD: 100.0, "a+2001": 50.0, "b+2002": 40.0, "c+2003": 30.0, TAIL: 1.0})
    redis_client.hset(keys.movie_meta(HEAD), mapping={"release_date": "2010-01-01"})
    redis_client.hset(keys.movie_meta(TAIL), mapping={"release_date": "1975-06-01"})
    at = datetime(2026, 1, 1, tzinfo=UTC)
    users = list(range(1, 41))
    arm_of = {u: assign(u, EXPERIMENT, at).name for u in users}
    assert set(arm_of.values()) == {"control", "calibrated"}
    lines = []
    for u in users:
        redis_client.hset(keys.user_profile(u), mapping={"age": "30", "gender": "F"})
        # control lists lead with the head film; calibrated ones with the tail film
        items = f"{HEAD}, {TAIL}" if arm_of[u] == "control" else f"{TAIL}, {HEAD}"
        lines.append((u, f"2026-01-01T10:{u:02d}:00,{u},recommendation request svc:8082, "
                         f"status 200, result: {items}, 40 ms".encode()))
        if arm_of[u] == "calibrated" or u % 4 == 0:  # every calibrated user takes a film
            lines.append((u, f"2026-01-01T10:{u:02d}:30,{u},GET /data/m/{TAIL}/0.mpg".encode()))
    # a late line closes every list's window
    lines.append((99, b"2026-01-01T18:00:00,99,GET /data/m/" + HEAD.encode() + b"/0.mpg"))
    topic = f"log-{unique}"
    produce(stack.bootstrap, topic, lines)
    experiments = tmp_path / "experiment.json"
    ExperimentStore(experiments).write(EXPERIMENT, reason="test")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")},
           "MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap, "MOVIEREC_REDIS_URL": stack.redis_url,
           "MOVIEREC_REDIS_PREFIX": unique, "MOVIEREC_KAFKA_TOPIC": topic,
           "MOVIEREC_SERVE_EXPERIMENTS_FILE": str(experiments),
           "MOVIEREC_AUDIT_REPORTS_DIR": str(tmp_path / "audits")}
    run = subprocess.run([sys.executable, "-m", "movierec", "audit", "fairness", "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    body = json.loads(run.stdout)
    arms = {a["arm"]: a for a in body["numbers"]["arms"]}
    n_control = sum(1 for a in arm_of.values() if a == "control")
    assert arms["control"]["lists"] == n_control
    assert arms["calibrated"]["lists"] == len(users) - n_control
    assert arms["calibrated"]["rerank"] == "calibrated" and arms["control"]["rerank"] is None
    assert arms["calibrated"]["take_rate"] == 1.0
    assert arms["control"]["take_rate"] < 0.5
    tail = {a: next(p for p in arms[a]["providers"] if p["group"] == "long tail")
            for a in arms}
    # the tail film first: exposure 1 of 1 + 1/log2(3); second: the other way round
    w = 1 / 1.584962500721156
    assert tail["calibrated"]["exposure_share"] == pytest.approx(1 / (1 + w))
    assert tail["control"]["exposure_share"] == pytest.approx(w / (1 + w))
    assert "calibrated" in body["mitigation"] and "'fair'" in body["mitigation"]
    assert "By experiment arm" in (tmp_path / "audits" / "fairness" / "report.md").read_text()
