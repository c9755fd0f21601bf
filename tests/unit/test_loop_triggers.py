"""The loop's triggers: a schedule in event time, the drift alarm and a significant decay of
the champion's take rate, with a cooldown on the last two."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recommender.loop.triggers import Signals, TriggerSettings, check

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
S = TriggerSettings(every=timedelta(hours=24), decay=0.2, decay_p=0.01, min_lists=300,
                    cooldown=timedelta(hours=6))


def hours_ago(h: float) -> datetime:
    return NOW - timedelta(hours=h)


def test_nothing_read_nothing_triggered_and_the_first_cycle_runs_at_once() -> None:
    assert check(Signals(log_time=None), S) is None
    first = check(Signals(log_time=NOW), S)
    assert first is not None and first.kind == "schedule" and "no cycle" in first.reason


def test_the_schedule_counts_log_time_not_wall_time() -> None:
    assert check(Signals(NOW, hours_ago(23.9)), S) is None
    due = check(Signals(NOW, hours_ago(24)), S)
    assert due is not None and due.kind == "schedule"
    assert due.numbers == {"log_hours_since_last": 24.0} and "24.0 h of log" in due.reason


def test_drift_triggers_after_the_cooldown_only() -> None:
    drifting = ("genre_share", "rating_mean")
    assert check(Signals(NOW, hours_ago(5), drifting=drifting), S) is None
    fired = check(Signals(NOW, hours_ago(7), drifting=drifting), S)
    assert fired is not None and fired.kind == "drift"
    assert fired.numbers["features"] == ["genre_share", "rating_mean"]


@pytest.mark.parametrize(("recent", "baseline", "fires"), [
    ((150, 1000), (250, 1000), True),     # 40% drop, p ~ 1e-8
    ((230, 1000), (250, 1000), False),    # 8% drop: under the threshold
    ((35, 200), (50, 200), False),        # 30% drop, too few lists to judge
    ((180, 1000), (250, 1000), True),     # 28% drop, p ~ 7e-5
    ((190, 1000), (250, 1000), True),     # 24%, p ~ 6e-4
    ((300, 1000), (250, 1000), False),    # a rise never triggers
    ((0, 1000), (0, 1000), False),        # nothing taken ever: no level to fall from
])
def test_decay_needs_a_large_and_significant_drop(recent: tuple[int, int],
                                                  baseline: tuple[int, int], fires: bool) -> None:
    fired = check(Signals(NOW, hours_ago(8), recent=recent, baseline=baseline), S)
    assert (fired is not None and fired.kind == "decay") is fires
    if fired is not None:
        assert fired.numbers["p_value"] < 0.01 and fired.numbers["drop"] >= 0.2


def test_a_large_drop_on_a_small_sample_waits_for_significance() -> None:
    # 25% drop on 320 lists each: p ~ 0.03, not below 0.01
    assert check(Signals(NOW, hours_ago(8), recent=(60, 320), baseline=(80, 320)), S) is None


def test_the_schedule_wins_over_drift_and_decay_and_decay_waits_for_the_cooldown() -> None:
    both = Signals(NOW, hours_ago(30), drifting=("x",), recent=(100, 1000), baseline=(300, 1000))
    fired = check(both, S)
    assert fired is not None and fired.kind == "schedule"
    early = Signals(NOW, hours_ago(1), recent=(100, 1000), baseline=(300, 1000))
    assert check(early, S) is None


def test_a_trigger_carries_the_log_time_it_fired_at() -> None:
    fired = check(Signals(NOW, hours_ago(30)), S)
    assert fired is not None and fired.log_time == NOW
