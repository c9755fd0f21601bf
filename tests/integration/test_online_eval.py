"""Online evaluation against the real broker: a small known log and served-records stream
in fresh topics, through ``evaluate_online`` and the ``online`` command."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

from movierec.kafka_admin import ensure_topic
from movierec.settings import load
from movierec.wire import rate_line, recommendation_line, watch_line
from online_eval.cli import evaluate_online, online
from online_eval.join import UNASSIGNED, OnlineEvalError
from online_eval.settings import OnlineSettings
from ops.cli import main
from recommender.serving.telemetry import ServedRecord
from tests.conftest import free_ports
from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0)
SERVER = "svc:8082"
ALS_V, POP_V = "als-20250301T120000-abc123", "popularity-20250301T110000-def456"
A, B, C = "a+2001", "b+2002", "c+2003"


def stamp(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")


def reco(minutes: float, user: int, server: str = SERVER, status: int = 200) -> str:
    result = f"{A}, {B}" if status == 200 else "Connection refused: svc/127.0.0.1:8082"
    return recommendation_line(stamp(minutes), user, server, status, result, 35)


def watching(start: float, user: int, movie: str, n: int) -> list[str]:
    return [watch_line(stamp(start + k + 0.5), user, movie, k) for k in range(n)]


# Users 1-3 are in "als" (3 was in "pop" first), 4-6 in "pop"; 7 and 8 have no record.
LOG = [
    reco(0, 1), *watching(2, 1, A, 5), rate_line(stamp(8), 1, A, 4),  # als: taken
    reco(0, 2), *watching(2, 2, C, 5),                                 # als: C not listed
    reco(0, 3), *watching(5, 3, B, 3),                                 # als: taken
    reco(0, 4), *watching(40, 4, A, 3),                                # pop: too late
    reco(0, 5), *watching(1, 5, B, 2),                                 # pop: taken
    reco(0, 6, status=0),                                              # pop: a failure
    reco(0, 7), *watching(1, 7, A, 2),                                 # no arm: taken
    reco(0, 8, server="other:9"), *watching(1, 8, A, 2),               # another service
    "2025-03-01T12:00:01,9,GET /data/m/Not A Movie/1.mpg",             # rejected
    *watching(300, 9, C, 1),                                           # closes the windows
]
SERVED = [(1, "als", ALS_V), (2, "als", ALS_V), (3, "pop", POP_V), (3, "als", ALS_V),
          (4, "pop", POP_V), (5, "pop", POP_V), (6, "pop", POP_V)]


def produce(bootstrap: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    ensure_topic(bootstrap, topic, 2)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for user, value in values:  # keyed by user, as the simulator and the service do
            producer.send(topic, key=str(user).encode(), value=value)
        producer.flush()
    finally:
        producer.close()


@pytest.fixture
def topics(stack: LocalStack, unique: str) -> OnlineSettings:
    log_topic, served_topic = f"log-{unique}", f"served-{unique}"
    produce(stack.bootstrap, log_topic,
            [(int(line.split(",")[1]), line.encode()) for line in LOG])
    records = [ServedRecord(request_id=f"{i:032x}", time_ms=1_000 + i, user_id=user, arm=arm,
                            model_version=version, items=(A, B), path="model",
                            fallback="budget" if user == 6 else None, latency_ms=2.0 + i,
                            status=200).to_json()
               for i, (user, arm, version) in enumerate(SERVED)]
    produce(stack.bootstrap, served_topic, [(u, r) for (u, _, _), r in zip(SERVED, records, strict=True)])
    return load(OnlineSettings, kafka_bootstrap=stack.bootstrap, kafka_topic=log_topic,
                served_topic=served_topic, online_idle_s=10.0)


def test_per_arm_outcomes_from_real_topics(topics: OnlineSettings) -> None:
    report = evaluate_online(topics, server=SERVER)
    rows = {r.arm: r for r in report.rows}
    taken = {arm: (r.outcome.requests, r.outcome.eligible, r.outcome.taken)
             for arm, r in rows.items()}
    assert taken == {"als": (3, 3, 2), "pop": (3, 2, 1), UNASSIGNED: (1, 1, 1)}
    assert rows["als"].outcome.minutes == 5 + 3 and rows["als"].outcome.ratings == 1
    assert report.reference == "pop"  # it served only the popularity baseline
    assert [(c.arm, c.reference) for c in report.comparisons] == [("als", "pop")]
    assert rows["pop"].serving is not None and rows["pop"].serving.fallbacks == 1
    assert rows["als"].serving is not None and rows["als"].serving.users == 3
    notes = " | ".join(report.notes)
    assert "1 users served in more than one arm" in notes
    assert "1 log lines rejected" in notes
    assert "1 recommendation lines outside the time or server filter" in notes

    everyone = evaluate_online(topics)  # without the server filter user 8 counts too
    assert {r.arm: r.outcome.taken for r in everyone.rows}[UNASSIGNED] == 2


def test_the_command_prints_and_writes_the_report(topics: OnlineSettings, tmp_path: Path) -> None:
    env = {"MOVIEREC_KAFKA_BOOTSTRAP": topics.kafka_bootstrap,
           "MOVIEREC_KAFKA_TOPIC": topics.kafka_topic,
           "MOVIEREC_SERVED_TOPIC": topics.served_topic, "MOVIEREC_ONLINE_IDLE_S": "10"}
    out = tmp_path / "out" / "online.json"
    result = CliRunner().invoke(online, ["--server", SERVER, "--reference", "als",
                                         "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "pop vs als: take rate" in result.output
    saved = json.loads(out.read_text())
    assert {a["arm"]: a["taken"] for a in saved["arms"]} == {"als": 2, "pop": 1, UNASSIGNED: 1}


def test_clear_errors_without_broker_or_records(stack: LocalStack, unique: str) -> None:
    [port] = free_ports(1)
    nobody = load(OnlineSettings, kafka_bootstrap=f"127.0.0.1:{port}")
    with pytest.raises(OnlineEvalError, match="cannot reach Kafka"):
        evaluate_online(nobody)
    ensure_topic(stack.bootstrap, f"empty-{unique}", 1)
    empty = load(OnlineSettings, kafka_bootstrap=stack.bootstrap, kafka_topic=f"log-{unique}",
                 served_topic=f"empty-{unique}", online_idle_s=5.0)
    with pytest.raises(OnlineEvalError, match="has no served records"):
        evaluate_online(empty)
    missing = load(OnlineSettings, kafka_bootstrap=stack.bootstrap,
                   served_topic=f"missing-{unique}", online_idle_s=5.0)
    with pytest.raises(OnlineEvalError, match="not found"):
        evaluate_online(missing)
    # through the root command, which turns the project's errors into one line
    result = CliRunner().invoke(main, ["eval", "online"],
                                env={"MOVIEREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    assert result.exit_code == 1 and "Error: cannot reach Kafka" in result.output


def test_written_since_reads_only_the_later_run(topics: OnlineSettings) -> None:
    """``written_since_ms`` (Kafka record time) evaluates one live run of a long log: the
    earlier lines and records are not read at all."""
    import time

    time.sleep(0.05)
    since_ms = int(time.time() * 1000)
    time.sleep(0.05)
    later = [reco(600, 1), *watching(601, 1, B, 4), *watching(900, 9, C, 1)]
    produce(topics.kafka_bootstrap, topics.kafka_topic,
            [(int(line.split(",")[1]), line.encode()) for line in later])
    record = ServedRecord(request_id="f" * 32, time_ms=since_ms, user_id=1, arm="als",
                          model_version=ALS_V, items=(A, B), path="model", fallback=None,
                          latency_ms=1.0, status=200).to_json()
    produce(topics.kafka_bootstrap, topics.served_topic, [(1, record)])

    report = evaluate_online(topics, server=SERVER, reference="als", written_since_ms=since_ms)
    rows = {r.arm: (r.outcome.requests, r.outcome.taken) for r in report.rows}
    assert rows == {"als": (1, 1)}
    assert f"read 1 served records from {topics.served_topic} and {len(later)} log lines" \
        in report.notes[0]
