"""When the loop starts a cycle, and why. Pure: the signals in, a ``Trigger`` or None out.

Three triggers, checked in this order, each recorded with its reason and numbers:

- **schedule**, in *event time*: a cycle when the log has advanced ``every`` (24 h by
  default) past the log time at which the last cycle began. Event time, not wall time,
  so a replay of a week of log retrains seven times however fast it is read, and a
  stalled stream does not retrain on nothing new.
- **drift**: the consumer's drift monitor alarms on a feature (``movierec_drift_alarm``);
  the input the champion learned from no longer looks like the input it is served on.
- **decay**: the champion's online take rate over the last window fell more than
  ``decay`` (relative) below its own level over the preceding baseline, *and* the drop
  is significant (one-sided two-proportion z-test, ``online_eval.stats``), so a quiet
  hour's noise does not retrain. The champion's own past is the reference: take rates
  differ between sites and seasons, and a fixed threshold would suit only one.

Drift and decay are rate-limited by ``cooldown`` (event time) since the last cycle began:
a retrained model needs time before its own numbers mean anything, and a persistent drift
alarm must not retrain in a loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from online_eval.stats import two_proportion_test


@dataclass(frozen=True)
class TriggerSettings:
    """``every``: the schedule (event time); ``decay``: the relative drop of take rate
    that counts; ``decay_p``: the one-sided p-value it needs; ``min_lists``: eligible
    lists needed in each window before decay is judged; ``cooldown``: event time after a
    cycle began before drift or decay may trigger another."""

    every: timedelta = timedelta(hours=24)
    decay: float = 0.2
    decay_p: float = 0.01
    min_lists: int = 300
    cooldown: timedelta = timedelta(hours=6)


@dataclass(frozen=True)
class Signals:
    """What the loop sees now.

    ``log_time``: the latest event time of the log (None: nothing read yet);
    ``last_cycle_log_time``: the log time when the last cycle began (None: never);
    ``drifting``: features whose drift alarm is on; ``recent`` and ``baseline``: the
    champion's (taken, eligible lists) over the last window and the window before it.
    """

    log_time: datetime | None
    last_cycle_log_time: datetime | None = None
    drifting: tuple[str, ...] = ()
    recent: tuple[int, int] = (0, 0)
    baseline: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Trigger:
    """Why a cycle starts: ``kind`` (schedule, drift, decay, manual), a sentence, the
    numbers behind it, and the log time it fired at (the next schedule counts from it)."""

    kind: str
    reason: str
    numbers: dict = field(default_factory=dict)
    log_time: datetime | None = None


def check(signals: Signals, settings: TriggerSettings) -> Trigger | None:
    """The trigger that fires now, or None (module docstring for the rules)."""
    found = _check(signals, settings)
    if found is None:
        return None
    return Trigger(found.kind, found.reason, found.numbers, signals.log_time)


def _check(signals: Signals, settings: TriggerSettings) -> Trigger | None:
    now, last = signals.log_time, signals.last_cycle_log_time
    if now is None:
        return None
    if last is None:
        return Trigger("schedule", "no cycle has run yet", {"log_time": now.isoformat()})
    since = now - last
    if since >= settings.every:
        return Trigger("schedule", f"{since / timedelta(hours=1):.1f} h of log since the last "
                       f"cycle (every {settings.every / timedelta(hours=1):g} h)",
                       {"log_hours_since_last": round(since / timedelta(hours=1), 2)})
    if since < settings.cooldown:
        return None
    if signals.drifting:
        return Trigger("drift", "drift alarm on " + ", ".join(sorted(signals.drifting)),
                       {"features": sorted(signals.drifting)})
    return _decay(signals, settings)


def _decay(signals: Signals, settings: TriggerSettings) -> Trigger | None:
    (x1, n1), (x0, n0) = signals.recent, signals.baseline
    if min(n1, n0) < settings.min_lists or x0 == 0:
        return None
    recent, base = x1 / n1, x0 / n0
    drop = 1 - recent / base
    test = two_proportion_test(x1, n1, x0, n0)
    # one-sided: half the two-sided p when the difference points down
    p_down = test.p_value / 2 if test.p_value is not None and recent < base else 1.0
    if drop < settings.decay or p_down >= settings.decay_p:
        return None
    return Trigger("decay", f"take rate {recent:.3f} is {drop:.0%} below its recent level "
                   f"{base:.3f} (one-sided p = {p_down:.2g})",
                   {"recent": round(recent, 5), "baseline": round(base, 5),
                    "drop": round(drop, 4), "p_value": p_down})
