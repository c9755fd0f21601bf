"""The SLO report: percentiles, the checks, locust's CSV, the rendered report, and the
run script's pure helpers (durations, the service's fallback counters).

The CSV tests write files with the columns of the installed locust (2.47), copied from
``locust.stats.StatsCSV`` / ``StatsCSVFileWriter``; ``test_load_locustfile`` checks that a
real run writes exactly these headers.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import pytest

from load_tests.locust_csv import load_locust_csv, measure_locust_csv, steady_rate
from load_tests.run import counts_change, fallback_counts, parse_duration
from load_tests.slo import (
    FINAL_STATS_SUFFIX,
    KindStats,
    LoadTestError,
    Measured,
    Sample,
    Slo,
    judge,
    measure_samples,
    parse_request_name,
    percentile,
    request_name,
)

PERCENTILE_COLUMNS = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%",
                      "99.99%", "100%"]
STATS_COLUMNS = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                 "Average Response Time", "Min Response Time", "Max Response Time",
                 "Average Content Size", "Requests/s", "Failures/s", *PERCENTILE_COLUMNS]
HISTORY_COLUMNS = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s",
                   *PERCENTILE_COLUMNS, "Total Request Count", "Total Failure Count",
                   "Total Median Response Time", "Total Average Response Time",
                   "Total Min Response Time", "Total Max Response Time",
                   "Total Average Content Size"]


# -- percentiles ----------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    # the worked example of the nearest-rank method on Wikipedia ("Percentile")
    values = [15, 20, 35, 40, 50]
    assert [percentile(values, p) for p in (0.05, 0.30, 0.40, 0.50, 1.0)] == [15, 20, 20, 35, 50]
    hundred = list(range(100, 0, -1))  # 1..100, unsorted on purpose
    assert percentile(hundred, 0.50) == 50  # rank ceil(50) = 50, no interpolation
    assert percentile(hundred, 0.95) == 95
    assert percentile(hundred, 0.99) == 99
    assert percentile(hundred, 0.991) == 100  # rank ceil(99.1) = 100
    assert percentile(hundred, 0.0) == 1
    assert percentile([7.5], 0.99) == 7.5
    assert percentile([], 0.99) == 0.0


def test_percentile_rejects_p_outside_0_1() -> None:
    with pytest.raises(LoadTestError, match="percentile"):
        percentile([1, 2], 99)


# -- request names --------------------------------------------------------------------


def test_request_names_round_trip_and_keep_junk_reasons_out() -> None:
    assert parse_request_name(request_name("known")) == ("known", None)
    assert parse_request_name(request_name("heavy", "redis")) == ("heavy", "redis")
    assert parse_request_name(request_name("new", "Budget ")) == ("new", "budget")
    assert request_name("new", "no model; drop table") == "/recommend/new fallback=other"
    assert parse_request_name("/recommend/visitor") is None  # not a kind
    assert parse_request_name("/health") is None
    assert parse_request_name("Aggregated") is None


# -- samples and the checks -----------------------------------------------------------


def test_measure_samples_counts_kinds_failures_and_fallbacks() -> None:
    samples = ([Sample("known", 1.0, True)] * 6 + [Sample("known", 2.0, True, "redis")] * 2
               + [Sample("new", 3.0, False)] + [Sample("malformed", 0.5, True)] * 3)
    m = measure_samples(samples, duration_s=4.0)
    assert (m.requests, m.failures, m.rps) == (12, 1, 3.0)
    assert m.by_kind == {"known": KindStats(8, 0, 2), "new": KindStats(1, 1, 0),
                         "malformed": KindStats(3, 0, 0)}
    assert m.fallbacks == {"redis": 2}
    assert m.error_rate == 1 / 12
    assert m.valid_requests == 9  # the 400 kinds are not answered with a list
    assert m.fallback_rate == 2 / 9
    # latencies sorted: 0.5 x3, 1.0 x6, 2.0 x2, 3.0; nearest rank
    assert (m.p50_ms, m.p95_ms, m.p99_ms, m.max_ms) == (1.0, 3.0, 3.0, 3.0)


def test_measure_samples_needs_a_positive_duration() -> None:
    with pytest.raises(LoadTestError, match="duration"):
        measure_samples([Sample("known", 1.0, True)], duration_s=0)


def _passing() -> Measured:
    """A run that meets the default SLO with room to spare on every check."""
    return Measured(source="test", requests=100_000, failures=0, duration_s=30.0, rps=3300.0,
                    steady_rps=3400.0, p50_ms=2.0, p95_ms=6.0, p99_ms=11.0, max_ms=90.0,
                    by_kind={"known": KindStats(90_000, 0, 450), "absurd": KindStats(10_000, 0, 0)},
                    fallbacks={"redis": 450})


def test_a_run_within_every_objective_passes() -> None:
    report = judge(_passing(), Slo())
    assert report.passed
    assert {c.name for c in report.checks} == {"sent", "throughput", "p95", "p99", "deadline",
                                                "errors", "fallbacks"}


@pytest.mark.parametrize(("check", "change"), [
    ("throughput", {"steady_rps": 2999.0}),
    ("p95", {"p95_ms": 10.5}),
    ("p99", {"p99_ms": 16.0}),
    ("deadline", {"max_ms": 601.0}),
    ("errors", {"failures": 1}),
    ("fallbacks", {"fallbacks": {"redis": 901}}),  # 901 / 90,000 > 1%
    ("sent", {"requests": 0, "by_kind": {}, "fallbacks": {}}),
])
def test_each_check_fails_alone_past_its_limit(check: str, change: dict) -> None:
    report = judge(dataclasses.replace(_passing(), **change), Slo())
    failed = {c.name for c in report.checks if not c.passed}
    assert failed == {check}
    assert not report.passed


def test_limits_are_inclusive() -> None:
    at_limits = dataclasses.replace(_passing(), steady_rps=3000.0, p95_ms=10.0, p99_ms=15.0,
                                    max_ms=600.0, fallbacks={"redis": 900})
    assert judge(at_limits, Slo()).passed


def test_throughput_uses_the_steady_rate_when_known_else_the_whole_run() -> None:
    slow_ramp = dataclasses.replace(_passing(), rps=2500.0, steady_rps=3100.0)
    assert judge(slow_ramp, Slo()).passed
    no_history = dataclasses.replace(_passing(), rps=2500.0, steady_rps=None)
    assert {c.name for c in judge(no_history, Slo()).checks if not c.passed} == {"throughput"}


def test_slo_limits_are_taken_from_the_slo() -> None:
    assert not judge(_passing(), Slo(p99_ms=10.0)).passed
    assert judge(dataclasses.replace(_passing(), failures=5), Slo(max_error_rate=0.001)).passed


# -- locust's CSV ---------------------------------------------------------------------


def _stats_row(kind: str, name: str, n: int, failed: int, rps: float, pcts: list[object],
               max_ms: float) -> list[object]:
    return [kind, name, n, failed, pcts[0], 1.5, 0.3, max_ms, 50.0, rps, 0.0, *pcts]


def _stats_csv() -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(STATS_COLUMNS)
    pcts = [1, 1, 2, 2, 3, 4, 5, 6, 9, 9, 9]
    w.writerow(_stats_row("GET", "/health", 10, 0, 1.0, pcts, 5.0))  # in totals, not in kinds
    w.writerow(_stats_row("GET", "/recommend/absurd", 50, 0, 5.0, pcts, 3.0))
    w.writerow(_stats_row("GET", "/recommend/heavy fallback=redis", 30, 0, 3.0, pcts, 8.0))
    w.writerow(_stats_row("GET", "/recommend/heavy", 170, 2, 17.0, pcts, 9.0))
    w.writerow(_stats_row("GET", "/recommend/known fallback=budget", 5, 1, 0.5, pcts, 700.0))
    w.writerow(_stats_row("GET", "/recommend/known", 735, 0, 73.5, pcts, 9.0))
    w.writerow(_stats_row("GET", "/recommend/new", 0, 0, 0.0, ["N/A"] * 11, 0.0))
    # distinct values per percentile column, so a mixed-up column shows
    w.writerow(_stats_row("", "Aggregated", 1000, 3, 100.0, [2, 3, 3, 4, 5, 7, 9, 12, 40, 700, 700],
                          701.3))
    return out.getvalue()


def _history(rows: list[tuple[int, int, int]]) -> str:
    """A history CSV of (timestamp, users, cumulative requests) "Aggregated" rows."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(HISTORY_COLUMNS)
    for t, users, total in rows:
        w.writerow([t, users, "", "Aggregated", "0.0", "0.0", *(["N/A"] * 11), total,
                    0, 0, 0.0, 0, 0.0, 50.0])
    return out.getvalue()


