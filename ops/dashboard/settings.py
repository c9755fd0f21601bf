"""Settings of ``movierec dashboard``: where the page listens, how it refreshes, and where
it finds Prometheus, the alerts, the service and the stores.

The stack's ports (Prometheus, Alertmanager, the alert receiver) come from
``StackSettings``; the registry and the experiment file from their shared mixins. The
service's port and the loop's folder are declared again with the same variable, default
and meaning as in ``ServeSettings`` and ``LoopSettings`` (a unit test holds them equal):
inheriting those classes would drag in every training and serving setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from movierec.settings import SettingsError, setting
from ops.stack.settings import StackSettings
from recommender.settings import ExperimentsSettings, RegistrySettings

RANGES: dict[str, int] = {"15m": 900, "1h": 3_600, "6h": 21_600, "24h": 86_400, "7d": 604_800}
"""The time ranges the page offers, in seconds."""
REFRESHES: dict[str, int] = {"off": 0, "10s": 10, "30s": 30, "1m": 60}
"""The auto-refresh periods the page offers, in seconds (0: none)."""


@dataclass(frozen=True)
class DashboardSettings(StackSettings, RegistrySettings, ExperimentsSettings):
    """The dashboard's own settings plus what it reads."""

    dashboard_host: str = setting("127.0.0.1", "Address the team's dashboard binds")
    dashboard_port: int = setting(8090, "Port of the team's dashboard (movierec dashboard)",
                                  min=1, max=65535)
    dashboard_range: str = setting("1h", "Time range the dashboard shows when none is asked for",
                                   choices=tuple(RANGES))
    dashboard_refresh: str = setting("30s", "Auto-refresh period of the dashboard page (off: none)",
                                     choices=tuple(REFRESHES))
    dashboard_timeout_s: float = setting(
        5.0, "Longest the dashboard waits for one answer of Prometheus, a store or the service",
        min=0.1, max=120)
    serve_port: int = setting(8082, "Port of the recommendation API (the course calls :8082)",
                              min=1, max=65535)
    loop_dir: Path = setting(Path("var/loop"), "Folder of the loop's journal and lock")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dashboard_port in (self.prometheus_port, self.alertmanager_port,
                                   self.alert_receiver_port):
            raise SettingsError(f"MOVIEREC_DASHBOARD_PORT={self.dashboard_port}: taken by a "
                                f"part of the stack")

    @property
    def prometheus_url(self) -> str:
        return self.local_prometheus_url

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.alert_receiver_port}"

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    @property
    def journal_path(self) -> Path:
        return self.loop_dir / "journal.jsonl"
