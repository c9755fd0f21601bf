"""Prometheus, started by the stack, scrapes a project process and loads the rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from importlib import resources

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.integration.conftest import LocalStack


def _api(stack: LocalStack, path: str, **params: str) -> dict:
    url = f"{stack.prometheus_url}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def test_prometheus_scrapes_a_project_process(stack: LocalStack) -> None:
    registry = CollectorRegistry()
    demo = Counter("movierec_it_demo_events_total", "Events seen by the test", registry=registry)
    demo.inc(42)
    server, thread = start_http_server(stack.metrics_port, addr="127.0.0.1", registry=registry)
    try:
        deadline = time.monotonic() + 30
        value = None
        while time.monotonic() < deadline:
            result = _api(stack, "query", query="movierec_it_demo_events_total")["data"]["result"]
            if result:
                value = float(result[0]["value"][1])
                labels = result[0]["metric"]
                break
            time.sleep(0.5)
        assert value == 42.0
        assert labels["job"] == "testjob"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_alert_rules_are_loaded(stack: LocalStack) -> None:
    groups = _api(stack, "rules")["data"]["groups"]
    names = {rule["name"] for group in groups for rule in group["rules"]}
    assert "MovierecTargetDown" in names


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_config_and_rules_pass_promtool(stack: LocalStack) -> None:
    config = stack.settings.var_dir / "prometheus" / "prometheus.yml"
    done = subprocess.run(["promtool", "check", "config", str(config)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = resources.files("ops") / "prometheus" / "rules"
    for rule_file in sorted(str(p) for p in rules.iterdir() if p.name.endswith(".yml")):
        done = subprocess.run(["promtool", "check", "rules", rule_file],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
