"""``movierec sim ...``: the simulated MLiP world from the command line."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from movierec.settings import load

if TYPE_CHECKING:  # imported where used, as the commands below do: a light start
    from simulator.settings import SimSettings
    from simulator.world import World

F = TypeVar("F", bound=Callable[..., Any])

WORLD_OPTIONS = [
    click.option("--users", type=int, help="Users in the world (MOVIEREC_SIM_USERS)."),
    click.option("--movies", type=int, help="Movies in the catalog (MOVIEREC_SIM_MOVIES)."),
    click.option("--seed", type=int, help="Seed of the world (MOVIEREC_SIM_SEED)."),
]


def world_options(fn: F) -> F:
    for option in reversed(WORLD_OPTIONS):
        fn = option(fn)
    return fn


def _sim_settings(users: int | None, movies: int | None, seed: int | None,
                  **extra: Any) -> SimSettings:
    from simulator.settings import SimSettings

    overrides = {k: v for k, v in
                 {"sim_users": users, "sim_movies": movies, "sim_seed": seed, **extra}.items()
                 if v is not None}
    return load(SimSettings, **overrides)


def _build_world(settings: SimSettings) -> World:
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
@click.option("--sink", type=click.Choice(["kafka", "file"]), default="kafka", show_default=True,
              help="Where the log lines go: the Kafka topic, or the --out file.")
@click.option("--out", type=click.Path(path_type=Path), help="File for --sink file.")
@click.option("--client", type=click.Choice(["confluent", "kafka-python"]),
              help="Kafka client (default MOVIEREC_SIM_BULK_CLIENT).")
@click.option("--topic", help="Topic (default MOVIEREC_KAFKA_TOPIC).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
@click.option("--inject", "inject_text", default="", metavar="ITEMS",
              help="Faults to inject, e.g. malformed=0.01,duplicate=0.02,reorder=0.02,"
                   "schema_change_at_h=20,shilling_accounts=200,shilling_at_h=12")
@click.option("--shift-at-h", type=float, help="Hour of a sudden popularity shift.")
@click.option("--drift-at-h", type=float, help="Hour at which tastes drift.")
@click.option("--truth", type=click.Path(path_type=Path), default=Path("var/sim/truth.jsonl"),
              show_default=True, help="Ground-truth file of what was injected (JSON lines).")
def sim_backfill(users: int | None, movies: int | None, seed: int | None, days: float,
                 sink: str, out: Path | None, client: str | None, topic: str | None,
                 progress: bool, inject_text: str, shift_at_h: float | None,
                 drift_at_h: float | None, truth: Path) -> None:
    """Write DAYS of organic history (no service needed) to Kafka or a file."""
    from simulator.backfill import backfill
    from simulator.history import HistoryGenerator
    from simulator.inject import InjectionPlan, Injector, shilling_lines
    from simulator.producer import open_sink

    settings = _sim_settings(users, movies, seed, sim_bulk_client=client, kafka_topic=topic)
    if sink == "file" and out is None:
        raise click.UsageError("--sink file needs --out PATH")
    try:
        plan = InjectionPlan.parse(inject_text, seed=settings.sim_seed,
                                   rating_scale=settings.rating_scale)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--inject") from None
    world = _build_world(settings)
    start = settings.start_time()
    generator = HistoryGenerator(
        world, start=start, days=days, seed=settings.sim_seed, rating_scale=settings.rating_scale,
        shift_at_s=None if shift_at_h is None else shift_at_h * 3600,
        drift_at_s=None if drift_at_h is None else drift_at_h * 3600,
    )
    changes = plan.active or shift_at_h is not None or drift_at_h is not None
    truth_file = None
    if changes:
        truth.parent.mkdir(parents=True, exist_ok=True)
        truth_file = truth.open("w", encoding="utf-8")
    injector = Injector(plan, truth_file, start) if plan.active else None
    extra: list = []
    if plan.shilling_accounts and truth_file is not None:
        first = world.n_users + 1_000_000
        target, extra = shilling_lines(world.catalog.ids, world.catalog.appeal, plan, start, first)
        truth_file.write(json.dumps({"kind": "shilling", "target": target, "first_user": first,
                                     "accounts": plan.shilling_accounts}) + "\n")
    sink_ = (open_sink("file", path=out) if sink == "file" else
             open_sink(settings.sim_bulk_client, bootstrap=settings.kafka_bootstrap,
                       topic=settings.kafka_topic))
    try:
        result = backfill(generator, sink_, progress=progress, injector=injector, extra=extra)
    finally:
        sink_.close()
        if truth_file is not None:
            for change in generator.changes:
                truth_file.write(json.dumps(change) + "\n")
            truth_file.close()
    where = str(out) if sink == "file" else f"{settings.kafka_topic} @ {settings.kafka_bootstrap}"
    click.echo(f"{result.lines:,} lines to {where} in {result.seconds:.1f}s "
               f"({result.lines_per_s:,.0f} lines/s): "
               + ", ".join(f"{k} {v:,}" for k, v in result.by_kind.items()))
    if changes:
        injected = ", ".join(f"{k} {v:,}" for k, v in result.injected.items()) or "none"
        click.echo(f"injected: {injected}; world changes: {len(generator.changes)}; truth: {truth}")


@sim.command("api")
@world_options
def sim_api(users: int | None, movies: int | None, seed: int | None) -> None:
    """Serve the user/movie API (MOVIEREC_SIM_API_*; default 127.0.0.1:8080)."""
    from simulator.api import ApiSettings, serve

    api_settings = load(ApiSettings)
    world = _build_world(_sim_settings(users, movies, seed))
    click.echo(f"user/movie API on http://{api_settings.sim_api_host}:{api_settings.sim_api_port}",
               err=True)
    serve(world, api_settings)


@sim.command("grade")
@click.option("--from-kafka", "from_kafka", is_flag=True,
              help="Grade the recommendation lines of MOVIEREC_KAFKA_TOPIC.")
@click.option("--probe", "probe_url", metavar="URL",
              help="Probe a live service instead, e.g. http://127.0.0.1:8082.")
@click.option("-n", "--requests", "n_requests", type=int, default=1000, show_default=True,
              help="Requests for --probe.")
@click.option("--user-ids", default="0-999", show_default=True,
              help="Users for --probe: a range a-b, or ids separated by commas.")
@click.option("--deadline-ms", type=int, default=600, show_default=True,
              help="An answer later than this counts as failed, as the course's client does.")
@click.option("--server", help="Only lines of this host:port (--from-kafka).")
@click.option("--start", type=click.DateTime(), help="Window start (event time).")
@click.option("--end", type=click.DateTime(), help="Window end (event time).")
@click.option("--down-threshold", type=float, default=0.5, show_default=True,
              help="A minute is down below this success share.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--out", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JSON to this file.")
@click.option("--topic", help="Topic (default MOVIEREC_KAFKA_TOPIC).")
def sim_grade(from_kafka: bool, probe_url: str | None, n_requests: int, user_ids: str,
              deadline_ms: int, server: str | None, start: datetime | None, end: datetime | None,
              down_threshold: float,
              as_json: bool, json_out: Path | None, topic: str | None) -> None:
    """Report what the course grades: successes, deadline, malformed answers,
    personalized share, availability and downtime, latency percentiles."""
    from simulator.grade_probe import grade_topic, probe_service

    if from_kafka == bool(probe_url):
        raise click.UsageError("choose one of --from-kafka and --probe URL")
    settings = _sim_settings(None, None, None, kafka_topic=topic)
    if from_kafka:
        report = grade_topic(settings.kafka_bootstrap, settings.kafka_topic, start=start,
                             end=end, deadline_ms=deadline_ms, server=server,
                             down_threshold=down_threshold)
    else:
        assert probe_url is not None  # the usage check above: one of the two
        report = probe_service(probe_url, n_requests, user_ids=_user_ids(user_ids),
                               deadline_ms=deadline_ms, down_threshold=down_threshold)
    as_text = json.dumps(report.to_dict(), indent=2)
    click.echo(as_text if as_json else report.format_table())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(as_text + "\n")


def _user_ids(text: str) -> list[int]:
    first, dash, last = text.partition("-")
    try:
        if dash and "," not in text:
            return list(range(int(first), int(last) + 1))
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a range a-b or ids a,b,c",
                                 param_hint="--user-ids") from None


@sim.command("live")
@world_options
@click.option("--url", default="http://127.0.0.1:8082", show_default=True,
              help="Base URL of the recommendation service under test.")
@click.option("--rate", type=float, default=50.0, show_default=True, help="Requests per second.")
@click.option("--duration", type=float, default=60.0, show_default=True, help="Real seconds to run.")
@click.option("--clock-ratio", type=float, default=60.0, show_default=True,
              help="Simulated seconds per real second.")
@click.option("--deadline-ms", type=int, default=600, show_default=True,
              help="An answer later than this counts as failed, as the course's client does.")
@click.option("--new-user-share", type=float, default=0.05, show_default=True,
              help="Share of arrivals that are new sign-ups.")
@click.option("--start-day", type=float, default=1.0, show_default=True,
              help="World day the run starts at: users who joined before exist (run it "
                   "after a backfill of that many days); later joiners sign up during the run.")
@click.option("--scraper-rate", type=float, default=0.0, help="Requests/s of a crawling client.")
@click.option("--sink", type=click.Choice(["kafka", "file"]), default="kafka", show_default=True,
              help="Where the log lines go: the Kafka topic, or the --out file.")
@click.option("--out", type=click.Path(path_type=Path), help="File for --sink file.")
@click.option("--topic", help="Topic (default MOVIEREC_KAFKA_TOPIC).")
@click.option("--truth", type=click.Path(path_type=Path), default=Path("var/sim/live-truth.jsonl"),
              show_default=True, help="Ground-truth file of the run (what each user truly "
                                      "valued; JSON lines), for evaluation only.")
def sim_live(users: int | None, movies: int | None, seed: int | None, url: str, rate: float,
             duration: float, clock_ratio: float, deadline_ms: int, new_user_share: float,
             start_day: float, scraper_rate: float, sink: str, out: Path | None,
             topic: str | None, truth: Path) -> None:
    """Simulated users call GET /recommend/<uid>, react, and write the log."""
    import asyncio
    from datetime import timedelta

    from simulator.live import LiveConfig, LiveRun
    from simulator.producer import open_sink

    if sink == "file" and out is None:
        raise click.UsageError("--sink file needs --out PATH")
    if not 0 < rate <= 5000:
        raise click.BadParameter("must be in (0, 5000]", param_hint="--rate")
    settings = _sim_settings(users, movies, seed, kafka_topic=topic)
    world = _build_world(settings)
    config = LiveConfig(service_url=url, rate_per_s=rate, duration_s=duration,
                        clock_ratio=clock_ratio, deadline_ms=deadline_ms,
                        new_user_share=new_user_share, start_day=start_day,
                        scraper_rate_per_s=scraper_rate, seed=settings.sim_seed,
                        rating_scale=settings.rating_scale)
    begin = settings.start_time() + timedelta(days=start_day)
    # Live sessions write ~70 lines a request: the bulk client keeps up at high rates.
    target = (open_sink("file", path=out) if sink == "file" else
              open_sink(settings.sim_bulk_client, bootstrap=settings.kafka_bootstrap,
                        topic=settings.kafka_topic))
    truth.parent.mkdir(parents=True, exist_ok=True)
    with truth.open("w", encoding="utf-8") as truth_file:
        try:
            stats = asyncio.run(LiveRun(world, config, target, start=begin, truth=truth_file).run())
        finally:
            target.close()
    click.echo(json.dumps(stats.to_dict(), indent=2))
