"""A shilling campaign through the whole pipeline: the simulator's backfill injects
fake accounts (1% of the users) pushing one movie into the real Kafka, the real consumer
writes the event store, and training's inputs find the campaign and leave exactly its
accounts out, recording it in the data provenance. The simulator's ground truth is read
only to check the answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from movierec.kafka_admin import ensure_topic
from movierec.settings import load
from recommender.training.inputs import load_inputs
from recommender.training.settings import TrainSettings
from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
USERS = 2_000


def movierec(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "movierec", "--log-level", "WARNING", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_a_campaign_is_caught_in_the_pipeline_and_left_out_of_training(
        stack: LocalStack, unique: str, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")},
           "MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap, "MOVIEREC_KAFKA_TOPIC": f"log-{unique}",
           "MOVIEREC_SIM_USERS": str(USERS), "MOVIEREC_SIM_MOVIES": "1000",
           "MOVIEREC_CONSUMER_GROUP": f"g-{unique}", "MOVIEREC_REDIS_URL": stack.redis_url,
           "MOVIEREC_REDIS_PREFIX": unique, "MOVIEREC_STORE_DIR": str(tmp_path / "store"),
           "MOVIEREC_METRICS_PORT": "0", "MOVIEREC_ENRICH": "0",
           "MOVIEREC_DLQ_DIR": str(tmp_path / "dlq")}
    ensure_topic(stack.bootstrap, f"log-{unique}", 2)  # the stack creates no topic on use
    truth = tmp_path / "truth.jsonl"
    movierec(env, "sim", "backfill", "--days", "10", "--truth", str(truth),
             "--inject", f"shilling_accounts={USERS // 100},shilling_at_h=150")
    movierec(env, "consume", "--idle-exit", "6")
    injected = json.loads(truth.read_text().splitlines()[0])
    fakes = set(range(injected["first_user"], injected["first_user"] + injected["accounts"]))

    settings = load(TrainSettings, {}, kafka_topic=f"log-{unique}", store_dir=tmp_path / "store",
                    train_profiles="none")
    inputs = load_inputs(settings)
    found = inputs.data["shilling"]
    assert found["targets"] == [injected["target"]]
    assert found["excluded_accounts"] == len(fakes) == USERS // 100
    left = set(inputs.events["user_id"].to_pylist())
    assert not left & fakes, "every fake account is out of training"
    assert len(left) > USERS // 2, "the organic users are in"

    off = load_inputs(load(TrainSettings, {}, kafka_topic=f"log-{unique}",
                           store_dir=tmp_path / "store", train_profiles="none",
                           train_shilling="off"))
    assert "shilling" not in off.data and set(off.events["user_id"].to_pylist()) & fakes
