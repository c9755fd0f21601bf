"""The serving benchmark's pure helpers (``benchmarks/serve_measure.py``): wrk's report,
percentiles, the pacing, the stage profile from /metrics, /proc parsing, CPU per request,
the probe's classification and summary, and the options. No network."""

from __future__ import annotations

import http.client
import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from benchmarks.serve_measure import (
    ProbeSample,
    children_ticks,
    classify,
    cpu_per_request,
    histogram_totals,
    is_kafka_broker,
    median_dicts,
    parse_counts,
    parse_machine_busy,
    parse_phases,
    parse_proc_stat,
    parse_wrk,
    percentile,
    probe_window,
    read_proc_stat,
    shed_share,
    shed_totals,
    stage_profile,
    summarize_probe,
    think_delay_ms,
    tree_ticks,
    value_range,
    wrk_ms,
)

WRK_WITH_ERRORS = """\
Running 5s test @ http://127.0.0.1:18282
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    25.61ms    8.02ms  96.48ms   78.31%
    Req/Sec   624.30     60.12   740.00     72.00%
  Latency Distribution
     50%   24.73ms
     75%   29.01ms
     90%   34.52ms
     99%   53.13ms
  3110 requests in 5.00s, 2.11MB read
  Socket errors: connect 5, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:    621.72
Transfer/sec:    431.18KB
"""

WRK_CLEAN = """\
Running 5s test @ http://127.0.0.1:18283
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   850.00us  120.00us   1.20s    90.00%
    Req/Sec     3.10k   200.00     3.40k    70.00%
  Latency Distribution
     50%  800.00us
     75%  900.00us
     90%    1.00ms
     99%    1.20s
  15500 requests in 5.00s, 4.00MB read
Requests/sec:   3100.00
Transfer/sec:    800.00KB
"""


def test_wrk_durations_in_every_unit_are_ms() -> None:
    assert wrk_ms("850.00us") == pytest.approx(0.85)
    assert wrk_ms("1.23ms") == pytest.approx(1.23)
    assert wrk_ms("2.00s") == pytest.approx(2000.0)
    assert wrk_ms("1.50m") == pytest.approx(90_000.0)


def test_wrk_report_with_errors_is_split_and_summed() -> None:
    row = parse_wrk(WRK_WITH_ERRORS)
    assert row == {"rps": 621.72, "p50_ms": pytest.approx(24.73), "p99_ms": pytest.approx(53.13),
                   "socket_errors": 11, "non_2xx": 4, "requests": 3110,
                   "mean_ms": pytest.approx(25.61), "connect_errors": 5, "read_errors": 3,
                   "write_errors": 1, "timeout_errors": 2}


def test_wrk_report_without_errors_reads_zero_and_mixed_units() -> None:
    row = parse_wrk(WRK_CLEAN)
    assert row["socket_errors"] == row["connect_errors"] == row["timeout_errors"] == 0
    assert row["non_2xx"] == 0 and row["requests"] == 15500 and row["rps"] == 3100.0
    assert row["mean_ms"] == pytest.approx(0.85), "the Thread Stats line, not the distribution"
    assert row["p50_ms"] == pytest.approx(0.8) and row["p99_ms"] == pytest.approx(1200.0)


def test_the_pause_paces_connections_to_the_target() -> None:
    # 16 connections at 400/s: a cycle of 40 ms, 5 of them waiting for the answer
    assert think_delay_ms(16, 400.0, 5.0) == 35
    assert 16 / ((think_delay_ms(16, 480.0, 3.3) + 3.3) / 1000) == pytest.approx(480, rel=0.02)
    assert think_delay_ms(16, 10_000.0, 5.0) == 1, "at least 1 ms, never 0 (no pause at all)"


def test_the_probe_runs_inside_wrk_with_margins() -> None:
    assert probe_window(15) == (2.0, 14.0)
    assert probe_window(5) == (2.0, 4.0)
    assert probe_window(2) == (0.5, 1.5)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0, "sorted first"
    assert percentile([7.0], 99) == 7.0
    assert percentile([5.0, 10.0], 1) == 5.0
    assert percentile([], 50) is None


def test_ranges_and_medians_over_repeats() -> None:
    assert value_range([3.456, 1.234, 2.0]) == [1.23, 3.46]
    rows = [{"a": 1.0, "b": 10, "c": None, "d": {"x": 1}},
            {"a": 3.0, "b": 30},
            {"a": 2.0, "e": 5.0}]
    assert median_dicts(rows) == {"a": 2.0, "b": 20.0, "e": 5.0}


