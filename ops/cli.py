"""The ``movierec`` command: thin subcommands over the project's packages (the roof of
the dependency rule: it may import every package, and none imports it).

Each subcommand loads its process's settings and calls into a package; the root group
turns any of the project's errors into a one-line message and exit status 1.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

import click

import movierec
from movierec import logs
from movierec.errors import friendly
from movierec.logs import LEVELS, LogSettings
from movierec.settings import WireSettings, describe, load

if TYPE_CHECKING:  # imported where used: each command loads only what it needs
    from ops.stack.part import PartStatus
    from ops.stack.settings import StackSettings


class FriendlyGroup(click.Group):
    """The root group: any error ``movierec.errors.friendly`` can name becomes ``Error:
    <message>`` and exit status 1, for every subcommand; anything else (a bug) keeps its
    traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = friendly(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(movierec.__version__, "--version", prog_name="movierec",
                      message="%(prog)s %(version)s", help="Print the version and exit.")
@click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False), default="INFO",
              envvar="MOVIEREC_LOG_LEVEL", show_default=True, show_envvar=True,
              help="Logging threshold of this command and of every process it starts "
                   "(gunicorn's workers, the demo's stages, consumer members).")
def main(log_level: str) -> None:
    """movierec: a movie recommendation service for the MLiP scenario, and its world."""
    logs.configure(log_level)


# -- infra -------------------------------------------------------------------------------


@main.group()
def infra() -> None:
    """Start, stop and inspect the local stack (Kafka, Redis, Prometheus)."""


PARTS = click.argument("parts", nargs=-1, type=click.Choice(["kafka", "redis", "prometheus"]))


def _stack_settings() -> StackSettings:
    from ops.stack.settings import StackSettings

    return load(StackSettings)


def _print_status(rows: Iterable[PartStatus]) -> None:
    for row in rows:
        pid = str(row.pid) if row.pid else "-"
        mark = click.style(f"{row.state:9s}", fg="green" if row.healthy else "red")
        click.echo(f"{row.name:11s} {mark} 127.0.0.1:{row.port:<6d} pid {pid:>7s}  {row.detail}")
        if not row.healthy:
            click.echo(f"{'':11s} log: {row.log}")


@infra.command("up")
@PARTS
def infra_up(parts: tuple[str, ...]) -> None:
    """Start the stack (or the PARTS named) and wait until each part answers."""
    from ops import stack

    rows = stack.up(_stack_settings(), parts or stack.PART_NAMES)
    _print_status(rows)


@infra.command("down")
@PARTS
def infra_down(parts: tuple[str, ...]) -> None:
    """Stop what movierec started (never a process it did not start)."""
    from ops import stack

    stopped = stack.down(_stack_settings(), parts or stack.PART_NAMES)
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@infra.command("status")
@PARTS
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def infra_status(parts: tuple[str, ...], as_json: bool) -> None:
    """Show each part's state; exit status 1 unless all are healthy."""
    from ops import stack

    rows = stack.status(_stack_settings(), parts or stack.PART_NAMES)
    if as_json:
        click.echo(json.dumps([{**row.__dict__, "log": str(row.log)} for row in rows], indent=2))
    else:
        _print_status(rows)
    if not all(row.healthy for row in rows):
        sys.exit(1)


@infra.command("topic")
@click.argument("name", required=False)
@click.option("--partitions", type=click.IntRange(min=1), default=4, show_default=True,
              help="Partitions of a topic it creates (an existing one is grown, never shrunk).")
@click.option("--wait-s", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="How long to wait for the broker to answer before giving up.")
def infra_topic(name: str | None, partitions: int, wait_s: float) -> None:
    """Create topic NAME (default MOVIEREC_KAFKA_TOPIC) at MOVIEREC_KAFKA_BOOTSTRAP once
    the broker answers: the compose stack's one-shot, since its broker creates none."""
    import time

    from movierec.kafka_admin import broker_probe, ensure_topic
    from movierec.settings import KafkaSettings

    settings = load(KafkaSettings)
    topic = name or settings.kafka_topic
    deadline = time.monotonic() + wait_s
    while (why := broker_probe(settings.kafka_bootstrap)) is not None:
        if time.monotonic() > deadline:
            raise click.ClickException(f"no broker after {wait_s:g} s: {why}")
        time.sleep(1.0)
    count = ensure_topic(settings.kafka_bootstrap, topic, partitions)
    click.echo(f"topic {topic} at {settings.kafka_bootstrap}: {count} partitions")


