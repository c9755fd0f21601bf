"""The consumer's Prometheus metrics, on a registry of its own (nothing at import time)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FRESHNESS_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class ConsumerMetrics:
    registry: CollectorRegistry
    events: Counter
    rejects: Counter
    batch_seconds: Histogram
    lag: Gauge
    freshness: Histogram
    redis_retries: Counter
    commit_failures: Counter
    store_rows: Counter
    drift_statistic: Gauge
    drift_alarm: Gauge
    drift_p_value: Gauge
    dlq_fallbacks: Counter
    store_free: Gauge
    store_size: Gauge
    heartbeat: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ConsumerMetrics:
        r = registry or CollectorRegistry()
        return cls(
            registry=r,
            events=Counter("movierec_consumer_events_total", "Accepted events by kind",
                           ["kind"], registry=r),
            rejects=Counter("movierec_consumer_rejects_total",
                            "Rejected lines (sent to the DLQ) by reason", ["reason"], registry=r),
            batch_seconds=Histogram("movierec_consumer_batch_seconds",
                                    "Time to process one batch, poll excluded", registry=r,
                                    buckets=BATCH_BUCKETS_S),
            lag=Gauge("movierec_consumer_lag_messages", "Messages behind the end, by partition",
                      ["partition"], registry=r),
            freshness=Histogram("movierec_consumer_freshness_seconds",
                                "From a line's arrival in Kafka to its features in Redis",
                                registry=r, buckets=FRESHNESS_BUCKETS_S),
            redis_retries=Counter("movierec_consumer_redis_retries_total",
                                  "Batches retried because Redis failed", registry=r),
            commit_failures=Counter("movierec_consumer_commit_failures_total",
                                    "Durable batches whose offset commit the group refused "
                                    "(a rebalance); they are redelivered", registry=r),
            store_rows=Counter("movierec_consumer_store_rows_total",
                               "Rows written to the event store", registry=r),
            drift_statistic=Gauge("movierec_drift_statistic",
                                  "Drift test statistic, current window vs. reference",
                                  ["feature", "test"], registry=r),
            drift_alarm=Gauge("movierec_drift_alarm", "1 while a feature has drifted",
                              ["feature"], registry=r),
            drift_p_value=Gauge("movierec_drift_p_value", "p-value of the drift test",
                                ["feature"], registry=r),
            dlq_fallbacks=Counter("movierec_consumer_dlq_fallback_total",
                                  "Switches of the dead letters from Kafka to the local file, "
                                  "by the broker's refusal", ["reason"], registry=r),
            store_free=Gauge("movierec_event_store_free_bytes",
                             "Free bytes on the event store's filesystem", registry=r),
            store_size=Gauge("movierec_event_store_filesystem_bytes",
                             "Size of the event store's filesystem in bytes", registry=r),
            heartbeat=Gauge("movierec_consumer_heartbeat_timestamp_seconds",
                            "Unix time (s) the consumer loop last finished a turn: a poll "
                            "(at most MOVIEREC_CONSUMER_POLL_MS, lines or none) and the "
                            "commit of the batch before it; frozen while the loop is stuck",
                            registry=r),
        )

    def watch_disk(self, folder: Path) -> None:
        """Read the event store's filesystem at every scrape (``shutil.disk_usage``): a
        full disk stops the consumer from persisting, so the alert must see it coming."""
        folder.mkdir(parents=True, exist_ok=True)
        self.store_free.set_function(lambda: float(shutil.disk_usage(folder).free))
        self.store_size.set_function(lambda: float(shutil.disk_usage(folder).total))

    def show_drift(self, values: list[tuple[str, str, float]]) -> None:
        """Set the drift gauges from ``drift_report.metric_values``."""
        for feature, stat, value in values:
            if stat == "alarm":
                self.drift_alarm.labels(feature).set(value)
            elif stat == "p_value":
                self.drift_p_value.labels(feature).set(value)
            elif stat in ("chi2", "psi", "ks", "z"):
                self.drift_statistic.labels(feature, stat).set(value)