def _exposition(stage_obs: dict[str, list[float]], requests: list[float],
                shed: int = 0, answered: int = 0) -> str:
    r = CollectorRegistry()
    stage = Histogram("movierec_serve_stage_seconds", "stage", ["stage"], registry=r)
    latency = Histogram("movierec_serve_request_seconds", "request", ["endpoint"], registry=r)
    fallbacks = Counter("movierec_serve_fallbacks_total", "fallbacks", ["reason"], registry=r)
    reqs = Counter("movierec_serve_requests_total", "requests", ["endpoint", "status"], registry=r)
    for name, values in stage_obs.items():
        for v in values:
            stage.labels(name).observe(v)
    for v in requests:
        latency.labels("recommend").observe(v)
    latency.labels("metrics").observe(5.0)  # another endpoint: not counted
    fallbacks.labels("shed").inc(shed)
    fallbacks.labels("budget").inc(7)
    reqs.labels("recommend", "200").inc(answered)
    reqs.labels("health", "200").inc(99)
    return generate_latest(r).decode()


def test_histogram_totals_sum_and_count_per_label() -> None:
    text = _exposition({"model": [0.001, 0.003], "walk": [0.0005]}, [0.01])
    totals = histogram_totals(text, "movierec_serve_stage_seconds", "stage")
    assert totals.keys() == {"model", "walk"}
    assert totals["model"] == (pytest.approx(0.004), 2.0) and totals["walk"][1] == 1.0


def test_stage_profile_is_the_difference_per_request_and_per_call() -> None:
    before = _exposition({"features": [0.002]}, [0.01])
    # after: 4 more requests; features ran in 2 of them (2 ms + 4 ms), a new stage once
    after = _exposition({"features": [0.002, 0.002, 0.004], "model": [0.001]},
                        [0.01, 0.005, 0.005, 0.010, 0.020])
    profile = stage_profile(before, after)
    assert profile["recommend_requests"] == 4
    assert profile["request_ms_per_request"] == pytest.approx(10.0)
    assert profile["stage_features_ms_per_request"] == pytest.approx(1.5)
    assert profile["stage_features_ms_per_call"] == pytest.approx(3.0)
    assert profile["stage_model_ms_per_request"] == pytest.approx(0.25)
    assert profile["stage_model_ms_per_call"] == pytest.approx(1.0)


def test_stage_profile_gives_the_answer_caches_hit_share() -> None:
    def cache(hit: float, miss: float) -> str:
        return (_exposition({}, [0.01]) + "# TYPE movierec_serve_answer_cache_total counter\n"
                f'movierec_serve_answer_cache_total{{outcome="hit"}} {hit}\n'
                f'movierec_serve_answer_cache_total{{outcome="miss"}} {miss}\n')
    assert stage_profile(cache(10, 5), cache(40, 15))["answer_cache_hit_share"] == 0.75
    assert stage_profile(cache(1, 1), cache(1, 1))["answer_cache_hit_share"] is None


def test_stage_profile_without_requests_has_no_means() -> None:
    text = _exposition({"features": [0.002]}, [0.01])
    profile = stage_profile(text, text)
    assert profile["recommend_requests"] == 0 and profile["request_ms_per_request"] is None
    assert profile["stage_features_ms_per_call"] is None


def test_shed_totals_read_recommend_answers_and_shed_fallbacks() -> None:
    assert shed_totals(_exposition({}, [], shed=3, answered=40)) == (40.0, 3.0)
    assert shed_share(400.0, 3.0) == {"shed": 3, "shed_share": 0.0075}
    assert shed_share(0.0, 0.0) == {"shed": 0, "shed_share": 0.0}


def test_proc_stat_fields_count_from_the_last_parenthesis() -> None:
    # a command name with a space and a parenthesis: naive splitting shifts every field
    line = ("4133 (gunicorn: w) rk) S 4126 4126 4082 0 -1 4194560 1000 0 0 0 "
            "250 50 7 3 20 0 1 0 12345 100000 2000 18446744073709551615")
    stat = parse_proc_stat(line)
    assert (stat.pid, stat.ppid, stat.ticks, stat.children_ticks) == (4133, 4126, 300, 10)


def test_tree_ticks_count_live_and_reaped_children_but_not_the_parent() -> None:
    master = parse_proc_stat("10 (g) S 1 0 0 0 0 0 0 0 0 0 5 5 40 2")
    others = [parse_proc_stat(f"{pid} (w) S {ppid} 0 0 0 0 0 0 0 0 0 {u} {s} 0 0")
              for pid, ppid, u, s in ((11, 10, 100, 20), (12, 10, 50, 5), (13, 1, 999, 999))]
    assert tree_ticks(master, [master, *others]) == 42 + 120 + 55


def test_this_process_reads_from_proc() -> None:
    own = read_proc_stat(os.getpid())
    assert own is not None and own.pid == os.getpid() and own.ppid == os.getppid()
    assert children_ticks(os.getpid()) is not None
    assert read_proc_stat(2**22 + 7) is None, "a pid above pid_max: gone"


def test_machine_busy_leaves_out_idle_and_iowait() -> None:
    text = "cpu  100 5 30 1000 40 2 3 4 0 0\ncpu0 50 2 15 500 20 1 1 2 0 0\n"
    assert parse_machine_busy(text) == 100 + 5 + 30 + 2 + 3 + 4


