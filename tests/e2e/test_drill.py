"""One incident drill on the session's demo, as CI runs it: `movierec drill serve-killed`.

The drill kills the whole recommendation service (gunicorn's master and workers: killed
workers alone are replaced by the master and answer again within about 5 s, too short
for any alert), waits for ``MovierecTargetDown`` at the project's receiver, runs the
runbook's restart command, and waits for answers from the model path and for the
resolution. The rule keeps its production ``for: 1m``, so the page cannot come sooner
than a minute; this test bounds how much later it may come, checks the notification in
the receiver's durable record, checks the service answers from the model again (the
tests after this one need it), and reads the postmortem and its timeline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO

pytestmark = pytest.mark.e2e

FOR_S = 60.0  # MovierecTargetDown's for: no page can come sooner
BOUND_DETECT_S = 150.0  # + a scrape (5 s), an evaluation (5 s), Alertmanager's group_wait (10 s)
BOUND_RECOVER_S = 240.0  # + the restart (gunicorn, first model load) after the page
DRILL_TIMEOUT_S = 600


def test_serve_killed_drill_pages_recovers_and_writes_its_postmortem(
        demo_env: dict[str, str], report: dict) -> None:
    done = subprocess.run([sys.executable, "-m", "movierec", "drill", "serve-killed", "--json"],
                          cwd=REPO, env=demo_env, capture_output=True, text=True,
                          timeout=DRILL_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    print(f"detect {result['time_to_detect_s']} s, recover {result['time_to_recover_s']} s, "
          f"resolve {result['time_to_resolve_s']} s")
    assert result["passed"] and result["detected_by"] == "MovierecTargetDown"
    assert FOR_S <= result["time_to_detect_s"] <= BOUND_DETECT_S
    assert result["time_to_detect_s"] < result["time_to_recover_s"] <= BOUND_RECOVER_S
    assert result["time_to_recover_s"] < result["time_to_resolve_s"]

    # the page is in the receiver's durable record, for the service's instance
    serve = f"127.0.0.1:{demo_env['MOVIEREC_SERVE_PORT']}"
    kinds = {e["kind"]: e for e in result["timeline"]}
    injected = kinds["injected"]["at_s"]
    record = Path(demo_env["MOVIEREC_VAR_DIR"]) / "alerts" / "notifications.jsonl"
    pages = [json.loads(line) for line in record.read_text().splitlines()]
    pages = [p for p in pages if p["alertname"] == "MovierecTargetDown"
             and p["labels"].get("instance") == serve and p["received_s"] >= injected]
    assert [p["status"] for p in pages][:2] == ["firing", "resolved"], pages
    assert pages[0]["severity"] == "page"
    assert pages[0]["annotations"]["runbook_url"] == "docs/runbook.md#movierectargetdown"

    # recovered: users with history are answered from the model again
    paths = set()
    for user in range(1, 30):
        url = f"http://{serve}/recommend/{user}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            paths.add(answer.headers["X-Answer-Path"])
    assert "model" in paths, paths

    # the postmortem and its timeline, with the runbook's exact command
    assert set(kinds) >= {"started", "injected", "alert_fired", "alert_received",
                          "recovery_action", "recovered", "alert_resolved", "restored"}
    command = kinds["recovery_action"]["command"]
    assert command.startswith("nohup movierec serve --port ")
    postmortem = Path(result["postmortem"])
    assert postmortem.parent.parent == Path(demo_env["MOVIEREC_VAR_DIR"]) / "drills"
    text = postmortem.read_text()
    assert text.startswith("# Postmortem (drill): serve-killed")
    assert "## Timeline (UTC)" in text and command in text and "## What to improve" in text
    saved = json.loads(Path(result["timeline_file"]).read_text())
    assert saved["time_to_detect_s"] == result["time_to_detect_s"]

    # everything the demo started runs again
    status = subprocess.run([sys.executable, "-m", "movierec", "demo", "status"], cwd=REPO,
                            env=demo_env, capture_output=True, text=True, timeout=60)
    assert "serve      up" in status.stdout, status.stdout
