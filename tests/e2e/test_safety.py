"""The safety audit over the session's demo, after the other e2e tests (a drill
included, ``test_drill.py`` sorts before this module): no unsafe movie reached a user
under 18 or of unknown age, on any path or arm, and the live monitor counted none."""

from __future__ import annotations

import json
import urllib.request

import pytest

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