def test_kafka_broker_is_a_java_process_naming_kafka() -> None:
    assert is_kafka_broker(["/usr/bin/java", "-Xmx512m", "-cp", "/x/kafka-4.1.1/*", "kafka.Kafka"])
    assert is_kafka_broker(["java", "kafka.Kafka", "server.properties"])
    assert not is_kafka_broker(["java", "-jar", "zookeeper.jar"])
    assert not is_kafka_broker(["python", "kafka_consumer.py"])
    assert not is_kafka_broker([])


def test_cpu_per_request_for_the_parts_read_both_times() -> None:
    before = {"workers": 10.0, "wrk": 1.0, "redis": 5.0, "machine": 100.0}
    after = {"workers": 12.0, "wrk": 1.5, "redis": 5.25, "kafka": 9.0, "machine": 104.0}
    out = cpu_per_request(before, after, 1000)
    assert out == {"cpu_workers_ms_per_request": 2.0, "cpu_wrk_ms_per_request": 0.5,
                   "cpu_redis_ms_per_request": 0.25, "cpu_machine_ms_per_request": 4.0,
                   "cpu_total_ms_per_request": 2.75}
    assert cpu_per_request(before, after, 0) == {}


@pytest.mark.parametrize(("status", "body", "total_ms", "error", "expected"), [
    (200, 900, 12.0, None, "ok"),
    (200, 900, 600.0, None, "ok"),
    (200, 900, 601.0, None, "late"),
    (200, 0, 12.0, None, "error"),
    (503, 20, 3.0, None, "refused"),
    (429, 20, 3.0, None, "refused"),
    (503, 20, 650.0, None, "late"),
    (None, 0, 1.0, ConnectionRefusedError(), "refused"),
    (None, 0, 5.0, ConnectionResetError(), "refused"),
    (None, 0, 5.0, http.client.RemoteDisconnected("closed"), "refused"),
    (None, 0, 1003.0, ConnectionResetError(), "late"),
    (None, 0, 600.5, TimeoutError("timed out"), "late"),
    (None, 0, 2.0, TimeoutError("timed out"), "late"),
    (None, 0, 2.0, http.client.BadStatusLine("x"), "error"),
    (None, 0, 2.0, OSError(99, "Cannot assign requested address"), "error"),
])
def test_probe_outcomes(status: int | None, body: int, total_ms: float,
                        error: BaseException | None, expected: str) -> None:
    assert classify(status=status, body_bytes=body, total_ms=total_ms, error=error) == expected


def test_probe_summary_counts_shares_and_percentiles_of_answered() -> None:
    samples = ([ProbeSample("ok", float(ms), True, "200") for ms in range(1, 7)]
               + [ProbeSample("late", 900.0, True, "200"),
                  ProbeSample("late", 600.4, False, "connect:TimeoutError"),
                  ProbeSample("refused", 0.5, True, "503"),
                  ProbeSample("refused", 0.2, True, "read:ConnectionResetError"),
                  ProbeSample("error", 1.0, False, "read:BadStatusLine")])
    out = summarize_probe(samples)
    assert out["requests"] == 11
    assert (out["ok"], out["late"], out["refused"], out["error"]) == (6, 2, 2, 1)
    assert out["ok_share"] == round(6 / 11, 4) and out["error_share"] == round(1 / 11, 4)
    # answered: 0.2, 0.5, 1..6, 900 (9 values): p50 is the 5th, p99 and max the 9th
    assert (out["p50_ms"], out["p99_ms"], out["max_ms"]) == (3.0, 900.0, 900.0)
    assert out["late_by"] == {"200": 1, "connect:TimeoutError": 1}
    assert out["refused_by"] == {"503": 1, "read:ConnectionResetError": 1}
    assert out["error_by"] == {"read:BadStatusLine": 1}


def test_probe_summary_of_nothing() -> None:
    out = summarize_probe([])
    assert out["requests"] == 0 and out["ok_share"] is None and out["p99_ms"] is None


def test_phases_in_run_order_and_load80_and_training_need_saturate() -> None:
    assert parse_phases("overload,saturate,load80") == ("saturate", "load80", "overload")
    assert parse_phases("demo, overload") == ("demo", "overload")
    with pytest.raises(ValueError, match="saturate"):
        parse_phases("load80,demo")
    with pytest.raises(ValueError, match="training need"):
        parse_phases("training")
    with pytest.raises(ValueError, match="unknown"):
        parse_phases("saturate,warmup")
    with pytest.raises(ValueError, match="no phase"):
        parse_phases(" , ")


def test_overload_connections_are_positive_counts() -> None:
    assert parse_counts("256,1024") == [256, 1024]
    with pytest.raises(ValueError):
        parse_counts("0,256")
    with pytest.raises(ValueError):
        parse_counts("")
