"""The dashboard's panels as plain data: the one home of every query the team's page and
the Grafana dashboard show (``ops.dashboard.grafana`` builds the JSON from this list, and
a unit test holds the committed file equal to what it builds).

A query may use Grafana's two variables, so Grafana runs it as written:

- ``$__rate_interval``: the window of ``rate()``; the page uses Grafana's rule for it,
  max(4 scrape intervals, step + 1 scrape interval) (``rate_window_s``);
- ``$__range``: the whole time range shown; stat panels take their figure over it.

``kind`` says how a panel is drawn: ``line`` (series over time), ``stat`` (one figure
over the range), ``state`` (a gauge read as a named state, with its history), ``drift``
(``targets[0]`` over time, ``targets[1]`` the alarm now, per feature), ``bars``
(one figure per label over the range), ``proportion`` (a rate per label with its 95 %
Wilson interval: ``targets[1]`` counts successes, ``targets[2]`` trials), and kinds the
page enriches from the project's stores (``models``, ``experiment``, ``timeline``,
``alerts``), whose queries are what Grafana shows of them. ``provenance`` is the page's
request-id lookup: no query, so Grafana has no such panel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SECTIONS: tuple[str, ...] = ("service", "data", "model", "alerts")
INSTANT_KINDS = frozenset({"stat", "bars", "proportion"})
"""Kinds whose figure is one instant query at the end of the range (over ``$__range``)."""
POINTS = 120
"""About how many points a line chart has across its range (the step is range / POINTS)."""
DEADLINE_S = 0.6
"""The course's deadline of one /recommend answer, drawn on the latency chart."""

RATE = "$__rate_interval"
RANGE = "$__range"


@dataclass(frozen=True)
class Target:
    """One query and the legend of its series (Grafana's ``legendFormat``: ``{{label}}``
    is replaced by the label's value)."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """One panel. ``unit`` is Grafana's unit id (``s``, ``percentunit``, ``reqps``,
    ``short``, ``currencyUSD``); ``threshold`` a horizontal line in the unit's base (the
    600 ms deadline is 0.6 s); ``states`` names the values of a ``state`` panel."""

    key: str
    title: str
    section: str
    kind: str
    unit: str
    targets: tuple[Target, ...]
    description: str
    threshold: float | None = None
    log_y: bool = False
    states: tuple[tuple[float, str], ...] = field(default=())

    @property
    def instant(self) -> bool:
        return self.kind in INSTANT_KINDS


def counted(selector: str) -> str:
    """A counter's count over the range, per series: ``increase()`` for a series that
    existed at the range's start, the whole value for one born within it. The online
    monitor exports a label (arm, model version, outcome) at its first checkpoint with
    what it counted since its start, and ``increase()`` would leave that first sample's
    count out: a new arm's first plays would vanish from its cost per play."""
    return f"(({selector} unless {selector} offset {RANGE}) or increase({selector}[{RANGE}]))"


def _quantiles(metric: str, matcher: str = "") -> tuple[Target, ...]:
    return tuple(Target(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{matcher}[{RATE}])))",
                        f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99))


RECOMMEND = '{endpoint="recommend"}'
SUCCESS = 'movierec_online_requests_total{outcome="success"}'
TAKEN, ELIGIBLE = "movierec_online_lists_taken_total", "movierec_online_lists_eligible_total"

