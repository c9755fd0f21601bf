"""The audits over the session's demo, after the other e2e tests (a drill included,
``test_drill.py`` sorts before this module): no unsafe movie reached a user under 18 or
of unknown age, on any path or arm, and the live monitor counted none; the simulator's
scraping client is answered the popular list from its 30th step on (the walk guard), and
found in the served records."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from audit.telemetry import read_served
from movierec.settings import ServedTopicSettings, load
from tests.e2e.conftest import movierec

pytestmark = pytest.mark.e2e


def test_no_unsafe_movie_was_served_to_a_minor(report: dict, demo_env: dict[str, str]) -> None:
    run = movierec(demo_env, "audit", "safety", "--json", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    numbers = json.loads(run.stdout)["numbers"]
    assert numbers["violations"] == 0 and numbers["policy_breaches"] == 0
    assert numbers["lists"] >= report["grade"]["total_requests"] * 0.9, "the live traffic"
    assert numbers["lists_by_audience"].get("minor", 0) > 0, "minors were among the users"
    assert len(numbers["minor_safe_lists_by_arm"]) >= 2, "both arms of the canary"
    port = demo_env["MOVIEREC_ONLINE_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    judged = [line for line in text.splitlines()
              if line.startswith('movierec_online_lists_safety_judged_total{audience="minor"}')]
    assert judged and float(judged[0].split()[-1]) > 0, "the live monitor judged lists"
    assert "movierec_online_unsafe_served_total{" not in text


def test_the_simulated_scraping_client_is_found(report: dict, demo_env: dict[str, str],
                                               tmp_path: Path) -> None:
    """The simulator's crawler (ids walked from 0) among its organic sessions, against the
    demo's service: the service answers the walk's steps from the 30th on with the
    popular list (fallback scraping) and no organic request outside the walk; `movierec
    audit security` finds the walk afterwards, from the served records alone. The
    simulator's truth only checks the answers."""
    truth = tmp_path / "truth.jsonl"
    serve_url = f"http://127.0.0.1:{demo_env['MOVIEREC_SERVE_PORT']}"
    failed_open = _walk_check_failures(serve_url)
    started_ms = int(time.time() * 1000)
    env = {**demo_env, "MOVIEREC_SIM_USERS": demo_env["MOVIEREC_DEMO_USERS"],
           "MOVIEREC_SIM_MOVIES": demo_env["MOVIEREC_DEMO_MOVIES"]}
    live = movierec(env, "sim", "live", "--url", serve_url, "--rate", "5",
                    "--duration", "25", "--start-day", demo_env["MOVIEREC_DEMO_DAYS"],
                    "--scraper-rate", "4", "--truth", str(truth), timeout=180)
    assert live.returncode == 0, live.stdout[-2000:] + live.stderr[-2000:]
    crawler = next(json.loads(line) for line in truth.read_text().splitlines()
                   if json.loads(line).get("kind") == "scraper")
    assert crawler["last_user"] >= 60, crawler
    served = read_served(demo_env["MOVIEREC_KAFKA_BOOTSTRAP"],
                         load(ServedTopicSettings, demo_env).served_topic,
                         since_ms=started_ms, timeout_s=120).records
    walk_end = crawler["last_user"] + 3  # organic requests for its next ids may extend it
    scraped = {r.user_id for r in served if r.fallback == "scraping"}
    assert all(crawler["first_user"] + 29 <= u <= walk_end for u in scraped), sorted(scraped)
    organic = [r for r in served if not crawler["first_user"] <= r.user_id <= walk_end]
    assert len(organic) >= 50 and not [r for r in organic if r.fallback == "scraping"]
    # every step from the 30th on is answered the popular list, but for checks that failed
    # open (a Redis round trip past its 25 ms timeout on a loaded box: counted, answered)
    steps = set(range(crawler["first_user"] + 29, crawler["last_user"] + 1))
    missed = steps - scraped
    assert len(missed) <= len(steps) // 10, sorted(missed)
    assert len(missed) <= _walk_check_failures(serve_url) - failed_open, sorted(missed)
    audit = movierec(demo_env, "audit", "security", "--since-min", "2", "--json", timeout=300)
    assert audit.returncode == 1, audit.stdout[-2000:] + audit.stderr[-2000:]
    runs = json.loads(audit.stdout)["numbers"]["runs"]
    assert [r["first"] for r in runs] == [crawler["first_user"]], runs
    assert crawler["last_user"] - 3 <= runs[0]["last"] <= crawler["last_user"] + 3


def _walk_check_failures(serve_url: str) -> float:
    """``movierec_serve_walk_check_failures_total`` over every reason, from the service."""
    with urllib.request.urlopen(f"{serve_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("movierec_serve_walk_check_failures_total{"))
