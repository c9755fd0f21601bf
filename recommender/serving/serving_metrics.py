"""The service's Prometheus metrics (one module for the component, units in the names).

Created per process on a registry of its own (nothing at import time). Under gunicorn
with several workers, ``PROMETHEUS_MULTIPROC_DIR`` is set before the workers start
(``recommender.serving.gunicorn_conf``): every value then lives in a per-process file and
/metrics merges them with ``MultiProcessCollector``, so counts are right whichever worker
answers the scrape (https://prometheus.github.io/client_python/multiprocess/).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from recommender.serving.answer_cache import OUTCOMES
from recommender.serving.walks import FAILURE_REASONS

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05,
                     0.075, 0.1, 0.15, 0.25, 0.4, 0.5, 0.6, 1.0)
"""Request latency buckets: fine below the 15 ms SLO, then close enough up to the 600 ms
deadline that ``histogram_quantile``'s interpolation inside a bucket (what the dashboard
shows) stays within a few ms of the clients' own percentiles (``benchmarks/slo_views.py``:
with one bucket from 50 to 100 ms a p99 of 56 ms read as 66)."""
STAGE_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
QUEUE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, 2.0)
"""Queue age buckets (``queue_age``): the kernel's resolution is a jiffy (1-10 ms); fine
around the shed limit (50 ms by default), then every 100 ms up to the 600 ms deadline."""


def multiprocess_dir() -> str | None:
    """The multiprocess folder when running under several workers, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass
class ServingMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    response: Histogram
    fallbacks: Counter
    answers: Counter
    stage: Histogram
    swaps: Counter
    telemetry: Counter
    breaker_open: Gauge
    queue: Histogram
    queue_unknown: Counter
    walk_steps: Counter
    walk_failures: Counter
    rate_limited: Counter
    answer_cache: Counter
    refused: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ServingMetrics:
        r = registry or CollectorRegistry()
        metrics = cls(
            registry=r,
            requests=Counter("movierec_serve_requests_total",
                             "Requests by endpoint and HTTP status", ["endpoint", "status"],
                             registry=r),
            latency=Histogram("movierec_serve_request_seconds",
                              "Time from request start to answer, by endpoint", ["endpoint"],
                              registry=r, buckets=LATENCY_BUCKETS_S),
            response=Histogram("movierec_serve_response_seconds",
                               "/recommend: time from the request's arrival at the host (its "
                               "queue age, from the kernel) to the answer: what a client sees "
                               "but the network. What the dashboard and the latency SLO read",
                               ["endpoint"], registry=r, buckets=LATENCY_BUCKETS_S),
            fallbacks=Counter("movierec_serve_fallbacks_total",
                              "Degraded /recommend answers by reason", ["reason"], registry=r),
            answers=Counter("movierec_serve_answers_total",
                            "/recommend answers by arm, model version and path "
                            "(model, coldstart_profile, coldstart_demographic, popular)",
                            ["arm", "version", "path"], registry=r),
            stage=Histogram("movierec_serve_stage_seconds",
                            "Time of one stage of /recommend (walk, features, model)", ["stage"],
                            registry=r, buckets=STAGE_BUCKETS_S),
            swaps=Counter("movierec_serve_model_swaps_total",
                          "Model versions loaded and swapped in, or rejected", ["result"],
                          registry=r),
            telemetry=Counter("movierec_serve_telemetry_records_total",
                              "Served records by sink (kafka, redis) and outcome "
                              "(published, dropped, failed)", ["sink", "outcome"], registry=r),
            breaker_open=Gauge("movierec_serve_redis_breaker_open",
                               "1 while the Redis circuit breaker is open", registry=r,
                               multiprocess_mode="liveall"),
            queue=Histogram("movierec_serve_queue_seconds",
                            "Time a /recommend request waited before a worker picked it up "
                            "(the kernel's tcpi_last_data_recv; gunicorn only)", registry=r,
                            buckets=QUEUE_BUCKETS_S),
            queue_unknown=Counter("movierec_serve_queue_age_unreadable_total",
                                  "Requests whose client socket gave no TCP_INFO (queue age "
                                  "taken as 0, never shed)", registry=r),
            walk_steps=Counter("movierec_serve_walk_steps_total",
                               "/recommend requests taken for steps of a walk over the user ids "
                               "(a crawler's) and answered the popular list", registry=r),
            walk_failures=Counter("movierec_serve_walk_check_failures_total",
                                  "/recommend requests whose walk check failed open, by reason "
                                  "(redis, breaker_open, error)", ["reason"], registry=r),
            rate_limited=Counter("movierec_serve_rate_limited_total",
                                 "/recommend requests refused 429 by the per-address rate limit",
                                 registry=r),
            answer_cache=Counter("movierec_serve_answer_cache_total",
                                 "/recommend lookups of the worker's answer cache by outcome "
                                 "(hit, miss, changed, expired)", ["outcome"], registry=r),
            refused=Counter("movierec_serve_refused_total",
                            "Connections reset unanswered at accept: their request had queued "
                            "at least MOVIEREC_SERVE_REFUSE_MS (sync workers)", registry=r),
        )
        # Both results exist at 0 from the start: a first rejection is then a rise that
        # increase() sees (MovierecModelRejected), not a new series that starts at 1.
        for result in ("loaded", "rejected"):
            metrics.swaps.labels(result)
        for reason in FAILURE_REASONS:
            metrics.walk_failures.labels(reason)
        for outcome in OUTCOMES:
            metrics.answer_cache.labels(outcome)
        return metrics


def exposition_registry(metrics: ServingMetrics) -> CollectorRegistry:
    """The registry /metrics renders: the merged per-process files in multiprocess mode,
    else the process's own."""
    path = multiprocess_dir()
    if path is None:
        return metrics.registry
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=path)
    return merged