PANELS: tuple[Panel, ...] = (
    # -- service ---------------------------------------------------------------------------
    Panel("availability", "Availability (the log, as graders count it)", "service", "stat",
          "percentunit",
          (Target(f"sum({counted(SUCCESS)}) / sum({counted('movierec_online_requests_total')})",
                  "availability"),),
          "Share of the recommendation requests in the Kafka log that succeeded by the graders' "
          "rule (status 200 within 600 ms), over the range (movierec eval live)."),
    Panel("requests", "Requests per second", "service", "line", "reqps",
          (Target(f"sum by (status) (rate(movierec_serve_requests_total{RECOMMEND}[{RATE}]))",
                  "{{status}}"),),
          "/recommend answers per second at the service, by HTTP status."),
    Panel("latency", "Latency against the 600 ms deadline", "service", "line", "s",
          _quantiles("movierec_serve_response_seconds", RECOMMEND),
          "p50, p95 and p99 of /recommend from each request's arrival at the host, its wait "
          "in the kernel's queue included: what clients see but the network (log scale); the "
          "red line is the course's 600 ms deadline.", threshold=DEADLINE_S, log_y=True),
    Panel("fallbacks", "Fallbacks by reason", "service", "line", "reqps",
          (Target(f"sum by (reason) (rate(movierec_serve_fallbacks_total[{RATE}]))", "{{reason}}"),),
          "Degraded /recommend answers per second, by reason (shed, redis, budget, ...)."),
    Panel("shed", "Shed share", "service", "stat", "percentunit",
          (Target(f'sum(increase(movierec_serve_fallbacks_total{{reason="shed"}}[{RANGE}])) '
                  f"/ sum(increase(movierec_serve_requests_total{RECOMMEND}[{RANGE}]))", "shed"),),
          "Share of /recommend requests answered without work because they queued too long, "
          "over the range."),
    Panel("breaker", "Redis circuit breaker", "service", "state", "short",
          (Target("max(movierec_serve_redis_breaker_open)", "open"),),
          "1 while any worker's Redis circuit breaker is open (answers fall back to popular).",
          states=((0.0, "closed"), (1.0, "open"))),
    # -- data ------------------------------------------------------------------------------
    Panel("lag", "Consumer lag", "data", "line", "short",
          (Target("sum(movierec_consumer_lag_messages)", "lag"),),
          "Messages of the event log not yet consumed, over all partitions."),
    Panel("freshness", "Feature freshness", "data", "line", "s",
          _quantiles("movierec_consumer_freshness_seconds")[::2],
          "From a line's arrival in Kafka to its features in Redis: p50 and p99 (log scale).",
          log_y=True),
    Panel("lines", "Lines per second by kind", "data", "line", "short",
          (Target(f"sum by (kind) (rate(movierec_consumer_events_total[{RATE}]))", "{{kind}}"),),
          "Accepted event-log lines per second, by kind (watch, rate, recommendation, ...)."),
    Panel("dead_letters", "Dead letters by reason", "data", "line", "short",
          (Target(f"sum by (reason) (rate(movierec_consumer_rejects_total[{RATE}])) or on() "
                  f"label_replace(0 * sum(rate(movierec_consumer_events_total[{RATE}])), "
                  f'"reason", "none", "", "")', "{{reason}}"),),
          "Rejected lines per second sent to the DLQ, by reason; \"none\" (0) while the "
          "consumer runs and rejects nothing."),
    Panel("drift", "Drift per feature", "data", "drift", "short",
          (Target("max by (feature) (movierec_drift_statistic)", "{{feature}}"),
           Target("max by (feature) (movierec_drift_alarm)", "alarm {{feature}}")),
          "The drift test's statistic per feature (current window against the reference); a "
          "red mark names each feature whose alarm is on."),
    # -- model -----------------------------------------------------------------------------
    Panel("models", "Champion and challenger", "model", "models", "reqps",
          (Target(f"sum by (version) (rate(movierec_serve_answers_total[{RATE}]))", "{{version}}"),),
          "The registry's champion and challenger with their offline numbers; answers per "
          "second by model version."),
    Panel("experiment", "Experiment and its arms", "model", "experiment", "reqps",
          (Target(f"sum by (arm) (rate(movierec_serve_answers_total[{RATE}]))", "{{arm}}"),),
          "The running experiment (or the loop's last canary) and answers per second by arm."),
    Panel("take_rate", "Take rate per arm (95 % Wilson interval)", "model", "proportion",
          "percentunit",
          (Target(f"sum by (arm) {counted(TAKEN)} / sum by (arm) {counted(ELIGIBLE)}", "{{arm}}"),
           Target(f"sum by (arm) {counted(TAKEN)}", "taken {{arm}}"),
           Target(f"sum by (arm) {counted(ELIGIBLE)}", "eligible {{arm}}")),
          "Share of served lists whose window closed from which the user started a listed "
          "movie, per arm, over the range."),
    Panel("cost", "License cost per play", "model", "bars", "currencyUSD",
          (Target(f"sum by (arm) {counted('movierec_online_license_cost_usd_total')} "
                  f"/ sum by (arm) {counted('movierec_online_plays_total')}", "{{arm}}"),),
          "License cost (USD) per film started from a list, per arm, over the range."),
    Panel("loop", "Retraining loop", "model", "timeline", "short",
          (Target("max(movierec_loop_cycle_open)", "cycle open"),
           Target("max(movierec_loop_canary_running)", "canary running")),
          "The loop's cycles (journal) with their outcomes; 1 while a cycle or a canary runs."),
    # -- alerts ----------------------------------------------------------------------------
    Panel("alerts", "Alerts", "alerts", "alerts", "short",
          (Target('count by (alertname) (ALERTS{alertstate="firing"}) or on() '
                  'label_replace(vector(0), "alertname", "none", "", "")', "{{alertname}}"),),
          "Alerts firing now (Alertmanager) and the latest notifications (the receiver); "
          "firing alerts per name."),
    Panel("provenance", "Provenance of a served list", "alerts", "provenance", "short", (),
          "Paste a request id (the X-Request-Id header of an answer): its model, code commit "
          "and data snapshot."),
)


def by_key() -> dict[str, Panel]:
    return {panel.key: panel for panel in PANELS}


def duration(seconds: float) -> str:
    """A Prometheus duration of whole seconds: 90 -> ``90s``; 3600 -> ``1h``."""
    whole = max(1, math.ceil(seconds))
    for size, suffix in ((86_400, "d"), (3_600, "h"), (60, "m")):
        if whole % size == 0:
            return f"{whole // size}{suffix}"
    return f"{whole}s"


def step_s(range_s: float, scrape_s: float) -> int:
    """Seconds between the points of a line over ``range_s``: about ``POINTS`` points,
    never finer than a scrape."""
    return max(math.ceil(scrape_s), math.ceil(range_s / POINTS))


def rate_window_s(step: float, scrape_s: float) -> int:
    """Grafana's ``$__rate_interval``: max(4 scrapes, step + 1 scrape), in seconds."""
    return math.ceil(max(4 * scrape_s, step + scrape_s))


def resolve(expr: str, *, range_s: float, rate_s: float) -> str:
    """``expr`` with Grafana's variables replaced by Prometheus durations."""
    return expr.replace(RANGE, duration(range_s)).replace(RATE, duration(rate_s))
