"""The audits against the real Kafka and Redis.

Safety: an R movie in a list served to a 12-year-old is found by `movierec audit safety`
(exit 1, the finding in the report) and by `movierec eval live`'s judge; the same movie
to an adult, and safe movies to the child, are not. Security: a crawler walking user ids
among random traffic is found by `movierec audit security`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from movierec.settings import load
from online_eval.cli import minor_safety
from online_eval.monitor import Monitor
from online_eval.settings import OnlineSettings
from recommender.serving.core import MINOR
from recommender.serving.telemetry import ServedRecord
from stores.keys import Keys
from stores.redis_online import RedisOnlineStore
from tests.integration.conftest import LocalStack
from tests.integration.test_online_eval import produce

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def served(n: int, user: int, items: tuple[str, ...]) -> tuple[int, bytes]:
    return user, ServedRecord(request_id=f"{n:032x}", time_ms=1_700_000_000_000 + n,
                              user_id=user, arm="challenger", model_version="als-1",
                              items=items, path="model", fallback=None, latency_ms=4.0,
                              status=200).to_json()


def test_an_r_movie_served_to_a_child_is_caught_by_the_audit_and_the_live_count(
        stack: LocalStack, redis_client: redis.Redis, unique: str, tmp_path: Path) -> None:
    keys = Keys(unique)
    redis_client.hset(keys.user_profile(7), mapping={"age": "12", "gender": "F"})
    redis_client.hset(keys.user_profile(8), mapping={"age": "40", "gender": "M"})
    redis_client.hset(keys.movie_meta("scarface+1983"),
                      mapping={"adult": "False", "content_rating": "R"})
    redis_client.hset(keys.movie_meta("up+2009"), mapping={"adult": "False"})
    topic = f"served-{unique}"
    produce(stack.bootstrap, topic, [served(1, 7, ("up+2009", "scarface+1983")),
                                     served(2, 8, ("scarface+1983",)),
                                     served(3, 7, ("up+2009",))])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")},
           "MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap, "MOVIEREC_REDIS_URL": stack.redis_url,
           "MOVIEREC_REDIS_PREFIX": unique, "MOVIEREC_SERVED_TOPIC": topic,
           "MOVIEREC_AUDIT_REPORTS_DIR": str(tmp_path / "audits")}
    run = subprocess.run([sys.executable, "-m", "movierec", "audit", "safety", "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    body = json.loads(run.stdout)
    assert body["passed"] is False and body["numbers"]["violations"] == 1
    assert body["numbers"]["lists_by_audience"] == {"minor": 2, "adult": 1}
    (finding,) = body["numbers"]["findings"]
    assert (finding["user_id"], finding["movie_id"], finding["reason"]) == (
        7, "scarface+1983", "rating_R")
    assert "FAIL" in (tmp_path / "audits" / "safety" / "report.md").read_text()

    settings = load(OnlineSettings, kafka_bootstrap=stack.bootstrap, served_topic=topic,
                    kafka_topic=topic, redis_url=stack.redis_url, redis_prefix=unique)
    store = RedisOnlineStore.connect(stack.redis_url, keys, timeout_s=5)
    monitor = Monitor(settings, state_dir=tmp_path / "online", safety=minor_safety(store))
    monitor.run(threading.Event(), checkpoint_s=1.0, idle_exit_s=3.0)
    assert monitor.safety[MINOR] == 2
    assert monitor.safety[f"unsafe|{MINOR}|rating_R"] == 1
    assert sum(v for k, v in monitor.safety.items() if k.startswith("unsafe|")) == 1


def test_a_crawler_walking_user_ids_is_found_by_the_security_audit(
        stack: LocalStack, unique: str, tmp_path: Path) -> None:
    """Served records of random users with a walk of ids 500..579 among them (one every
    0.3 s, as the simulator's scraping client does): the audit finds the walk and no other."""
    import random

    rng = random.Random(4)
    t0 = 1_700_000_000_000
    random_users = [(t0 + i * 100, rng.randrange(0, 2_000)) for i in range(600)]
    walk = [(t0 + 5_000 + i * 300, 500 + i) for i in range(80)]
    records = []
    for n, (ms, user) in enumerate(sorted(random_users + walk)):
        key, value = served(n, user, ("up+2009",))
        record = json.loads(value)
        record["time_ms"] = ms
        records.append((key, json.dumps(record).encode()))
    topic = f"served-{unique}"
    produce(stack.bootstrap, topic, records)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MOVIEREC_")},
           "MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap, "MOVIEREC_REDIS_URL": stack.redis_url,
           "MOVIEREC_SERVED_TOPIC": topic, "MOVIEREC_REGISTRY_DIR": str(tmp_path / "registry"),
           "MOVIEREC_AUDIT_REPORTS_DIR": str(tmp_path / "audits")}
    run = subprocess.run([sys.executable, "-m", "movierec", "audit", "security", "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    numbers = json.loads(run.stdout)["numbers"]
    (found,) = numbers["runs"]
    assert found["first"] == 500 and 579 <= found["last"] <= 582
    assert numbers["lists"] == 680 and numbers["model"] is None
    assert "Enumerations" in (tmp_path / "audits" / "security" / "report.md").read_text()