def _history_csv() -> str:
    """Users ramp 0 -> 5 -> 10 and stay at 10 from t=102 to t=105, when the cumulative
    count goes 250 -> 550: a steady 100 req/s over 3 s."""
    return _history([(100, 0, 0), (101, 5, 60), (102, 10, 250), (103, 10, 350), (104, 10, 450),
                     (105, 10, 550)])


def test_locust_stats_give_totals_percentiles_kinds_and_fallbacks() -> None:
    m = measure_locust_csv(_stats_csv(), _history_csv())
    assert (m.requests, m.failures, m.rps) == (1000, 3, 100.0)
    assert (m.p50_ms, m.p95_ms, m.p99_ms, m.max_ms) == (2.0, 7.0, 12.0, 701.3)
    assert m.by_kind == {"absurd": KindStats(50, 0, 0), "heavy": KindStats(200, 2, 30),
                         "known": KindStats(740, 1, 5), "new": KindStats(0, 0, 0)}
    assert m.fallbacks == {"redis": 30, "budget": 5}
    assert m.valid_requests == 940  # heavy + known + new; /health and absurd are not
    assert m.fallback_rate == 35 / 940
    assert m.steady_rps == 100.0
    assert m.duration_s == 5.0


def test_steady_rate_is_measured_between_updates_at_full_load() -> None:
    # as with --processes: counts move only when workers report; the last row repeats
    # a stale count, so the rate is 300 requests over 2 s, not over 3 s
    reports = _history([(100, 0, 0), (101, 5, 40), (102, 10, 250), (103, 10, 250),
                        (104, 10, 550), (105, 10, 550)])
    assert steady_rate(reports) == (150.0, 5.0)
    # one update at full load spans no time: no steady rate
    assert steady_rate(_history([(7, 5, 10), (8, 10, 20)])) == (None, 1.0)
    assert steady_rate(_history([])) == (None, 0.0)


