"""The alert rules (ops/prometheus/rules), unit-tested by Prometheus's own ``promtool test
rules``: every alert fires on a series that must page (or open a ticket), and stays quiet
on one that must not. Each alert has a severity, a summary and a runbook section that
exists. The cases are written here once and turned into promtool's test file, with the
expected labels and annotations read from the rules themselves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "ops/prometheus/rules").glob("*.yml"))
RUNBOOK = ROOT / "docs/runbook.md"
DAY_MIN = 1500  # minutes of "the day before" in the week-over-day cases


def _day_then(before: str, after: str) -> str:
    """A counter's per-minute growth ``before`` for DAY_MIN minutes, then ``after`` for an hour."""
    top = float(before) * DAY_MIN
    return f"0+{before}x{DAY_MIN} {top + float(after):g}+{after}x59"


# alert -> (series that fire, eval minute, extra alert labels), (series that must not fire)
CASES: dict[str, tuple[tuple[dict[str, str], int, dict[str, str]], dict[str, str]]] = {
    "MovierecAvailabilityBudgetBurnFast": (
        ({'movierec_online_requests_total{outcome="success"}': "0+90x100",
          'movierec_online_requests_total{outcome="timeout"}': "0+10x100"}, 75, {}),
        {'movierec_online_requests_total{outcome="success"}': "0+999x100",
         'movierec_online_requests_total{outcome="timeout"}': "0+1x100"}),
    "MovierecAvailabilityBudgetBurnSlow": (
        ({'movierec_online_requests_total{outcome="success"}': "0+98x200",
          'movierec_online_requests_total{outcome="refused"}': "0+2x200"}, 180, {}),
        {'movierec_online_requests_total{outcome="success"}': "0+999x200",
         'movierec_online_requests_total{outcome="refused"}': "0+1x200"}),
    "MovierecLatencyBudgetBurnFast": (
        ({'movierec_serve_response_seconds_bucket{endpoint="recommend",le="0.015"}': "0+80x100",
          'movierec_serve_response_seconds_count{endpoint="recommend"}': "0+100x100"}, 75, {}),
        {'movierec_serve_response_seconds_bucket{endpoint="recommend",le="0.015"}': "0+999x100",
         'movierec_serve_response_seconds_count{endpoint="recommend"}': "0+1000x100"}),
    "MovierecLatencyBudgetBurnSlow": (
        ({'movierec_serve_response_seconds_bucket{endpoint="recommend",le="0.015"}': "0+96x200",
          'movierec_serve_response_seconds_count{endpoint="recommend"}': "0+100x200"}, 180, {}),
        {'movierec_serve_response_seconds_bucket{endpoint="recommend",le="0.015"}': "0+995x200",
         'movierec_serve_response_seconds_count{endpoint="recommend"}': "0+1000x200"}),
    "MovierecFallbackRateHigh": (
        ({'movierec_serve_fallbacks_total{reason="redis"}': "0+10x30",
          'movierec_serve_requests_total{endpoint="recommend",status="200"}': "0+100x30"}, 25, {}),
        {'movierec_serve_fallbacks_total{reason="redis"}': "0+1x30",  # a crawler's steps: not this
         'movierec_serve_fallbacks_total{reason="scraping"}': "0+20x30",
         'movierec_serve_requests_total{endpoint="recommend",status="200"}': "0+100x30"}),
    "MovierecShedRateHigh": (
        ({'movierec_serve_fallbacks_total{reason="shed"}': "0+5x30",
          'movierec_serve_requests_total{endpoint="recommend",status="200"}': "0+100x30"}, 15, {}),
        {'movierec_serve_fallbacks_total{reason="shed"}': "0+0.5x30",
         'movierec_serve_requests_total{endpoint="recommend",status="200"}': "0+100x30"}),
    "MovierecConnectionsRefused": (  # 0.5 resets/s fire; 0.05/s (a blip) does not
        ({"movierec_serve_refused_total": "0+30x20"}, 10, {}),
        {"movierec_serve_refused_total": "0+3x20"}),
    "MovierecRedisBreakerOpen": (
        ({"movierec_serve_redis_breaker_open": "1x10"}, 5, {}),
        {"movierec_serve_redis_breaker_open": "0x10"}),
    "MovierecServedRecordsFailing": (
        ({'movierec_serve_telemetry_records_total{sink="kafka",outcome="published"}': "0+600x5 3000x10",
          'movierec_serve_telemetry_records_total{sink="kafka",outcome="failed"}': "0x5 0+600x10"}, 10, {}),
        {'movierec_serve_telemetry_records_total{sink="kafka",outcome="published"}': "0+600x15",
         'movierec_serve_telemetry_records_total{sink="kafka",outcome="failed"}': "0+10x15"}),
    "MovierecConsumerStalled": (  # a heartbeat's value is the time of the beat (minute x 60 s)
        ({"movierec_consumer_heartbeat_timestamp_seconds": "0+60x10 600x20"}, 20, {}),
        {"movierec_consumer_heartbeat_timestamp_seconds": "0+60x30"}),
    "MovierecModelRejected": (
        ({'movierec_serve_model_swaps_total{result="rejected"}': "0x5 1+1x10"}, 10, {}),
        {'movierec_serve_model_swaps_total{result="rejected"}': "0x5 1x10",
         'movierec_serve_model_swaps_total{result="loaded"}': "1x15"}),
    "MovierecUnsafeServedToMinor": (  # a single unsafe movie pages; judged lists do not
        ({'movierec_online_unsafe_served_total{audience="minor",reason="rating_R"}':
          "0x5 1x10"}, 7, {}),
        {'movierec_online_lists_safety_judged_total{audience="minor"}': "0+50x15",
         'movierec_online_unsafe_served_total{audience="minor",reason="rating_R"}': "3x15"}),
    "MovierecShillingCampaign": (
        ({"movierec_loop_shilling_campaigns": "0x5 1x10"}, 8, {}),
        {"movierec_loop_shilling_campaigns": "0x15"}),
    "MovierecScrapingWalk": (  # one walk step is enough; organic traffic alone is quiet
        ({"movierec_serve_walk_steps_total": "0x5 11x10"}, 8, {}),
        {"movierec_serve_walk_steps_total": "0x15",
         'movierec_serve_fallbacks_total{reason="shed"}': "0+5x15"}),
    "MovierecClientRateLimited": (
        ({"movierec_serve_rate_limited_total": "0x5 3x10"}, 8, {}),
        {"movierec_serve_rate_limited_total": "0x15",
         'movierec_serve_requests_total{endpoint="recommend",status="200"}': "0+1000x15"}),
    "MovierecConsumerLagHigh": (
        ({'movierec_consumer_lag_messages{partition="0"}': "60000x30"}, 15, {}),
        {'movierec_consumer_lag_messages{partition="0"}': "1000x30"}),
    "MovierecFeaturesStale": (
        ({'movierec_consumer_freshness_seconds_bucket{le="1"}': "0x30",
          'movierec_consumer_freshness_seconds_bucket{le="10"}': "0x30",
          'movierec_consumer_freshness_seconds_bucket{le="30"}': "0+10x30",
          'movierec_consumer_freshness_seconds_bucket{le="+Inf"}': "0+10x30"}, 20, {}),
        {'movierec_consumer_freshness_seconds_bucket{le="1"}': "0+10x30",
         'movierec_consumer_freshness_seconds_bucket{le="10"}': "0+10x30",
         'movierec_consumer_freshness_seconds_bucket{le="30"}': "0+10x30",
         'movierec_consumer_freshness_seconds_bucket{le="+Inf"}': "0+10x30"}),
    "MovierecDeadLettersHigh": (
        ({'movierec_consumer_rejects_total{reason="garbage"}': "0+10x30",
          'movierec_consumer_events_total{kind="watch"}': "0+90x30"}, 20, {}),
        {'movierec_consumer_rejects_total{reason="garbage"}': "0+1x30",
         'movierec_consumer_events_total{kind="watch"}': "0+999x30"}),
    "MovierecEventStoreDiskLow": (
        ({"movierec_event_store_free_bytes": "5e9x10",
          "movierec_event_store_filesystem_bytes": "100e9x10"}, 8, {}),
        {"movierec_event_store_free_bytes": "40e9x10",
         "movierec_event_store_filesystem_bytes": "100e9x10"}),
    "MovierecDriftAlarm": (
        ({'movierec_drift_alarm{feature="watch_minutes"}': "1x20"}, 10, {"feature": "watch_minutes"}),
        {'movierec_drift_alarm{feature="watch_minutes"}': "0x20"}),
    "MovierecTakeRateDropping": (
        ({"movierec_online_lists_eligible_total": "0+100x1560",
          "movierec_online_lists_taken_total": _day_then("50", "20")}, 1559, {}),
        {"movierec_online_lists_eligible_total": "0+100x1560",
         "movierec_online_lists_taken_total": "0+50x1560"}),
    "MovierecCostPerPlayRising": (
        ({"movierec_online_plays_total": "0+5x1560",
          "movierec_online_license_cost_usd_total": _day_then("10", "20")}, 1559, {}),
        {"movierec_online_plays_total": "0+5x1560",
         "movierec_online_license_cost_usd_total": "0+10x1560"}),
    "MovierecLoopCycleFailed": (
        ({'movierec_loop_cycles_total{result="failed"}': "0x30 1x30"}, 45, {}),
        {'movierec_loop_cycles_total{result="failed"}': "0x60",
         'movierec_loop_cycles_total{result="promoted"}': "0x30 1x30"}),
    "MovierecModelStale": (
        ({"movierec_loop_seconds_since_update": "400000x20"}, 15, {}),
        {"movierec_loop_seconds_since_update": "100000x20"}),
    "MovierecTargetDown": (
        ({'up{job="serve",instance="serve:8082"}': "0x5"}, 3, {"job": "serve", "instance": "serve:8082"}),
        {'up{job="serve",instance="serve:8082"}': "1x5"}),
}


