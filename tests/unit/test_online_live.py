"""The continuous online metrics' core: per arm and model version, the graders' request
outcomes, availability by minute, take rate, plays and license cost, personalized lists,
and a checkpoint that resumes without double counting or losing a window."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

from movierec.wire import Rate, Recommendation, Watch
from online_eval.join import UNASSIGNED
from online_eval.live import LiveMetrics
from recommender.serving.telemetry import ServedRecord

T0 = datetime(2025, 3, 1, 12, 0)
A, B, C = "a+2001", "b+2002", "c+2003"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def served(user: int, arm: str, version: str, ms: int = 1_000) -> ServedRecord:
    return ServedRecord(request_id=f"{user:032x}", time_ms=ms, user_id=user, arm=arm,
                        model_version=version, items=(A, B), path="model", fallback=None,
                        latency_ms=5.0, status=200)


def reco(minute: float, user: int, items: tuple[str, ...] = (A, B), status: int = 200,
         ms: int = 30, error: str = "") -> Recommendation:
    return Recommendation(at(minute), user, "svc:8082", status, items if status == 200 else (),
                          error, ms)


def test_outcomes_are_counted_per_arm_and_version_with_the_graders_rules() -> None:
    live = LiveMetrics()
    live.served(served(1, "champion", "hybrid-1"))
    live.served(served(2, "challenger", "als-2"))
    for event in [reco(0, 1), reco(0.1, 1, ms=700), reco(0.2, 2),
                  reco(0.3, 2, status=0, error="Connection refused"), reco(0.4, 3)]:
        live.add(event)
    totals = live.totals()
    assert totals["champion|hybrid-1"]["requests_success"] == 1
    assert totals["champion|hybrid-1"]["requests_late"] == 1
    assert totals["challenger|als-2"]["requests_refused"] == 1
    assert totals[UNASSIGNED]["requests_success"] == 1


def test_a_minute_closes_after_the_lateness_and_is_up_or_down_by_the_graders_rule() -> None:
    live = LiveMetrics(lateness=timedelta(minutes=5))
    events = [reco(0.1, 1), reco(0.5, 2),                                          # up
              reco(1.1, 1), reco(1.2, 1, status=0, error="timed out"),              # 1 of 2: up
              reco(2.1, 1, status=0, error="timed out"), reco(2.2, 2, ms=900),     # down
              Watch(at(6.5), 9, C, 0)]                                              # the clock
    for event in events:
        live.add(event)
    assert (live.minutes_up, live.minutes_down) == (1, 0), "only minute 0 is 5 minutes old"
    live.add(Watch(at(8), 9, C, 1))
    assert (live.minutes_up, live.minutes_down) == (2, 1)


def test_take_rate_plays_and_license_cost_per_label() -> None:
    live = LiveMetrics(lateness=timedelta(minutes=1))
    live.served(served(1, "champion", "v1"))
    live.served(served(2, "champion", "v1"))
    events = [reco(0, 1, (A, B)), *[Watch(at(2 + k), 1, A, k) for k in range(10)],
              Rate(at(15), 1, A, 5),
              reco(0, 2, (A, C)), Watch(at(3), 2, C, 0), Watch(at(4), 2, C, 1),
              Watch(at(400), 9, B, 0)]
    for event in events:
        live.add(event)
    row = live.totals(cost_of={A: 1.5, C: 0.25})["champion|v1"]
    assert (row["eligible"], row["taken"], row["plays"]) == (2, 2, 2)
    assert row["minutes"] == 10 + 2 and row["ratings"] == 1 and row["rating_sum"] == 5
    assert row["cost_usd"] == 1.75
    assert live.movies_played() == {A, C}


def test_personalized_lists_are_those_unlike_the_minutes_most_common() -> None:
    live = LiveMetrics(lateness=timedelta(minutes=1))
    for user in range(1, 7):
        live.served(served(user, "champion", "v1"))
    common, other = (A, B), (C, B)
    for user, items in [(1, common), (2, common), (3, common), (4, other), (5, (B,)), (6, (C,))]:
        live.add(reco(0.5, user, items))
    live.add(reco(1.5, 1, (A,)))  # alone in its minute: no list served twice, all personal
    live.add(Watch(at(10), 9, B, 0))
    row = live.totals()["champion|v1"]
    assert (row["personalized"], row["judged"]) == (3 + 1, 6 + 1)


def test_labels_of_users_not_served_for_an_hour_are_forgotten() -> None:
    live = LiveMetrics(label_ttl_ms=3_600_000)
    live.served(served(1, "champion", "v1", ms=0))
    live.served(served(2, "champion", "v1", ms=3_000_000))
    live.served(served(3, "champion", "v1", ms=3_700_000))
    assert set(live.labels) == {1, 2, 3}, "swept every quarter of the TTL, not every record"
    live.served(served(4, "champion", "v1", ms=4_000_000))
    assert set(live.labels) == {2, 3, 4}


def _log(seed: int) -> list[tuple[str, object]]:
    """Served records and log events of 60 users over 3 hours, in reading order."""
    rng = random.Random(seed)
    out: list[tuple[str, object]] = []
    for user in range(1, 61):
        minute = rng.uniform(0, 180)
        arm, version = rng.choice([("champion", "v1"), ("challenger", "v2")])
        out.append(("served", served(user, arm, version, ms=int(minute * 60_000))))
        status = 200 if rng.random() < 0.9 else 0
        out.append(("log", reco(minute, user, rng.choice([(A, B), (B, C), (A, C)]), status,
                                ms=rng.choice([20, 30, 700]), error="" if status else "timeout")))
        if rng.random() < 0.5:
            movie = rng.choice((A, B, C))
            start = minute + rng.uniform(0, 25)
            out += [("log", Watch(at(start + k), user, movie, k)) for k in range(rng.randint(1, 40))]
            if rng.random() < 0.5:
                out.append(("log", Rate(at(start + 60), user, movie, rng.randint(1, 5))))
    served_first = sorted(out, key=lambda kv: (kv[1].time_ms / 60_000 if kv[0] == "served"  # type: ignore[attr-defined]
                                               else (kv[1].time - T0).total_seconds() / 60))  # type: ignore[attr-defined]
    return served_first + [("log", Watch(at(900), 99, A, 0))]


def _feed(live: LiveMetrics, items: list[tuple[str, object]]) -> None:
    for kind, item in items:
        if kind == "served":
            live.served(item)  # type: ignore[arg-type]
        else:
            live.add(item)


def test_a_checkpoint_resumes_without_double_counting_or_losing_a_window() -> None:
    for seed in (1, 2, 3):
        log = _log(seed)
        whole = LiveMetrics()
        _feed(whole, log)
        expected = (whole.totals({A: 1.0, B: 2.0}), whole.minutes_up, whole.minutes_down)
        for stop in (len(log) // 4, len(log) // 2, len(log) - 5):
            first = LiveMetrics()
            _feed(first, log[:stop])
            second = LiveMetrics()
            second.restore(json.loads(json.dumps(first.state())))
            _feed(second, log[stop:])
            got = (second.totals({A: 1.0, B: 2.0}), second.minutes_up, second.minutes_down)
            assert got == expected, (seed, stop)


def test_with_partitions_minutes_close_on_the_slowest_partitions_clock() -> None:
    live = LiveMetrics(lateness=timedelta(minutes=5))
    live.expect_sources([0, 1])
    live.add(reco(0.5, 1), source=0)
    live.add(Watch(at(60), 3, C, 0), source=0)      # partition 0 runs an hour ahead
    assert (live.minutes_up, live.minutes_down) == (0, 0), "partition 1 not heard from yet"
    live.add(reco(0.7, 2, status=0, error="timed out"), source=1)
    live.add(reco(1.2, 2), source=1)
    live.add(Watch(at(20), 4, C, 0), source=1)     # the watermark moves to minute 20
    assert (live.minutes_up, live.minutes_down) == (2, 0)  # minute 0: 1 of 2 is up
    live.add(reco(0.9, 5, status=0, error="timed out"), source=1)  # its minute was judged
    assert live.late_lines == 1 and live.minutes_down == 0
    assert live.totals()[UNASSIGNED]["requests_timeout"] == 2


def test_labels_wait_for_the_log_when_the_served_topic_is_read_ahead() -> None:
    live = LiveMetrics(label_ttl_ms=3_600_000)
    live.log_written(1_000)  # the log has been read up to its first second
    for k, user in enumerate(range(1, 9)):
        live.served(served(user, "champion", "v1", ms=k * 1_000_000))  # 2 h of served records
    assert set(live.labels) == set(range(1, 9)), "the log has not reached them yet"
    live.add(reco(0, 1))
    assert live.totals()["champion|v1"]["requests_success"] == 1