def test_without_history_the_duration_comes_from_the_rate() -> None:
    m = measure_locust_csv(_stats_csv())
    assert m.steady_rps is None and m.duration_s == 10.0  # 1,000 requests at 100 req/s


def test_locust_csv_without_aggregated_row_or_with_other_columns_is_an_error() -> None:
    text = _stats_csv()
    with pytest.raises(LoadTestError, match="Aggregated"):
        measure_locust_csv("\n".join(line for line in text.splitlines() if "Aggregated" not in line))
    with pytest.raises(LoadTestError, match="99%"):
        measure_locust_csv(text.replace("99%", "99th", 1))


def test_load_prefers_the_final_stats_and_falls_back_to_locusts_own(tmp_path: Path) -> None:
    prefix = tmp_path / "locust"
    with pytest.raises(LoadTestError, match="cannot read"):
        load_locust_csv(prefix)
    Path(f"{prefix}_stats.csv").write_text(_stats_csv(), encoding="utf-8")
    Path(f"{prefix}_stats_history.csv").write_text(_history_csv(), encoding="utf-8")
    stale = load_locust_csv(prefix)
    assert stale.requests == 1000 and stale.steady_rps == 100.0
    Path(f"{prefix}{FINAL_STATS_SUFFIX}").write_text(
        _stats_csv().replace(",Aggregated,1000,", ",Aggregated,1234,"), encoding="utf-8")
    assert load_locust_csv(prefix).requests == 1234


