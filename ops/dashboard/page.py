"""What one request of the page shows: every panel's queries run against Prometheus (in
parallel, each with a timeout) and the stores read, at one evaluation time.

``View`` fixes the time range, the evaluation instant (``end``, whole unix seconds: an
instant query with ``time=end`` gives exactly the figure the page shows) and the step.
``gather`` returns one ``PanelData`` per panel; ``render`` draws them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from online_eval.stats import wilson_interval
from ops.dashboard import sources
from ops.dashboard.panels import PANELS, Panel, rate_window_s, resolve, step_s
from ops.dashboard.prom import Prometheus, Result
from ops.dashboard.settings import RANGES, REFRESHES, DashboardSettings

WORKERS = 8
"""Queries in flight at once (Prometheus answers each in milliseconds; 8 keep the page's
time near that of its slowest query)."""


@dataclass(frozen=True)
class View:
    """The range shown (its key in ``RANGES`` and seconds), the refresh key, the
    evaluation instant ``end`` (unix seconds), the step of lines and the rate window."""

    range_key: str
    refresh_key: str
    range_s: int
    end: float
    step_s: int
    rate_s: int

    @property
    def start(self) -> float:
        return self.end - self.range_s

    def query(self, expr: str) -> str:
        return resolve(expr, range_s=self.range_s, rate_s=self.rate_s)


def view_for(range_key: str | None, refresh_key: str | None, settings: DashboardSettings,
             *, now: float | None = None) -> View:
    """The view a request asks for; unknown keys fall back to the settings' defaults."""
    key = range_key if range_key in RANGES else settings.dashboard_range
    refresh = refresh_key if refresh_key in REFRESHES else settings.dashboard_refresh
    step = step_s(RANGES[key], settings.prometheus_scrape_s)
    return View(key, refresh, RANGES[key], float(math.floor(time.time() if now is None else now)),
                step, rate_window_s(step, settings.prometheus_scrape_s))


@dataclass
class PanelData:
    """A panel's results (one per target, queries resolved), what the page read from a
    store for it (``store``), and why it has no data (None: it has)."""

    panel: Panel
    results: list[Result]
    store: Any = None
    missing: str | None = None


def proportions(taken: Result, eligible: Result) -> list[tuple[str, float, float, float, int]]:
    """(arm, rate, low, high, trials) per arm with trials, rate = taken / eligible with its
    95 % Wilson (1927) score interval. ``increase()`` extrapolates counts to the range's
    edges, so they are rounded to whole lists (taken at most eligible) first."""
    got = {s.labels.get("arm", ""): s.last for s in taken.series}
    rows = []
    for series in sorted(eligible.series, key=lambda s: s.labels.get("arm", "")):
        arm = series.labels.get("arm", "")
        trials = round(series.last) if math.isfinite(series.last) else 0
        if trials <= 0:
            continue
        value = got.get(arm, 0.0)
        successes = min(trials, max(0, round(value) if math.isfinite(value) else 0))
        low, high = wilson_interval(successes, trials)
        rows.append((arm, successes / trials, low, high, trials))
    return rows


def _missing(data: PanelData) -> str | None:
    panel, results = data.panel, data.results
    if panel.kind == "provenance":
        return None
    if panel.kind == "proportion":
        why = results[1].why_empty or results[2].why_empty
        if why is None and not proportions(results[1], results[2]):
            why = "no served list's take window closed in the range"
        return why
    if panel.kind in ("models", "experiment", "timeline", "alerts") and isinstance(data.store,
                                                                                  Exception):
        return str(data.store)
    if panel.kind == "timeline" and not data.store:
        return results[0].why_empty and f"the loop has run no cycle, and {results[0].why_empty}"
    if panel.kind in ("line", "state", "drift", "stat", "bars"):
        return results[0].why_empty
    return None


def _store(panel: Panel, settings: DashboardSettings, client: httpx.Client) -> Any:
    """What the page reads from the stores for ``panel`` (an exception says why not)."""
    try:
        if panel.kind == "timeline":
            return sources.cycles(settings.journal_path)
        if panel.kind == "models":
            return sources.models(settings.registry_dir, sources.cycles(settings.journal_path))
        if panel.kind == "experiment":
            return sources.experiment(settings.serve_experiments_file,
                                      sources.cycles(settings.journal_path), settings.journal_path)
        if panel.kind == "alerts":
            return (sources.firing(client, settings.alertmanager_url),
                    sources.notifications(client, settings.receiver_url))
    except sources.SourceError as exc:
        return exc
    return None


def gather(view: View, settings: DashboardSettings, prom: Prometheus,
           client: httpx.Client) -> list[PanelData]:
    """Every panel's data at ``view``: queries and store reads run concurrently."""
    def run(panel: Panel, expr: str) -> Callable[[], Result]:
        query = view.query(expr)
        if panel.instant:
            return lambda: prom.query(query, at=view.end)
        return lambda: prom.query_range(query, start=view.start, end=view.end, step_s=view.step_s)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        queries = [[pool.submit(run(p, t.expr)) for t in p.targets] for p in PANELS]
        stores = [pool.submit(_store, p, settings, client) for p in PANELS]
        out = [PanelData(p, [f.result() for f in fs], s.result())
               for p, fs, s in zip(PANELS, queries, stores, strict=True)]
    for data in out:
        data.missing = _missing(data)
    return out
