"""The loop's decay trigger reads the champion's take rate from the real Prometheus: the
live online metrics' counters, scraped, compared window against window."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from movierec.settings import load
from recommender.loop.adapters import take_windows
from recommender.loop.settings import LoopSettings
from recommender.loop.triggers import Signals, TriggerSettings, check
from tests.integration.conftest import LocalStack

pytestmark = pytest.mark.integration

VERSION = "hybrid-20261207T000000-abc123"


def test_a_falling_take_rate_of_the_champion_fires_the_decay_trigger(
        stack: LocalStack, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    labels = ["arm", "version"]
    taken = Counter("movierec_online_lists_taken", "taken", labels, registry=registry)
    eligible = Counter("movierec_online_lists_eligible", "eligible", labels, registry=registry)
    other = ("default", "als-older")  # another version's lists must not count
    server, thread = start_http_server(stack.metrics_port, addr="127.0.0.1", registry=registry)
    try:
        for second in range(24):  # 12 s at a take rate of 0.5, then 12 s at 0.1
            eligible.labels("default", VERSION).inc(20)
            taken.labels("default", VERSION).inc(10 if second < 12 else 2)
            eligible.labels(*other).inc(50)
            taken.labels(*other).inc(50)
            time.sleep(1)
        settings = load(LoopSettings, loop_prometheus_url=stack.prometheus_url,
                        store_dir=tmp_path, loop_decay_window="10s")
        recent, base = take_windows(settings, VERSION, "10s")
        assert 150 <= recent[1] <= 260 and 150 <= base[1] <= 260, (recent, base)
        assert recent[0] / recent[1] < 0.2 < 0.35 < base[0] / base[1], (recent, base)
        fired = check(Signals(log_time=None, recent=recent, baseline=base), TriggerSettings())
        assert fired is None, "no log time: nothing to compare a schedule with"
        now = datetime.now(UTC)
        fired = check(Signals(log_time=now, last_cycle_log_time=now - timedelta(hours=7),
                              recent=recent, baseline=base), TriggerSettings(min_lists=100))
        assert fired is not None and fired.kind == "decay", (recent, base)
        assert take_windows(settings, None, "10s") == ((0, 0), (0, 0))
        unknown = take_windows(settings, "no-such-version", "10s")
        assert unknown == ((0, 0), (0, 0))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
