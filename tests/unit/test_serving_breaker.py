"""The circuit breaker's state machine, driven by a fake clock."""

from __future__ import annotations

import threading
import time

import pytest

from recommender.serving.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class FakeClock:
    """Settable seconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowTime(float):
    """A time whose subtraction sleeps first. The breaker subtracts inside its critical
    section (between reading its state and changing it), so the pause hands the GIL to the
    other threads exactly where a missing lock would let two of them through."""

    def __sub__(self, other: float) -> float:
        time.sleep(0.001)
        return float(self) - float(other)


class SlowClock(FakeClock):
    def __call__(self) -> float:
        return SlowTime(self.now)


def opened(failures: int = 3, reset_s: float = 2.0,
           clock: FakeClock | None = None) -> tuple[CircuitBreaker, FakeClock, list[str]]:
    clock, changes = clock or FakeClock(), []
    breaker = CircuitBreaker(failures, reset_s, clock=clock, on_change=changes.append)
    for _ in range(failures):
        breaker.failure()
    assert breaker.state == OPEN
    return breaker, clock, changes


def test_opens_after_exactly_n_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 2.0, clock=clock)
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(3, 2.0, clock=FakeClock())
    for _ in range(5):  # 2 failures, a success, 2 failures, ...: never 3 in a row
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert breaker.state == CLOSED and breaker.allow()


def test_refuses_until_reset_then_lets_one_trial_through() -> None:
    breaker, clock, _ = opened(reset_s=2.0)
    clock.now += 1.999
    assert not breaker.allow()
    clock.now += 0.001
    assert breaker.allow()  # the trial
    assert breaker.state == HALF_OPEN
    assert not breaker.allow() and not breaker.allow()  # only one while it is out


def test_a_successful_trial_closes_it() -> None:
    breaker, clock, changes = opened()
    clock.now += 2.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED
    assert all(breaker.allow() for _ in range(10))
    assert changes == [OPEN, HALF_OPEN, CLOSED]


def test_a_failed_trial_reopens_it_for_another_full_reset() -> None:
    breaker, clock, changes = opened(reset_s=2.0)
    clock.now += 2.5
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN
    clock.now += 1.9  # counted from the trial's failure, not from the first opening
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_a_failed_trial_reopens_at_once_not_after_n_more_failures() -> None:
    breaker, clock, _ = opened(failures=5)
    clock.now += 2.0
    breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN


def test_late_outcomes_while_open_change_nothing() -> None:
    breaker, clock, changes = opened(reset_s=2.0)
    clock.now += 1.5
    breaker.success()  # a call let through before it opened: it does not close it
    breaker.failure()  # nor does a late failure extend the wait
    assert breaker.state == OPEN
    clock.now += 0.5
    assert breaker.allow()
    assert changes == [OPEN, HALF_OPEN]


def test_a_trial_that_never_reports_is_replaced_after_reset() -> None:
    breaker, clock, _ = opened(reset_s=2.0)
    clock.now += 2.0
    assert breaker.allow()  # its caller never reports
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    assert not breaker.allow()


def trial_round() -> list[bool]:
    """Eight threads ask a half-open breaker five times each, all at once: every answer."""
    breaker, clock, _ = opened(clock=SlowClock())
    clock.now += 2.0
    start = threading.Barrier(8)
    answers: list[bool] = []
    lock = threading.Lock()

    def ask() -> None:
        start.wait()
        got = [breaker.allow() for _ in range(5)]
        with lock:
            answers.extend(got)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_exactly_one_trial_under_eight_threads() -> None:
    for _ in range(5):  # several rounds: a race would show up as two Trues in one
        answers = trial_round()
        assert len(answers) == 40 and answers.count(True) == 1


def test_an_on_change_that_raises_does_not_reach_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    def broken(state: str) -> None:
        raise RuntimeError("gauge down")

    breaker = CircuitBreaker(1, 1.0, clock=FakeClock(), on_change=broken)
    breaker.failure()
    assert breaker.state == OPEN and "gauge down" in caplog.text


@pytest.mark.parametrize("failures, reset_s", [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_rejects_nonsense_settings(failures: int, reset_s: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures, reset_s)
