"""`movierec audit feedback` against a real Kafka topic: four days of event-log lines in
which the lists narrow day by day (10, 8, 6, 4 of 10 movies) fail the requirement, with
the per-day coverage as written, whatever order the topic's two partitions interleave in;
the mitigation in force names the experiment's re-ranking arm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from movierec.wire import format_answer, format_time, recommendation_line, watch_line
from recommender.serving.experiments import Arm, Experiment, ExperimentStore
from tests.integration.conftest import LocalStack
from tests.integration.test_online_eval import produce

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def narrowing_log() -> list[tuple[int, bytes]]:
    lines = []
    for day in range(4):
        pool = [f"film{i}+2001" for i in range(10 - 2 * day)]
        for k in range(20):
            at = datetime(2025, 1, 1) + timedelta(days=day, hours=1, minutes=k)
            items = (pool[k % len(pool)], pool[(k + 1) % len(pool)])
            lines.append((k, recommendation_line(format_time(at), k, "10.0.0.1:8082", 200,
                                                 format_answer(items), 40)))
            lines.append((k, watch_line(format_time(at + timedelta(seconds=30)), k,
                                        items[0], 0)))
    return [(user, line.encode()) for user, line in lines]


def test_lists_narrowing_day_by_day_fail_the_feedback_audit(
        stack: LocalStack, unique: str, tmp_path: Path) -> None:
    topic = f"log-{unique}"
    produce(stack.bootstrap, topic, narrowing_log())
    experiments = tmp_path / "registry" / "experiments.json"
    ExperimentStore(experiments).write(
        Experiment("calibration", (Arm("control", "champion", 0.5),
                                   Arm("calibrated", "champion", 0.5, "calibrated")),
                   start=datetime(2025, 1, 1, tzinfo=UTC)), reason="test")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")},
           "MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap, "MOVIEREC_KAFKA_TOPIC": topic,
           "MOVIEREC_SERVE_EXPERIMENTS_FILE": str(experiments),
           "MOVIEREC_AUDIT_REPORTS_DIR": str(tmp_path / "audits")}
    run = subprocess.run([sys.executable, "-m", "movierec", "audit", "feedback", "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    body = json.loads(run.stdout)
    numbers = body["numbers"]
    assert numbers["catalog"] == 10 and numbers["verdict"] == "fail"
    assert [b["coverage"] for b in numbers["buckets"]] == pytest.approx([1.0, 0.8, 0.6, 0.4])
    assert [b["lists"] for b in numbers["buckets"]] == [20] * 4
    assert "arm calibrated (50% of users" in body["mitigation"]
    arms = {a["arm"]: a for a in numbers["arms"]}
    assert sorted(arms) == ["calibrated", "control"] and arms["calibrated"]["rerank"] == "calibrated"
    assert sum(a["lists"] for a in arms.values()) == 80
    folder = tmp_path / "audits" / "feedback"
    assert sorted(p.name for p in folder.iterdir()) == ["feedback.svg", "report.json",
                                                        "report.md"]
