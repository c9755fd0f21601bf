"""The service's view of a load (load_tests.service_view): Prometheus's histogram_quantile
and the window between two /metrics reads, as the dashboard computes them."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from load_tests.service_view import (
    bucket_counts,
    counter_total,
    histogram_quantile,
    service_view,
)
from load_tests.slo import Slo, judge
from recommender.serving.serving_metrics import LATENCY_BUCKETS_S
from tests.unit.test_load_slo import _passing

INF = math.inf


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does() -> None:
    # 100 observations: 50 under 10 ms, 40 in (10, 20], 10 in (20, 40]
    buckets = {0.01: 50.0, 0.02: 90.0, 0.04: 100.0, INF: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.005)  # first bucket from 0
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.015)  # 20 of 40 into (10, 20]
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.03)
    assert histogram_quantile(1.0, buckets) == pytest.approx(0.04)


def test_a_rank_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    assert histogram_quantile(0.99, {0.01: 50.0, 0.6: 90.0, INF: 100.0}) == 0.6


@pytest.mark.parametrize("buckets", [{}, {INF: 5.0}, {0.01: 0.0, INF: 0.0}, {0.01: 1.0, 0.02: 2.0}])
def test_without_counts_or_an_inf_bucket_there_is_no_quantile(buckets) -> None:
    assert math.isnan(histogram_quantile(0.5, buckets))


def _exposition(latencies: list[float], other: int = 0) -> str:
    """A service's /metrics: /recommend answers with these response times (two workers'
    series are merged the same way), plus ``other`` answers of another endpoint."""
    r = CollectorRegistry()
    hist = Histogram("movierec_serve_response_seconds", "x", ["endpoint"], registry=r,
                     buckets=LATENCY_BUCKETS_S)
    reqs = Counter("movierec_serve_requests_total", "x", ["endpoint", "status"], registry=r)
    for s in latencies:
        hist.labels("recommend").observe(s)
        reqs.labels("recommend", "200").inc()
    for _ in range(other):
        hist.labels("health").observe(0.5)
        reqs.labels("health", "200").inc()
    return generate_latest(r).decode()


def test_the_window_is_the_difference_of_two_reads() -> None:
    before = _exposition([0.5] * 10, other=5)  # slow answers before the window: not in it
    after_latencies = [0.5] * 10 + [0.002] * 60 + [0.012] * 39 + [0.3]
    after = _exposition(after_latencies, other=50)
    assert counter_total(after) == 110 and bucket_counts(after)[INF] == 110
    view = service_view(before, after, seconds=10.0)
    assert view.requests == 100 and view.rps == pytest.approx(10.0)
    assert view.p50_ms == pytest.approx(1.0 + 1.5 * 50 / 60)  # inside (1, 2.5] ms
    assert 10.0 < view.p95_ms <= 15.0  # the 15 ms bucket
    assert view.p99_ms == pytest.approx(15.0)  # rank 99 is the 15 ms bucket's last
    assert view.to_dict()["requests"] == 100


def test_the_slo_report_shows_the_dashboards_numbers_beside_the_clients() -> None:
    view = service_view(_exposition([]), _exposition([0.002] * 99 + [0.02]), seconds=4.0)
    report = judge(_passing(), Slo(), service=view)
    md = report.to_markdown()
    assert "## As the service's dashboard shows it" in md
    assert f"| service (dashboard) | 25.0 | {view.p50_ms:.1f} |" in md
    assert "| client (locust) |" in md
    assert report.to_dict()["service"]["rps"] == 25.0
    assert "Not scraped" in judge(_passing(), Slo()).to_markdown()
