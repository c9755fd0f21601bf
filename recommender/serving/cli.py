"""``movierec serve`` (the API under gunicorn) and ``movierec experiment …`` (the A/B
experiment the running service reads; the same file the admin endpoint writes)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from movierec.settings import load

if TYPE_CHECKING:  # imported where used: the CLI starts without the serving stack
    from recommender.serving.experiments import ExperimentStore
    from recommender.serving.settings import ServeSettings

GUNICORN_CONF = Path(__file__).with_name("gunicorn_conf.py")
APP = "recommender.serving.wsgi:create_from_env()"


def _settings(**overrides: Any) -> ServeSettings:
    from recommender.serving.settings import ServeSettings

    return load(ServeSettings, **{k: v for k, v in overrides.items() if v is not None})


def serve_environment(base: dict[str, str], *, metrics_dir: Path,
                      overrides: dict[str, str]) -> dict[str, str]:
    """The environment gunicorn runs with: BLAS pinned to one thread, Prometheus
    multiprocess mode on, and the command-line overrides as MOVIEREC_* variables."""
    from recommender.serving.wsgi import BLAS_VARIABLES

    env = dict(base)
    env.update({name: "1" for name in BLAS_VARIABLES})
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    env.update(overrides)
    return env


@click.command("serve")
@click.option("--port", type=int, help="Port (default MOVIEREC_SERVE_PORT, 8082).")
@click.option("--host", help="Bind address (default MOVIEREC_SERVE_HOST, 0.0.0.0).")
@click.option("--workers", type=int, help="Worker processes (default MOVIEREC_SERVE_WORKERS).")
@click.option("--metrics-dir", type=click.Path(path_type=Path), default=Path("var/run/serve-metrics"),
              show_default=True, help="Prometheus multiprocess folder (emptied at start).")
def serve(port: int | None, host: str | None, workers: int | None, metrics_dir: Path) -> None:
    """Run the recommendation API (GET /recommend/<userid>) under gunicorn, in the
    foreground; Ctrl-C or SIGTERM stops it gracefully."""
    settings = _settings(serve_port=port, serve_host=host, serve_workers=workers)
    overrides = {"MOVIEREC_SERVE_PORT": str(settings.serve_port),
                 "MOVIEREC_SERVE_HOST": settings.serve_host,
                 "MOVIEREC_SERVE_WORKERS": str(settings.serve_workers)}
    env = serve_environment(dict(os.environ), metrics_dir=metrics_dir.resolve(), overrides=overrides)
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    click.echo(f"serving on http://{settings.serve_host}:{settings.serve_port} "
               f"({settings.serve_workers} workers, models from {settings.registry_dir})", err=True)
    os.execvpe(gunicorn, [gunicorn, "-c", str(GUNICORN_CONF), APP], env)


@click.group("experiment")
def experiment() -> None:
    """Show, start or stop the A/B experiment the service routes users by."""


def _store() -> ExperimentStore:
    from recommender.serving.experiments import ExperimentStore

    return ExperimentStore(_settings().serve_experiments_file)


@experiment.command("show")
def experiment_show() -> None:
    """Print the running experiment as JSON (null when none)."""
    generation, current = _store().read()
    click.echo(json.dumps({"generation": generation,
                           "experiment": current.to_dict() if current else None}, indent=2))


@experiment.command("set")
@click.argument("spec", type=click.File("r"))
@click.option("--reason", default="cli", show_default=True, help="Why (kept in the file).")
def experiment_set(spec: IO[str], reason: str) -> None:
    """Start or replace the experiment from a JSON file (``-`` for stdin), e.g.
    {"id": "ab1", "arms": [{"name": "als", "model": "champion", "share": 0.5},
    {"name": "pop", "model": "baseline", "share": 0.5}]}."""
    from recommender.serving.experiments import Experiment
    from recommender.serving.state import BadRequest

    try:
        document = json.load(spec)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise BadRequest(f"{spec.name} is not a JSON experiment: {exc}") from None
    parsed = Experiment.from_dict(document)
    generation = _store().write(parsed, reason=reason)
    click.echo(f"experiment {parsed.id} set (generation {generation}); "
               "running services follow within MOVIEREC_SERVE_POLL_S")


@experiment.command("clear")
@click.option("--reason", default="cli", show_default=True, help="Why (kept in the file).")
def experiment_clear(reason: str) -> None:
    """Stop the experiment: everyone gets the serve alias again."""
    generation = _store().write(None, reason=reason)
    click.echo(f"experiment cleared (generation {generation})")