@infra.command("fetch")
def infra_fetch() -> None:
    """Fetch the Kafka broker's jars from Maven Central (done by `infra up` when missing)."""
    from ops.stack.kafka_broker import KafkaBroker

    broker = KafkaBroker(_stack_settings())
    broker.fetch()
    click.echo(f"kafka jars in {broker.lib_dir}")


# -- config ------------------------------------------------------------------------------


def settings_classes() -> list[type]:
    """Every process's settings class, in the order `movierec config` lists them."""
    from audit.settings import AuditSettings
    from online_eval.settings import OnlineSettings
    from ops.dashboard.settings import DashboardSettings
    from ops.demo.settings import DemoSettings
    from ops.stack.settings import StackSettings
    from recommender.loop.settings import LoopSettings
    from recommender.serving.settings import ServeSettings
    from recommender.training.settings import TrainSettings
    from simulator.api import ApiSettings
    from simulator.settings import SimSettings
    from stream_consumer.settings import ConsumerSettings

    return [LogSettings, StackSettings, WireSettings, SimSettings, ApiSettings, ConsumerSettings,
            TrainSettings, ServeSettings, OnlineSettings, LoopSettings, AuditSettings, DemoSettings,
            DashboardSettings]


def all_settings() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every MOVIEREC_* variable, each once."""
    seen: set[str] = set()
    rows = []
    for cls in settings_classes():
        for name, default, text in describe(cls):
            if name not in seen:
                seen.add(name)
                rows.append((name, default, text))
    return rows


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config(as_json: bool) -> None:
    """List every MOVIEREC_* variable with its default and meaning."""
    rows = all_settings()
    if as_json:
        click.echo(json.dumps([{"variable": n, "default": d, "meaning": m} for n, d, m in rows],
                              indent=2))
        return
    for name, default, text in rows:
        click.echo(f"{name:34s} {default:28s} {text}")


# -- wire --------------------------------------------------------------------------------


@main.group()
def wire() -> None:
    """Work with MLiP event-log lines."""


@wire.command("check")
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--show", default=5, show_default=True, help="Print this many rejected lines.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def wire_check(source: IO[bytes], show: int, as_json: bool) -> None:
    """Parse a file of log lines (or stdin) and count events by kind and rejections by reason."""
    from movierec.wire import LineParser, Rejection

    settings = load(WireSettings)
    parser = LineParser(settings.rating_scale)
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for number, raw in enumerate(source, 1):
        got = parser.parse(raw)
        kinds[got.kind] += 1
        if isinstance(got, Rejection):
            reasons[got.reason.value] += 1
            if show > 0:
                show -= 1
                click.echo(f"line {number}: {got.reason.value}: {got.detail}", err=True)
    if as_json:
        click.echo(json.dumps({"kinds": dict(sorted(kinds.items())),
                               "rejections": dict(sorted(reasons.items()))}, indent=2))
        return
    for kind, count in sorted(kinds.items()):
        click.echo(f"{kind:22s} {count:>10,}")
    for reason, count in sorted(reasons.items()):
        click.echo(f"  {reason:20s} {count:>10,}")


@main.group("eval")
def eval_group() -> None:
    """Evaluate models: offline on a temporal split, online from the served log."""


def _register_components() -> None:
    from audit.cli import audit
    from load_tests.loadtest import loadtest
    from online_eval.cli import live, online
    from ops.dashboard.cli import dashboard
    from ops.demo.cli import demo
    from ops.drills.cli import drill
    from recommender.loop.cli import loop
    from recommender.serving.cli import experiment, serve
    from recommender.training.cli import models, offline, train, tune
    from simulator.cli import sim
    from stream_consumer.cli import consume, drift

    main.add_command(sim)
    main.add_command(consume)
    main.add_command(drift)
    main.add_command(train)
    main.add_command(tune)
    main.add_command(loop)
    main.add_command(models)
    eval_group.add_command(offline)
    eval_group.add_command(online)
    eval_group.add_command(live)
    main.add_command(serve)
    main.add_command(experiment)
    main.add_command(demo)
    main.add_command(loadtest)
    main.add_command(dashboard)
    main.add_command(drill)
    main.add_command(audit)


_register_components()
