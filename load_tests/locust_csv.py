"""Locust's CSV output -> ``slo.Measured``: the totals, percentiles and rates of a run,
and the counts by kind and by fallback reason from the request names
(``slo.request_name``). Pure except ``load_locust_csv``, which only reads the files.
How locust computes its percentile columns is explained in ``slo``'s docstring.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

from load_tests.slo import (
    FINAL_STATS_SUFFIX,
    KindStats,
    LoadTestError,
    Measured,
    parse_request_name,
)


def _number(row: Mapping[str, str], column: str) -> float:
    """A numeric cell of locust's CSV; "N/A" (no requests) reads 0."""
    try:
        text = row[column]
    except KeyError:
        raise LoadTestError(f"locust CSV has no column {column!r}") from None
    if text in ("N/A", ""):
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise LoadTestError(f"locust CSV column {column!r} is not a number: {text!r}") from None


def steady_rate(history_csv: str) -> tuple[float | None, float]:
    """(requests/s while all users ran, or None; seconds covered by the history) from
    locust's ``_stats_history.csv`` text.

    The rate is the growth of the cumulative "Total Request Count" of the "Aggregated"
    rows between the first and the last *update* at the run's largest "User Count": a
    row whose count differs from the row before. Locally every row (one a second) is an
    update; with ``--processes`` the master's counts move only when a worker reports
    (every 3 s), and measuring between two reports avoids counting a stale tail. None
    when fewer than two such updates span any time."""
    rows = [r for r in csv.DictReader(io.StringIO(history_csv)) if r.get("Name") == "Aggregated"]
    if not rows:
        return None, 0.0
    times = [_number(r, "Timestamp") for r in rows]
    counts = [_number(r, "Total Request Count") for r in rows]
    users = [_number(r, "User Count") for r in rows]
    peak = max(users)
    updates = [i for i in range(1, len(rows)) if users[i] == peak and counts[i] != counts[i - 1]]
    span = times[updates[-1]] - times[updates[0]] if updates else 0.0
    if span <= 0:
        return None, times[-1] - times[0]
    return (counts[updates[-1]] - counts[updates[0]]) / span, times[-1] - times[0]


def measure_locust_csv(stats_csv: str, history_csv: str | None = None) -> Measured:
    """``Measured`` from the text of locust's ``<prefix>_stats.csv`` (and, for the steady
    rate and the duration, ``<prefix>_stats_history.csv``). Totals and percentiles come
    from the "Aggregated" row; kinds and fallbacks from the rows named by
    ``request_name`` (other rows count only in the totals)."""
    rows = list(csv.DictReader(io.StringIO(stats_csv)))
    total = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    if total is None:
        raise LoadTestError("locust stats CSV has no 'Aggregated' row")
    counts: dict[str, list[int]] = {}
    fallbacks: dict[str, int] = {}
    for row in rows:
        parsed = parse_request_name(row.get("Name", ""))
        if parsed is None or row is total:
            continue
        kind, reason = parsed
        n, failed = int(_number(row, "Request Count")), int(_number(row, "Failure Count"))
        c = counts.setdefault(kind, [0, 0, 0])
        c[0] += n
        c[1] += failed
        if reason is not None:
            c[2] += n
            fallbacks[reason] = fallbacks.get(reason, 0) + n
    requests = int(_number(total, "Request Count"))
    rps = _number(total, "Requests/s")
    steady, span = steady_rate(history_csv) if history_csv else (None, 0.0)
    duration = span if span > 0 else (requests / rps if rps > 0 else 0.0)
    return Measured(
        source="locust-csv", requests=requests, failures=int(_number(total, "Failure Count")),
        duration_s=duration, rps=rps, steady_rps=steady,
        p50_ms=_number(total, "50%"), p95_ms=_number(total, "95%"), p99_ms=_number(total, "99%"),
        max_ms=_number(total, "Max Response Time"),
        by_kind={k: KindStats(*c) for k, c in counts.items()}, fallbacks=fallbacks)


def load_locust_csv(prefix: Path | str) -> Measured:
    """``measure_locust_csv`` of the files of a locust run with ``--csv <prefix>``:
    ``<prefix>_final_stats.csv`` (the locustfile's final copy) when it exists, else
    locust's ``<prefix>_stats.csv`` (rewritten each second, so up to 1 s short of the
    end), with ``<prefix>_stats_history.csv`` when it exists."""
    final = Path(f"{prefix}{FINAL_STATS_SUFFIX}")
    stats = final if final.is_file() else Path(f"{prefix}_stats.csv")
    history = Path(f"{prefix}_stats_history.csv")
    try:
        stats_text = stats.read_text(encoding="utf-8")
        history_text = history.read_text(encoding="utf-8") if history.is_file() else None
    except OSError as exc:
        raise LoadTestError(f"cannot read locust stats {stats}: {exc}") from None
    return measure_locust_csv(stats_text, history_text)