# -- the rendered report --------------------------------------------------------------


def test_json_and_markdown_carry_the_numbers_and_the_verdict() -> None:
    m = measure_locust_csv(_stats_csv(), _history_csv())
    report = judge(m, Slo(), service_fallbacks={"redis": 31.0, "budget": 5.0, "no_model": 0.0})
    data = json.loads(report.to_json())
    assert data["passed"] is False
    assert data["measured"]["requests"] == 1000 and data["measured"]["p99_ms"] == 12.0
    assert data["measured"]["by_kind"]["heavy"] == {"requests": 200, "failures": 2, "fallbacks": 30}
    assert data["measured"]["error_rate"] == 0.003
    assert data["service_fallbacks"] == {"redis": 31.0, "budget": 5.0, "no_model": 0.0}
    verdicts = {c["name"]: c["passed"] for c in data["checks"]}
    assert verdicts == {"sent": True, "throughput": False, "p95": True, "p99": True,
                        "deadline": False, "errors": False, "fallbacks": False}
    md = report.to_markdown()
    assert md.startswith("# SLO report: FAIL")
    assert "| throughput | req/s >= limit | 3,000.0 | 100.0 | **FAIL** |" in md
    assert "| p99 | p99 ms <= limit | 15.0 | 12.0 | pass |" in md
    assert "| errors | error rate <= limit | 0.000% | 0.300% | **FAIL** |" in md
    assert "| 2.0 | 7.0 | 12.0 | 701.3 |" in md  # p50 p95 p99 max
    assert "| heavy | 200 | 2 | 30 |" in md
    assert "| redis | 30 | 31 |" in md and "| no_model | 0 | 0 |" in md


def test_markdown_says_when_the_service_was_not_scraped() -> None:
    md = judge(_passing(), Slo()).to_markdown()
    assert md.startswith("# SLO report: PASS")
    assert "not scraped" in md and "| redis | 450 | n/a |" in md


# -- the run script's pure helpers ----------------------------------------------------


def test_durations_read_like_locusts_run_time() -> None:
    assert [parse_duration(t) for t in ("90", "30s", "2m", "1h30m", "1m5s")] == [
        90.0, 30.0, 120.0, 5400.0, 65.0]
    for bad in ("", "0", "0s", "5x", "s", "1.5m"):
        with pytest.raises(LoadTestError, match="duration"):
            parse_duration(bad)


def test_service_fallbacks_come_from_the_counter_and_its_change() -> None:
    text = ("# HELP movierec_serve_fallbacks_total Degraded /recommend answers by reason\n"
            "# TYPE movierec_serve_fallbacks_total counter\n"
            'movierec_serve_fallbacks_total{reason="redis"} 7.0\n'
            'movierec_serve_fallbacks_created{reason="redis"} 1.7e+09\n'
            'movierec_serve_fallbacks_total{reason="budget"} 2.0\n'
            "# TYPE movierec_serve_requests_total counter\n"
            'movierec_serve_requests_total{endpoint="recommend",status="200"} 99.0\n')
    before = fallback_counts(text)
    assert before == {"redis": 7.0, "budget": 2.0}
    after = {"redis": 10.0, "budget": 2.0, "no_model": 4.0}
    assert counts_change(before, after) == {"budget": 0.0, "no_model": 4.0, "redis": 3.0}
