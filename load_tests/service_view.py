"""The service's own view of a load: the numbers its dashboard shows for the same window.

The dashboard (``ops.dashboard.panels``: "Requests per second", "Latency against the 600
ms deadline") reads ``rate(movierec_serve_requests_total{endpoint="recommend"})`` and
``histogram_quantile(q, sum by (le) (rate(movierec_serve_response_seconds_bucket
{endpoint="recommend"}[...])))``. The same two reads of the service's /metrics, at the
start and the end of a run, give exactly what those queries give over the run's window
(a rate is the counter's increase over the window; ``histogram_quantile`` of a rate is
that of the increase, the window's length cancels). So a load test and a benchmark can
print, beside what their client measured, what an operator looking at the dashboard saw:
if the two disagree, the dashboard is lying or the client is, and the report says which
way (the network, the client's own overhead, or a queue the service does not see).

Pure: parsing of a Prometheus text exposition (merged over the workers) and Prometheus's
``histogram_quantile`` (promql/quantile.go ``bucketQuantile``: linear interpolation inside
the bucket holding the rank, the first bucket starting at 0, a rank in the +Inf bucket
answered by the largest finite bound).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

RESPONSE = "movierec_serve_response_seconds"
"""Time from a request's arrival at the host (queue age) to its answer, by endpoint."""
REQUESTS = "movierec_serve_requests_total"
ENDPOINT = "recommend"
QUANTILES = (0.5, 0.95, 0.99)


def bucket_counts(text: str, name: str = RESPONSE, endpoint: str = ENDPOINT) -> dict[float, float]:
    """Cumulative counts of the histogram ``name`` by upper bound (``le``, +Inf as
    ``math.inf``), summed over the series of ``endpoint`` (the workers' merged files)."""
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            if s.name == name + "_bucket" and s.labels.get("endpoint") == endpoint:
                le = float(s.labels["le"])
                counts[le] = counts.get(le, 0.0) + s.value
    return counts


def counter_total(text: str, name: str = REQUESTS, endpoint: str = ENDPOINT) -> float:
    """The counter ``name`` summed over the series of ``endpoint`` (every status)."""
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and s.labels.get("endpoint") == endpoint)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus's ``histogram_quantile(q, ...)`` of cumulative ``buckets`` (upper bound
    -> count, +Inf included): NaN without at least two buckets or any count."""
    bounds = sorted(buckets)
    if len(bounds) < 2 or not math.isinf(bounds[-1]):
        return math.nan
    total = buckets[bounds[-1]]
    if total <= 0 or not 0 <= q <= 1:
        return math.nan
    rank = q * total
    index = next(i for i, le in enumerate(bounds) if buckets[le] >= rank)
    if index == len(bounds) - 1:  # in the +Inf bucket: the largest finite bound
        return bounds[-2]
    end = bounds[index]
    if index == 0:
        start, below = (0.0 if end > 0 else end), 0.0
    else:
        start, below = bounds[index - 1], buckets[bounds[index - 1]]
    count = buckets[end] - below
    return start + (end - start) * ((rank - below) / count) if count > 0 else end


@dataclass(frozen=True)
class ServiceView:
    """/recommend over one window as the dashboard computes it: answers, their rate, and
    the response-time quantiles (ms; NaN without answers)."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def to_dict(self) -> dict:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 3)
        return {"requests": self.requests, "seconds": round(self.seconds, 3),
                "rps": num(self.rps), "p50_ms": num(self.p50_ms), "p95_ms": num(self.p95_ms),
                "p99_ms": num(self.p99_ms)}


def service_view(before: str, after: str, seconds: float) -> ServiceView:
    """The window between two /metrics expositions, ``seconds`` apart."""
    then, now = bucket_counts(before), bucket_counts(after)
    delta = {le: now[le] - then.get(le, 0.0) for le in now}
    answered = counter_total(after) - counter_total(before)
    p50, p95, p99 = (1000.0 * histogram_quantile(q, delta) for q in QUANTILES)
    return ServiceView(requests=int(answered), seconds=seconds,
                       rps=answered / seconds if seconds > 0 else math.nan,
                       p50_ms=p50, p95_ms=p95, p99_ms=p99)
