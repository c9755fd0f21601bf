"""A small client of Prometheus's HTTP API (``/api/v1/query``, ``/api/v1/query_range``;
https://prometheus.io/docs/prometheus/latest/querying/api/), on httpx with a timeout.

Every call returns a ``Result``: the series, or why there are none. A panel shows that
reason ("no data: ...") instead of the page failing, so one slow or broken query never
takes the whole page down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Series:
    """One series: its labels and its (unix seconds, value) points, in time order."""

    labels: dict[str, str]
    points: list[tuple[float, float]]

    @property
    def last(self) -> float:
        """The latest finite value (NaN when there is none)."""
        for _, value in reversed(self.points):
            if math.isfinite(value):
                return value
        return math.nan


@dataclass(frozen=True)
class Result:
    """What one query gave: ``series`` (maybe empty), or ``error`` saying why not."""

    query: str
    series: list[Series] = field(default_factory=list)
    error: str | None = None

    @property
    def why_empty(self) -> str | None:
        """None when some series has a finite point, else the reason there is no data."""
        if self.error is not None:
            return self.error
        if not self.series:
            return "the query returned no series"
        if not any(math.isfinite(v) for s in self.series for _, v in s.points):
            return "every value is NaN (nothing happened in the range)"
        return None


def _value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def parse(query: str, body: object) -> Result:
    """A ``Result`` from Prometheus's JSON answer (vector, matrix or scalar)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        why = body.get("error", "an unreadable answer") if isinstance(body, dict) else "not JSON"
        return Result(query, error=f"Prometheus: {why}")
    data = body.get("data", {})
    kind, raw = data.get("resultType"), data.get("result", [])
    if kind == "scalar":
        return Result(query, [Series({}, [(float(raw[0]), _value(raw[1]))])])
    series = []
    for item in raw:
        points = item.get("values") or ([item["value"]] if "value" in item else [])
        series.append(Series(dict(item.get("metric", {})),
                             [(float(t), _value(v)) for t, v in points]))
    return Result(query, series)


class Prometheus:
    """Queries one Prometheus at ``url`` (``http://host:port``), each within ``timeout_s``."""

    def __init__(self, url: str, *, timeout_s: float = 5.0,
                 client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def _get(self, path: str, query: str, params: dict[str, str]) -> Result:
        try:
            answer = self.client.get(f"{self.url}{path}", params={"query": query, **params})
        except httpx.HTTPError as exc:
            return Result(query, error=f"Prometheus at {self.url} did not answer: {exc}")
        try:
            body = answer.json()
        except ValueError:
            return Result(query, error=f"Prometheus answered {answer.status_code} without JSON")
        return parse(query, body)

    def query(self, query: str, *, at: float) -> Result:
        """The instant query at unix time ``at`` (seconds)."""
        return self._get("/api/v1/query", query, {"time": f"{at:.3f}"})

    def query_range(self, query: str, *, start: float, end: float, step_s: float) -> Result:
        """The range query from ``start`` to ``end`` (unix seconds), a point every ``step_s``."""
        return self._get("/api/v1/query_range", query,
                         {"start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"})

    def metric_names(self) -> set[str]:
        """Every metric name Prometheus holds (``/api/v1/label/__name__/values``)."""
        answer = self.client.get(f"{self.url}/api/v1/label/__name__/values")
        answer.raise_for_status()
        return set(answer.json()["data"])

    def rule_names(self) -> set[str]:
        """The names of every recording and alerting rule Prometheus loaded."""
        answer = self.client.get(f"{self.url}/api/v1/rules")
        answer.raise_for_status()
        return {rule["name"] for group in answer.json()["data"]["groups"]
                for rule in group["rules"]}
