"""The simulator against the real broker: backfill through both clients, and the
grader reading a topic."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer

from movierec.kafka_admin import ensure_topic
from movierec.wire import LineParser, Rejection
from ops.cli import main
from simulator.backfill import backfill
from simulator.grade import GradeAccumulator
from simulator.grade_probe import GradeError, grade_topic
from simulator.history import HistoryGenerator
from simulator.producer import open_sink
from simulator.world import World, WorldSpec
from tests.integration.conftest import LocalStack
from tests.unit.test_sim_grade import HAND_LOG


def _consume_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=8000,
                             max_poll_records=5000)
    records = []
    try:
        while len(records) < expected:
            batch = consumer.poll(timeout_ms=5000)
            if not batch:
                break
            for part in batch.values():
                records.extend(part)
    finally:
        consumer.close()
    return records


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_backfill_lands_every_line_in_kafka(stack: LocalStack, unique: str, client: str) -> None:
    topic = f"backfill-{client}-{unique}"
    ensure_topic(stack.bootstrap, topic, 4)
    world = World.build(WorldSpec(seed=1, n_users=2_000, n_movies=300))
    generator = HistoryGenerator(world, start=datetime(2025, 3, 1), days=0.25, seed=1)
    sink = open_sink(client, bootstrap=stack.bootstrap, topic=topic)
    try:
        result = backfill(generator, sink, progress=False)
    finally:
        sink.close()
    records = _consume_all(stack.bootstrap, topic, result.lines)
    assert len(records) == result.lines > 1000
    parser = LineParser()
    kinds = Counter(parser.parse(r.value).kind for r in records)
    assert kinds == {k: v for k, v in result.by_kind.items() if v}
    assert len({r.partition for r in records}) == 4
    for r in records[:500]:  # keyed by user, so a user's lines share a partition
        assert r.key == r.value.split(b",", 2)[1]


def test_grade_topic_matches_the_pure_grader(stack: LocalStack, unique: str) -> None:
    topic = f"grade-{unique}"
    ensure_topic(stack.bootstrap, topic, 3)
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
    for i, line in enumerate(HAND_LOG):
        raw = line if isinstance(line, bytes) else line.encode()
        producer.send(topic, key=str(i).encode(), value=raw)
    producer.flush()
    producer.close()

    expected = GradeAccumulator()
    for line in HAND_LOG:
        expected.add_line(line)
    got = grade_topic(stack.bootstrap, topic, idle_s=5).to_dict()
    want = expected.report().to_dict()
    assert got.pop("notes") == [f"source: kafka topic {topic} at {stack.bootstrap}"]
    want.pop("notes")
    assert got == want
    assert got["total_requests"] == 22 and got["successful"] == 10

    result = CliRunner().invoke(main, ["sim", "grade", "--from-kafka", "--topic", topic],
                                env={"MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap})
    assert result.exit_code == 0, result.output
    rows = {line[:37].strip(): line[37:].split() for line in result.stdout.splitlines()}
    assert rows["requests"] == ["22"] and rows["successful"][0] == "10"


def test_grade_topic_since_reads_only_what_was_written_after(stack: LocalStack, unique: str) -> None:
    """``since_ms`` selects by Kafka record timestamp: the lines sent with an old timestamp
    are skipped, those sent after are graded exactly as the pure grader grades them."""
    topic = f"grade-since-{unique}"
    ensure_topic(stack.bootstrap, topic, 2)
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
    since_ms = int(time.time() * 1000) - 60_000
    for i, line in enumerate(HAND_LOG):  # first copy: "written" an hour before since_ms
        raw = line if isinstance(line, bytes) else line.encode()
        producer.send(topic, key=str(i).encode(), value=raw, timestamp_ms=since_ms - 3_600_000)
    later = HAND_LOG[: len(HAND_LOG) // 2]
    for i, line in enumerate(later):
        raw = line if isinstance(line, bytes) else line.encode()
        producer.send(topic, key=str(i).encode(), value=raw, timestamp_ms=since_ms + i)
    producer.flush()
    producer.close()

    expected = GradeAccumulator()
    for line in later:
        expected.add_line(line)
    got = grade_topic(stack.bootstrap, topic, idle_s=5, since_ms=since_ms).to_dict()
    want = expected.report().to_dict()
    got.pop("notes"), want.pop("notes")
    assert got == want and 0 < got["total_requests"] < 22
    nothing = grade_topic(stack.bootstrap, topic, idle_s=5, since_ms=since_ms + 3_600_000)
    assert nothing.to_dict()["total_requests"] == 0


def test_grade_topic_fails_clearly_without_the_topic(stack: LocalStack, unique: str) -> None:
    with pytest.raises(GradeError):
        grade_topic(stack.bootstrap, f"missing-{unique}", idle_s=2, timeout_s=10)


def test_every_backfilled_line_parses(stack: LocalStack, unique: str) -> None:
    """Through the CLI, as a user runs it, with the default bulk client."""
    topic = f"cli-{unique}"
    ensure_topic(stack.bootstrap, topic, 2)
    result = CliRunner().invoke(
        main, ["sim", "backfill", "--users", "1000", "--movies", "200", "--days", "0.1",
               "--topic", topic, "--no-progress"],
        env={"MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap})
    assert result.exit_code == 0, result.output
    sent = int(result.stdout.split(" lines to ")[0].replace(",", ""))
    records = _consume_all(stack.bootstrap, topic, sent)
    parser = LineParser()
    assert len(records) == sent
    assert not [r.value for r in records if isinstance(parser.parse(r.value), Rejection)]


def test_live_mode_writes_the_course_log_to_kafka(stack: LocalStack, unique: str) -> None:
    """`movierec sim live` against a tiny service, lines into the real broker, then graded."""
    import threading

    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    from tests.conftest import QuietHandler, free_ports

    @Request.application
    def service(request: Request) -> Response:
        return Response("the+great+2013,key+1994", mimetype="text/plain")

    port = free_ports(1)[0]
    server = make_server("127.0.0.1", port, service, threaded=True,
                         request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    topic = f"live-{unique}"
    ensure_topic(stack.bootstrap, topic, 4)
    try:
        result = CliRunner().invoke(
            main, ["sim", "live", "--users", "2000", "--movies", "300", "--url",
                   f"http://127.0.0.1:{port}", "--rate", "40", "--duration", "2",
                   "--clock-ratio", "600", "--topic", topic, "--truth", f"/tmp/{unique}.jsonl"],
            env={"MOVIEREC_KAFKA_BOOTSTRAP": stack.bootstrap})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    records = _consume_all(stack.bootstrap, topic, stats["lines"])
    assert len(records) == stats["lines"] > stats["requests"] > 40
    report = grade_topic(stack.bootstrap, topic, idle_s=5)
    assert report.total_requests == stats["requests"] == report.successful
