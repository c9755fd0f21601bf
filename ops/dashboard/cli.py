"""``movierec dashboard``: the team's dashboard page under gunicorn (one worker, a few
threads: an internal page with a handful of readers), or ``--grafana PATH`` to write the
Grafana dashboard built from the same panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from movierec.settings import load


@click.command("dashboard")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default MOVIEREC_DASHBOARD_PORT).")
@click.option("--host", help="Address to bind (default MOVIEREC_DASHBOARD_HOST).")
@click.option("--grafana", "grafana_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the Grafana dashboard JSON built from the same panels to this file "
                   "and exit (ops/grafana/dashboards/movierec.json).")
def dashboard(port: int | None, host: str | None, grafana_path: Path | None) -> None:
    """Serve the team's dashboard: service, data, model and alerts over a time range, with
    a provenance lookup; it reads Prometheus and the project's stores."""
    from ops.dashboard.settings import DashboardSettings

    if grafana_path is not None:
        from ops.dashboard.grafana import write

        write(grafana_path)
        click.echo(f"wrote {grafana_path}")
        return
    overrides: dict[str, Any] = {}
    if port is not None:
        overrides["dashboard_port"] = port
    if host is not None:
        overrides["dashboard_host"] = host
    settings = load(DashboardSettings, **overrides)
    click.echo(f"dashboard on http://{settings.dashboard_host}:{settings.dashboard_port}/ "
               f"(Prometheus {settings.prometheus_url})")
    run(settings)


def run(settings: Any) -> None:
    """Run the app under gunicorn's arbiter in this process until SIGTERM or SIGINT."""
    from gunicorn.app.base import BaseApplication

    from ops.dashboard.app import create_app

    class _App(BaseApplication):  # gunicorn has no type information: Any
        def load_config(self) -> None:
            for key, value in {"bind": f"{settings.dashboard_host}:{settings.dashboard_port}",
                               "workers": 1, "worker_class": "gthread", "threads": 4,
                               "timeout": 60, "accesslog": None,
                               "control_socket_disable": True}.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(settings)

    _App().run()
