"""The live monitor's safety counts (``Monitor(safety=...)``): every served list judged
as it is read, counted by audience and by unsafe reason, checkpointed with the rest and
exported to Prometheus; a judge that fails counts ``unjudged`` and never stops it."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from movierec.settings import load
from online_eval.monitor import Monitor, registry_for
from online_eval.settings import OnlineSettings
from recommender.serving.core import ADULT, MINOR, UNKNOWN_AGE
from recommender.serving.telemetry import ServedRecord


def record(n: int, user: int, items: tuple[str, ...]) -> bytes:
    return ServedRecord(request_id=f"{n:032x}", time_ms=1_700_000_000_000 + n, user_id=user,
                        arm="default", model_version="v1", items=items, path="model",
                        fallback=None, latency_ms=2.0, status=200).to_json()


def judge(r: ServedRecord) -> tuple[str, list[str]]:
    if r.user_id == 99:
        raise ConnectionError("redis went away")
    who = {1: MINOR, 2: ADULT}.get(r.user_id, UNKNOWN_AGE)
    return who, ["rating_R" for m in r.items if m.startswith("r+")] if who != ADULT else []


def test_lists_are_judged_counted_checkpointed_and_exported(tmp_path: Path) -> None:
    settings = load(OnlineSettings, environ={})
    monitor = Monitor(settings, state_dir=tmp_path, safety=judge)
    topic = settings.served_topic
    for n, (user, items) in enumerate([(1, ("a", "b")), (1, ("r+x", "a")), (2, ("r+x",)),
                                       (3, ("r+y", "r+z")), (99, ("a",))]):
        monitor.feed(topic, 0, n, record(n, user, items), 0)
    monitor.feed(topic, 0, 5, b"not json", 0)
    assert monitor.safety == {MINOR: 2, ADULT: 1, UNKNOWN_AGE: 1, "unjudged": 1,
                              f"unsafe|{MINOR}|rating_R": 1,
                              f"unsafe|{UNKNOWN_AGE}|rating_R": 2}
    assert monitor.served_records == {"accepted": 5, "rejected": 1}
    monitor.checkpoint()
    text = generate_latest(registry_for(monitor)).decode()
    assert 'movierec_online_lists_safety_judged_total{audience="minor"} 2.0' in text
    assert ('movierec_online_unsafe_served_total{audience="unknown_age",reason="rating_R"} 2.0'
            in text)
    resumed = Monitor(settings, state_dir=tmp_path)  # a restart: the counts carry over
    assert resumed.safety == monitor.safety


def test_with_nothing_unsafe_the_judged_lists_still_export_zeroes(tmp_path: Path) -> None:
    monitor = Monitor(load(OnlineSettings, environ={}), state_dir=tmp_path)
    text = generate_latest(registry_for(monitor)).decode()
    assert 'movierec_online_lists_safety_judged_total{audience="minor"} 0.0' in text
    assert "movierec_online_unsafe_served_total{" not in text
