"""Prometheus, from Debian's package, scraping the project's own processes."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from ops.stack.part import Part
from ops.stack.procs import StackError, http_probe


def prometheus_config(targets: dict[str, list[str]], *, scrape_s: int, self_port: int,
                      rule_glob: str, alertmanager_port: int | None = None) -> str:
    """prometheus.yml for the stack: Prometheus itself plus one job per project process,
    the project's rules, and alerts sent to the stack's Alertmanager."""
    lines = [
        "global:",
        f"  scrape_interval: {scrape_s}s",
        f"  evaluation_interval: {scrape_s}s",
        "rule_files:",
        f"  - '{rule_glob}'",
    ]
    if alertmanager_port is not None:
        lines += [
            "alerting:",
            "  alertmanagers:",
            "    - static_configs:",
            f"        - targets: ['127.0.0.1:{alertmanager_port}']",
        ]
    lines += [
        "scrape_configs:",
        "  - job_name: prometheus",
        "    static_configs:",
        f"      - targets: ['127.0.0.1:{self_port}']",
    ]
    for job, hosts in sorted(targets.items()):
        lines += [
            f"  - job_name: {job}",
            "    static_configs:",
            "      - targets: [" + ", ".join(f"'{h}'" for h in hosts) + "]",
        ]
    return "\n".join(lines) + "\n"


class PrometheusServer(Part):
    name = "prometheus"

    @property
    def port(self) -> int:
        return self.settings.prometheus_port

    @property
    def config_file(self) -> Path:
        return self.var / "prometheus" / "prometheus.yml"

    def check_installed(self) -> None:
        if shutil.which(self.settings.prometheus_bin) is None:
            raise StackError(
                f"prometheus: {self.settings.prometheus_bin!r} not found; install it with "
                "`apt-get install prometheus` (make setup does this when run as root) "
                "or point MOVIEREC_PROMETHEUS_BIN at it"
            )

    def prepare(self) -> None:
        home = self.var / "prometheus"
        (home / "data").mkdir(parents=True, exist_ok=True)
        rules = resources.files("ops") / "prometheus" / "rules"
        self.config_file.write_text(prometheus_config(
            self.settings.targets(), scrape_s=self.settings.prometheus_scrape_s,
            self_port=self.port, rule_glob=f"{rules}/*.yml",
            alertmanager_port=self.settings.alertmanager_port,
        ))

    def argv(self) -> list[str]:
        return [
            self.settings.prometheus_bin,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.var / 'prometheus' / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=15d",
        ]

    def probe(self) -> str | None:
        return http_probe(self.port, "/-/ready")