def alerts() -> dict[str, dict]:
    found = {}
    for path in RULES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found[rule["alert"]] = rule
    return found


def _series(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"series": name, "values": value} for name, value in values.items()]


def _expanded(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], text)


def test_every_alert_has_a_severity_a_summary_a_runbook_section_and_test_cases() -> None:
    found = alerts()
    assert set(found) == set(CASES), "every alert is tested here, and only those"
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.M)}
    for name, rule in found.items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"], name
        doc, anchor = rule["annotations"]["runbook_url"].split("#")
        assert doc == "docs/runbook.md" and anchor in headings, (name, anchor)


def test_promtool_fires_each_alert_on_its_case_and_stays_quiet_on_the_other(tmp_path: Path) -> None:
    found = alerts()
    tests = []
    for name, ((firing, minute, extra), quiet) in CASES.items():
        rule = found[name]
        labels = {"severity": rule["labels"]["severity"], **extra}
        annotations = {k: _expanded(v, labels) for k, v in rule["annotations"].items()}
        tests.append({"interval": "1m", "input_series": _series(firing), "alert_rule_test": [
            {"eval_time": f"{minute}m", "alertname": name,
             "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]}]})
        tests.append({"interval": "1m", "input_series": _series(quiet), "alert_rule_test": [
            {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": []}]})
    assert shutil.which("promtool"), "promtool comes with Debian's prometheus (`make setup`)"
    spec = tmp_path / "rules.test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(p) for p in RULES],
                                    "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run(["promtool", "test", "rules", str(spec)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    checked = subprocess.run(["promtool", "check", "rules", *map(str, RULES)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
