"""Alertmanager (Debian's prometheus-alertmanager) and the project's webhook receiver,
the stack's parts "alertmanager" and "receiver": Prometheus sends firing alerts to
Alertmanager, which groups them and notifies the receiver, which records every
notification durably (ops/alerting/receiver.py) and may forward it to a chat or email
webhook (MOVIEREC_ALERT_FORWARD_URL)."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ops.stack.part import Part
from ops.stack.procs import StackError, http_probe


def alertmanager_config(receiver_url: str, *, group_wait_s: int) -> str:
    """alertmanager.yml: every alert to the project's receiver, resolutions included.
    ``group_wait_s``: how long the first notification of a new group waits for others."""
    return "\n".join([
        "route:",
        "  receiver: project",
        "  group_by: ['alertname', 'job']",
        f"  group_wait: {group_wait_s}s",
        f"  group_interval: {max(group_wait_s, 1) * 3}s",
        "  repeat_interval: 4h",
        "receivers:",
        "  - name: project",
        "    webhook_configs:",
        f"      - url: '{receiver_url}'",
        "        send_resolved: true",
        "",
    ])


class AlertReceiver(Part):
    name = "receiver"

    @property
    def port(self) -> int:
        return self.settings.alert_receiver_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    @property
    def record(self) -> Path:
        return self.var / "alerts" / "notifications.jsonl"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "ops.alerting.receiver", "--port", str(self.port),
                "--file", str(self.record), "--forward-url", self.settings.alert_forward_url]

    def probe(self) -> str | None:
        return http_probe(self.port, "/health")

    def notifications(self, limit: int = 1000) -> list[dict]:
        """The recorded alerts, newest last (``GET /alerts``)."""
        with urllib.request.urlopen(f"{self.url}?limit={limit}", timeout=5.0) as resp:
            return json.loads(resp.read())


class AlertmanagerServer(Part):
    name = "alertmanager"

    @property
    def port(self) -> int:
        return self.settings.alertmanager_port

    def check_installed(self) -> None:
        if shutil.which(self.settings.alertmanager_bin) is None:
            raise StackError(
                f"alertmanager: {self.settings.alertmanager_bin!r} not found; install it with "
                "`apt-get install prometheus-alertmanager` (make setup does this when run as "
                "root) or point MOVIEREC_ALERTMANAGER_BIN at it"
            )

    def prepare(self) -> None:
        home = self.var / "alertmanager"
        (home / "data").mkdir(parents=True, exist_ok=True)
        (home / "alertmanager.yml").write_text(alertmanager_config(
            AlertReceiver(self.settings).url, group_wait_s=self.settings.alert_group_wait_s))

    def argv(self) -> list[str]:
        home = self.var / "alertmanager"
        return [self.settings.alertmanager_bin, f"--config.file={home / 'alertmanager.yml'}",
                f"--storage.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address="]  # one instance: no gossip port

    def probe(self) -> str | None:
        return http_probe(self.port, "/-/ready")
