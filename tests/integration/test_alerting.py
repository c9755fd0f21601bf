"""Alerts reach a person: a real fault on a real service, through the stack's real
Prometheus (the project's rules) and Alertmanager, to the project's receiver, which
records the notification durably; and a resolution after recovery.

The fault: Redis stops while users are served. The serving path's circuit breaker opens,
``MovierecRedisBreakerOpen`` (for: 1 min) fires, and must be recorded by the receiver
within BOUND_FIRE_S of the stop; once Redis is back, the resolution must arrive within
BOUND_RESOLVE_S. The service runs on the port the stack's Prometheus scrapes as job
``testjob``."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from load_tests.server import ServiceProcess, staged_env
from load_tests.stage import StageSpec, stage
from ops.stack.alerting import AlertReceiver
from ops.stack.redis_server import RedisServer
from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration

SPEC = StageSpec(users=1500, movies=800, days=5, seed=9)
ALERT = "MovierecRedisBreakerOpen"
BOUND_FIRE_S = 150.0  # the rule's 1 min, plus scrapes, evaluation and Alertmanager's grouping
BOUND_RESOLVE_S = 90.0  # the breaker's 20 s reset, plus the same


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait(receiver: AlertReceiver, status: str, since: float, bound_s: float) -> dict:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        for record in receiver.notifications():
            if (record["alertname"] == ALERT and record["status"] == status
                    and record["received_s"] >= since):
                return record
        time.sleep(1.0)
    raise AssertionError(f"no {status} {ALERT} within {bound_s:g} s: {receiver.notifications()[-5:]}")


def test_the_receiver_refuses_what_is_not_a_notification_and_counts_it(stack: LocalStack) -> None:
    receiver = AlertReceiver(stack.settings)
    before = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{receiver.port}/health", timeout=5).read())["rejected"]
    assert _post(receiver.url, b"not json") == 400
    assert _post(receiver.url, b'{"alerts": [{"no": "labels"}]}') == 400
    after = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{receiver.port}/health", timeout=5).read())["rejected"]
    assert after == before + 2


def test_redis_stopping_under_traffic_pages_and_its_recovery_resolves(stack: LocalStack,
                                                                      tmp_path) -> None:
    prefix = f"al{int(time.time() * 1000) % 10**8}"
    staged = stage(SPEC, redis_url=stack.redis_url, prefix=prefix, registry_dir=tmp_path / "registry")
    env = staged_env(redis_url=stack.redis_url, prefix=prefix, root=tmp_path,
                     kafka_bootstrap=stack.bootstrap, served_topic=f"served-{prefix}",
                     MOVIEREC_SERVE_BREAKER_RESET_S="20")
    service = ServiceProcess(port=stack.metrics_port, env=env, log=tmp_path / "serve.log",
                             workers=2).start()
    stop = threading.Event()

    def traffic() -> None:  # a user every 50 ms, as long as the test runs
        users = staged.known_users[:200]
        i = 0
        while not stop.is_set():
            with contextlib.suppress(OSError):  # answers, fallbacks, failures alike
                urllib.request.urlopen(f"{service.url}/recommend/{users[i % len(users)]}",
                                       timeout=1).read()
            i += 1
            stop.wait(0.05)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    redis_part = RedisServer(stack.settings)
    receiver = AlertReceiver(stack.settings)
    try:
        stopped = time.time()
        redis_part.down()
        fired = _wait(receiver, "firing", stopped, BOUND_FIRE_S)
        assert fired["severity"] == "page"
        assert fired["annotations"]["runbook_url"] == "docs/runbook.md#movierecredisbreakeropen"
        redis_part.up()
        recovered = time.time()
        resolved = _wait(receiver, "resolved", recovered, BOUND_RESOLVE_S)
        print(f"paged {fired['received_s'] - stopped:.0f} s after the stop, resolved "
              f"{resolved['received_s'] - recovered:.0f} s after the recovery")
    finally:
        redis_part.up()
        stop.set()
        thread.join(timeout=5)
        service.stop()
    # the record is durable: the same notifications are in the receiver's file
    lines = receiver.record.read_text(encoding="utf-8").splitlines()
    assert any(json.loads(line)["fingerprint"] == fired["fingerprint"] for line in lines)
