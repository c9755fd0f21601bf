"""The live online metrics against the real broker: read both topics as they grow, stop,
resume from the checkpoint, and count every line exactly once; the Prometheus export
shows the same numbers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaProducer
from prometheus_client import generate_latest

from movierec.kafka_admin import ensure_topic
from movierec.settings import load
from movierec.wire import LineParser
from online_eval.live import LiveMetrics
from online_eval.monitor import Monitor, registry_for
from online_eval.settings import OnlineSettings
from tests.integration.conftest import LocalStack
from tests.integration.test_online_eval import produce
from tests.unit.test_online_live import _log

pytestmark = pytest.mark.integration

TICK = "2025-03-02T06:00:00.000,98,GET /data/m/a+2001/0.mpg"

SUMMED = ("eligible", "taken", "minutes", "ratings", "plays", "judged", "personalized")


def summed(totals: dict[str, dict[str, float]]) -> Counter[str]:
    """Label-independent sums: which arm a line lands in depends on the order the two
    topics are read, the sums do not."""
    out: Counter[str] = Counter()
    for row in totals.values():
        for key, value in row.items():
            if key.startswith("requests_") or key in SUMMED:
                out[key] += value
    return out


def to_records(items: list[tuple[str, object]]) -> tuple[list, list]:
    served = [(r.user_id, r.to_json()) for kind, r in items if kind == "served"]  # type: ignore[attr-defined]
    lines = []
    for kind, event in items:
        if kind != "served":
            line = _line(event)
            lines.append((event.user_id, line.encode()))  # type: ignore[attr-defined]
    return served, lines


def _line(event: object) -> str:
    from movierec.wire import Rate, Recommendation, rate_line, recommendation_line, watch_line

    stamp = event.time.isoformat(timespec="milliseconds")  # type: ignore[attr-defined]
    if isinstance(event, Recommendation):
        result = ", ".join(event.items) if event.status == 200 else event.error
        return recommendation_line(stamp, event.user_id, event.server, event.status, result,
                                   event.response_time_ms)
    if isinstance(event, Rate):
        return rate_line(stamp, event.user_id, event.movie_id, event.rating)
    return watch_line(stamp, event.user_id, event.movie_id, event.minute)  # type: ignore[attr-defined]


def test_live_metrics_resume_from_their_checkpoint_and_count_each_line_once(
        stack: LocalStack, unique: str, tmp_path: Path) -> None:
    settings = load(OnlineSettings, kafka_bootstrap=stack.bootstrap, kafka_topic=f"log-{unique}",
                    served_topic=f"served-{unique}")
    for topic in (settings.kafka_topic, settings.served_topic):
        ensure_topic(stack.bootstrap, topic, 2)
    items = _log(7)
    half = len(items) // 2
    first, second = to_records(items[:half]), to_records(items[half:])

    produce(stack.bootstrap, settings.served_topic, first[0])
    produce(stack.bootstrap, settings.kafka_topic, first[1])
    monitor = Monitor(settings, state_dir=tmp_path)
    monitor.run(threading.Event(), checkpoint_s=0.5, idle_exit_s=3.0)
    assert monitor.lines["accepted"] == len(first[1])
    assert (tmp_path / "live-checkpoint.json").exists()

    produce(stack.bootstrap, settings.served_topic, second[0])
    produce(stack.bootstrap, settings.kafka_topic, second[1])
    # the log's end on every partition, as a live log's partitions all move on: minutes
    # close on the slowest partition's clock
    ticks = KafkaProducer(bootstrap_servers=stack.bootstrap)
    try:
        for partition in (0, 1):
            ticks.send(settings.kafka_topic, value=TICK.encode(), partition=partition)
        ticks.flush()
    finally:
        ticks.close()
    resumed = Monitor(settings, state_dir=tmp_path)  # a new process: the checkpoint only
    resumed.run(threading.Event(), checkpoint_s=0.5, idle_exit_s=3.0)
    assert resumed.lines["accepted"] == len(first[1]) + len(second[1]) + 2

    reference = LiveMetrics()
    parser = LineParser(settings.rating_scale)
    for kind, item in items:
        if kind == "served":
            reference.served(item)  # type: ignore[arg-type]
        else:
            reference.add(parser.parse(_line(item).encode()))
    reference.add(parser.parse(TICK.encode()))
    assert summed(resumed.totals()) == summed(reference.totals())
    assert (resumed.live.minutes_up, resumed.live.minutes_down) == (
        reference.minutes_up, reference.minutes_down)

    text = generate_latest(registry_for(resumed)).decode()
    taken = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("movierec_online_lists_taken_total{"))
    assert taken == summed(reference.totals())["taken"] > 0
    assert f'movierec_online_log_lines_total{{result="accepted"}} {float(resumed.lines["accepted"])}' in text


def test_from_now_skips_the_history_and_counts_what_follows(
        stack: LocalStack, unique: str, tmp_path: Path) -> None:
    """A monitor started beside a long history (the demo's backfill) with ``from_now``
    counts only the lines written after it started; its checkpoint then holds."""
    settings = load(OnlineSettings, kafka_bootstrap=stack.bootstrap, kafka_topic=f"log-{unique}",
                    served_topic=f"served-{unique}")
    ensure_topic(stack.bootstrap, settings.kafka_topic, 2)  # the served topic comes later
    items = _log(11)
    half = len(items) // 2
    history, later = to_records(items[:half]), to_records(items[half:])
    produce(stack.bootstrap, settings.kafka_topic, history[1])
    stop = threading.Event()
    monitor = Monitor(settings, state_dir=tmp_path)
    reader = threading.Thread(target=monitor.run, args=(stop,),
                              kwargs={"checkpoint_s": 0.5, "from_now": True})
    reader.start()
    try:
        time.sleep(3.0)  # the served topic does not exist yet: the monitor waits
        assert reader.is_alive(), "a missing served topic is waited for, not an error"
        ensure_topic(stack.bootstrap, settings.served_topic, 2)  # the service's first answer
        deadline = time.monotonic() + 30
        while not (tmp_path / "live-checkpoint.json").exists():  # positioned at the ends
            assert time.monotonic() < deadline, "the monitor never checkpointed"
            time.sleep(0.2)
        produce(stack.bootstrap, settings.served_topic, later[0])
        produce(stack.bootstrap, settings.kafka_topic, later[1])
        while monitor.lines["accepted"] < len(later[1]) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # anything more would be a line counted twice or the history
    finally:
        stop.set()
        reader.join(timeout=30)
    assert monitor.lines["accepted"] == len(later[1]), "the history was skipped, the rest read"
    served = monitor.offsets[settings.served_topic]
    assert sum(served.values()) == len(later[0]), "a topic that appeared later is read whole"
