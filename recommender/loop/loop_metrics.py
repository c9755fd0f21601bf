"""The loop's Prometheus metrics. Counts come from the journal at each scrape, so they are
exact across restarts of the loop (a restarted process does not reset its counters to 0
and make ``increase()`` guess); stage durations are observed in the running process.

- ``movierec_loop_cycles_total{result}``: closed cycles by result.
- ``movierec_loop_cycle_open``: 1 while a cycle is in progress; ``movierec_loop_canary_running``
  1 while its canary serves.
- ``movierec_loop_canary_users{arm}``, ``movierec_loop_canary_p_value``: the last look.
- ``movierec_loop_last_update_timestamp_seconds``: when the champion last changed by the
  loop (0: never), and ``movierec_loop_seconds_since_update`` (since the loop's first
  cycle when it never promoted): the "no model update for too long" alert reads it.
- ``movierec_loop_shilling_campaigns`` and ``movierec_loop_shilling_accounts_excluded``:
  what the last training left out as coordinated fake accounts
  (``recommender.shilling``; 0 before any training).
- ``movierec_loop_action_duration_seconds{action}``: how long each action took.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from recommender.loop.cycle import Result, Stage, counts, open_cycle
from recommender.loop.journal import Journal

DURATION_BUCKETS_S = (0.1, 1, 5, 15, 60, 180, 600, 1800, 3600)
"""From a canary look (a second) to a full-scale training (tens of minutes)."""


class JournalCollector(Collector):
    """Reads the journal at each scrape (module docstring)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        cycles = self.journal.cycles()
        total = CounterMetricFamily("movierec_loop_cycles", "Closed retraining cycles by result",
                                    labels=["result"])
        for result, n in counts(cycles).items():
            total.add_metric([result], n)
        yield total
        current = open_cycle(cycles)
        yield GaugeMetricFamily("movierec_loop_cycle_open", "1 while a cycle is in progress",
                                value=float(current is not None))
        in_canary = current is not None and current.stage in (Stage.CANARY, Stage.LOOKED)
        yield GaugeMetricFamily("movierec_loop_canary_running",
                                "1 while a canary routes users to a challenger",
                                value=float(in_canary))
        users = GaugeMetricFamily("movierec_loop_canary_users",
                                  "Users with eligible lists per canary arm at the last look",
                                  labels=["arm"])
        p_value = GaugeMetricFamily("movierec_loop_canary_p_value",
                                    "Always-valid p-value of the running canary (1: none)",
                                    value=current.last_p if in_canary and current else 1.0)
        last_look = next((e for e in reversed(current.entries) if e["stage"] == "looked"),
                         None) if in_canary and current else None
        for arm, n in zip(("champion", "challenger"),
                          (last_look or {}).get("numbers", {}).get("users", [0, 0]), strict=False):
            users.add_metric([arm], n)
        yield users
        yield p_value
        updates = [c.entries[-1]["at"] for c in cycles
                   if c.stage is Stage.CLOSED and c.result is Result.PROMOTED]
        last = datetime.fromisoformat(updates[-1]).timestamp() if updates else 0.0
        yield GaugeMetricFamily("movierec_loop_last_update_timestamp_seconds",
                                "When the loop last promoted a model (unix seconds; 0: never)",
                                value=last)
        trained = next((e for c in reversed(cycles) for e in reversed(c.entries)
                        if e["stage"] == "trained"), None)
        shilling = ((trained or {}).get("numbers") or {}).get("shilling") or {}
        yield GaugeMetricFamily("movierec_loop_shilling_campaigns",
                                "Shilling campaigns the last training found (its accounts "
                                "were left out)", value=float(shilling.get("campaigns", 0)))
        yield GaugeMetricFamily("movierec_loop_shilling_accounts_excluded",
                                "Accounts the last training left out as coordinated fakes",
                                value=float(shilling.get("excluded_accounts", 0)))
        since_first = cycles[0].started.timestamp() if cycles else time.time()
        yield GaugeMetricFamily("movierec_loop_seconds_since_update",
                                "Seconds since the loop last promoted a model (or since its "
                                "first cycle when it never has)",
                                value=time.time() - (last or since_first))


@dataclass
class LoopMetrics:
    registry: CollectorRegistry
    action_seconds: Histogram

    @classmethod
    def create(cls, journal: Journal) -> LoopMetrics:
        registry = CollectorRegistry()
        registry.register(JournalCollector(journal))
        action = Histogram("movierec_loop_action_duration_seconds",
                           "Time each loop action took (train, start_canary, watch, ...)",
                           ["action"], buckets=DURATION_BUCKETS_S, registry=registry)
        return cls(registry, action)
