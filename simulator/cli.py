"""``movierec sim ...``: the simulated MLiP world from the command line."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import click

from movierec.settings import load

WORLD_OPTIONS = [
    click.option("--users", type=int, help="Users in the world (MOVIEREC_SIM_USERS)."),
    click.option("--movies", type=int, help="Movies in the catalog (MOVIEREC_SIM_MOVIES)."),
    click.option("--seed", type=int, help="Seed of the world (MOVIEREC_SIM_SEED)."),
]


def world_options(fn):
    for option in reversed(WORLD_OPTIONS):
        fn = option(fn)
    return fn


def _sim_settings(users: int | None, movies: int | None, seed: int | None, **extra: Any):
    from simulator.settings import SimSettings

    overrides = {k: v for k, v in
                 {"sim_users": users, "sim_movies": movies, "sim_seed": seed, **extra}.items()
                 if v is not None}
    return load(SimSettings, **overrides)


def _build_world(settings):
    from simulator.world import World

    started = time.perf_counter()
    world = World.build(settings.world_spec())
    click.echo(f"world: {world.n_users:,} users, {world.n_movies:,} movies "
               f"(seed {settings.sim_seed}) built in {time.perf_counter() - started:.1f}s", err=True)
    return world


@click.group()
def sim() -> None:
    """The simulated MLiP world: history, users, the user/movie API, the grader."""


@sim.command("world")
@world_options
def sim_world(users: int | None, movies: int | None, seed: int | None) -> None:
    """Build the world and report its size, build time and memory."""
    settings = _sim_settings(users, movies, seed)
    started = time.perf_counter()
    world = _build_world(settings)
    summary = {
        "users": world.n_users, "movies": world.n_movies, "seed": settings.sim_seed,
        "build_seconds": round(time.perf_counter() - started, 2),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "new_users": int((world.population.joined >= 0).sum()),
        "described_users": int(world.population.describes.sum()),
        "example_movie_ids": world.catalog.ids[:3],
    }
    click.echo(json.dumps(summary, indent=2))


@sim.command("backfill")
@world_options
@click.option("--days", type=float, default=1.0, show_default=True, help="Simulated days of history.")
@click.option("--sink", type=click.Choice(["kafka", "file"]), default="kafka", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="File for --sink file.")
@click.option("--client", type=click.Choice(["confluent", "kafka-python"]),
              help="Kafka client (default MOVIEREC_SIM_BULK_CLIENT).")
@click.option("--topic", help="Topic (default MOVIEREC_KAFKA_TOPIC).")
@click.option("--progress/--no-progress", default=True)
def sim_backfill(users, movies, seed, days: float, sink: str, out: Path | None,
                 client: str | None, topic: str | None, progress: bool) -> None:
    """Write DAYS of organic history (no service needed) to Kafka or a file."""
    from simulator.backfill import backfill
    from simulator.history import HistoryGenerator
    from simulator.producer import open_sink

    settings = _sim_settings(users, movies, seed, sim_bulk_client=client, kafka_topic=topic)
    if sink == "file" and out is None:
        raise click.UsageError("--sink file needs --out PATH")
    world = _build_world(settings)
    generator = HistoryGenerator(world, start=settings.start_time(), days=days,
                                 seed=settings.sim_seed, rating_scale=settings.rating_scale)
    target = (open_sink("file", path=out) if sink == "file" else
              open_sink(settings.sim_bulk_client, bootstrap=settings.kafka_bootstrap,
                        topic=settings.kafka_topic))
    try:
        result = backfill(generator, target, progress=progress)
    finally:
        target.close()
    where = str(out) if sink == "file" else f"{settings.kafka_topic} @ {settings.kafka_bootstrap}"
    click.echo(f"{result.lines:,} lines to {where} in {result.seconds:.1f}s "
               f"({result.lines_per_s:,.0f} lines/s): "
               + ", ".join(f"{k} {v:,}" for k, v in result.by_kind.items()))


@sim.command("api")
@world_options
def sim_api(users, movies, seed) -> None:
    """Serve the user/movie API (MOVIEREC_SIM_API_*; default 127.0.0.1:8080)."""
    from simulator.api import ApiSettings, serve

    api_settings = load(ApiSettings)
    world = _build_world(_sim_settings(users, movies, seed))
    click.echo(f"user/movie API on http://{api_settings.sim_api_host}:{api_settings.sim_api_port}",
               err=True)
    serve(world, api_settings)
