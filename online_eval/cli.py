"""``movierec eval online``: the A/B experiment's online outcomes from the Kafka topics.

``evaluate_online`` is the whole evaluation as one call (the demo runs it in-process):
probe the broker, fold the served-records topic into each user's arm, join the event
log's recommendation, watch and rate lines per arm, and build the report. The click
command ``online`` (registered under ``movierec eval`` by ``ops.cli``) only parses
options, prints the table and writes the files asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import click

from online_eval.join import (
    DEFAULT_FOLLOW_UP,
    DEFAULT_WINDOW,
    MAX_PENDING,
    OnlineEvalError,
    OutcomeJoin,
)
from online_eval.report import OnlineReport
from online_eval.settings import OnlineSettings


class _ReadOptions(TypedDict):
    """How both topics are read (``source.read_topic`` and ``source.read_log``)."""

    timeout_s: float
    idle_s: float
    written_since_ms: int | None


def evaluate_online(settings: OnlineSettings, *, server: str | None = None,
                    window: timedelta = DEFAULT_WINDOW, follow_up: timedelta = DEFAULT_FOLLOW_UP,
                    reference: str | None = None, since: datetime | None = None,
                    until: datetime | None = None,
                    written_since_ms: int | None = None) -> OnlineReport:
    """Evaluate the experiment on the topics as they stand now.

    ``server`` (``host:port`` as in the log) keeps only that service's recommendation
    lines; ``since``/``until`` (naive event times, until exclusive) select recommendations;
    ``window``/``follow_up`` and ``reference`` as in ``online_eval.join`` and
    ``online_eval.report``. ``OnlineEvalError`` when the broker cannot be reached, a topic
    is missing or empty, or the options are inconsistent. ``written_since_ms`` (epoch ms
    of Kafka's record timestamps) reads only what both topics got since then: one live
    run of a long log without reading the history before it.
    """
    from movierec.kafka_admin import broker_probe  # kafka-python: slow to import
    from online_eval.source import ServedTally, read_log, read_topic

    bootstrap = settings.kafka_bootstrap
    read: _ReadOptions = {"timeout_s": settings.online_read_timeout_s,
                          "idle_s": settings.online_idle_s, "written_since_ms": written_since_ms}
    tally = ServedTally()
    # the join reads tally.arm_of, filled from the served topic before the log is read
    join = OutcomeJoin(tally.arm_of, window=window, follow_up=follow_up, since=since,
                       until=until, server=server)
    if problem := broker_probe(bootstrap):
        raise OnlineEvalError(f"cannot reach Kafka: {problem}")
    _, served_notes = read_topic(bootstrap, settings.served_topic,
                                 lambda value, _written_ms: tally.add_raw(value), **read)
    if tally.records == 0:
        raise OnlineEvalError(f"served-records topic {settings.served_topic!r} at {bootstrap} "
                              f"has no served records: has the service answered with "
                              f"telemetry on?")
    log = read_log(bootstrap, settings.kafka_topic, join, rating_scale=settings.rating_scale,
                   **read)
    if log.lines == 0:
        raise OnlineEvalError(f"event-log topic {settings.kafka_topic!r} at {bootstrap} is empty")
    outcomes = join.finish()
    notes = [f"read {tally.records:,} served records from {settings.served_topic} and "
             f"{log.lines:,} log lines from {settings.kafka_topic} at {bootstrap}",
             *served_notes, *log.notes]
    facts = [(tally.bad_records, "served-topic values that are not served records"),
             (len(tally.switched), "users served in more than one arm (counted in their "
                                   "latest arm)"),
             (log.rejected, "log lines rejected by the parser"),
             (log.implausible, "log events dropped: stamped later than their line was written"),
             (join.filtered, "recommendation lines outside the time or server filter"),
             (join.overflow, f"lists closed early: the user got {MAX_PENDING} newer lists "
                             f"within the window")]
    notes += [f"{count:,} {what}" for count, what in facts if count]
    return OnlineReport.build(outcomes, tally.summary(), window=window, follow_up=follow_up,
                              reference=reference, server=server, since=since, until=until,
                              notes=notes)


@click.command("online")
@click.option("--server", metavar="HOST:PORT",
              help="Only recommendation lines of this service, as the log writes it.")
@click.option("--window-min", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Minutes (event time) within which a listed movie "
                                      "must be started for the list to count as taken.")
@click.option("--follow-up-min", type=click.FloatRange(min=0, min_open=True), default=240.0,
              show_default=True, help="Minutes after the list during which the minutes "
                                      "watched and the ratings of taken movies count.")
@click.option("--reference", metavar="ARM",
              help="Arm the others are compared with (default: the popularity-baseline arm).")
@click.option("--since", type=click.DateTime(), help="First recommendation time (event time).")
@click.option("--until", type=click.DateTime(), help="End of recommendation times, exclusive.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--out", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JSON to this file.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as markdown here.")
def online(server: str | None, window_min: float, follow_up_min: float, reference: str | None,
           since: datetime | None, until: datetime | None, as_json: bool,
           json_path: Path | None, markdown_path: Path | None) -> None:
    """Online evaluation of the A/B experiment: per arm, how often users start a listed
    movie within the window, minutes watched and ratings, with Wilson intervals and a
    two-proportion z-test against the reference arm. Reads MOVIEREC_KAFKA_TOPIC and
    MOVIEREC_SERVED_TOPIC at MOVIEREC_KAFKA_BOOTSTRAP from the beginning to their ends now."""
    from movierec.durable import make_dirs, write_atomic
    from movierec.settings import load

    settings = load(OnlineSettings)
    report = evaluate_online(settings, server=server, window=timedelta(minutes=window_min),
                             follow_up=timedelta(minutes=follow_up_min),
                             reference=reference, since=since, until=until)
    as_text = json.dumps(report.to_dict(), indent=2) + "\n"
    click.echo(as_text if as_json else report.format_table(), nl=False)
    outputs = [(json_path, as_text),
               (markdown_path, report.to_markdown())]
    for path, text in outputs:
        if path is not None:
            make_dirs(path.parent.resolve())
            write_atomic(path, text.encode("utf-8"))
            click.echo(f"wrote {path}", err=True)


@click.command("live")
@click.option("--metrics-port", type=int, help="Port of /metrics (default MOVIEREC_ONLINE_METRICS_PORT).")
@click.option("--idle-exit", type=float, help="Stop after this many seconds without a record.")
@click.option("--from-now", is_flag=True,
              help="With no checkpoint, start at the topics' ends instead of their beginnings.")
def live(metrics_port: int | None, idle_exit: float | None, from_now: bool) -> None:
    """Online metrics, continuously: read the event log and the served-records topic as
    they grow, count per arm and model version (request outcomes, take rate, minutes,
    ratings, plays, license cost, personalized lists, availability by minute), export
    them to Prometheus, and checkpoint so a restart goes on where it stopped."""
    import signal
    import threading

    from prometheus_client import start_http_server

    from movierec.settings import load
    from online_eval.monitor import Monitor, registry_for
    from stores.keys import Keys
    from stores.online import OnlineStore
    from stores.redis_online import RedisOnlineStore

    settings = load(OnlineSettings)
    store: OnlineStore = RedisOnlineStore.connect(settings.redis_url, Keys(settings.redis_prefix),
                                                  timeout_s=5)

    def costs(movies: set[str]) -> dict[str, float]:
        out = {}
        for movie, fields in store.movies(sorted(movies)).items():
            try:
                out[movie] = float(fields.get("license_cost") or 0)
            except ValueError:
                out[movie] = 0.0
        return out

    monitor = Monitor(settings, state_dir=settings.online_state_dir, costs=costs,
                      safety=minor_safety(store))
    port = settings.online_metrics_port if metrics_port is None else metrics_port
    server = (start_http_server(port, addr=settings.metrics_host, registry=registry_for(monitor))[0]
              if port else None)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"live online metrics from {settings.kafka_topic} and {settings.served_topic} at "
               f"{settings.kafka_bootstrap}; checkpoint {monitor.path}", err=True)
    try:
        monitor.run(stop, checkpoint_s=settings.online_checkpoint_s, idle_exit_s=idle_exit,
                    from_now=from_now)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.shutdown()


MOVIE_META_TTL_S = 600.0
"""How long the live safety check trusts a movie's metadata before reading it again."""


def minor_safety(store: Any) -> Callable[[Any], tuple[str, list[str]]]:
    """The live monitor's judge of one served list (``Monitor(safety=...)``): the user's
    audience from their profile now, and each listed movie's ``unsafe_reason`` (movie
    metadata cached for ``MOVIE_META_TTL_S``; a profile is read every time, since it
    arrives after a new user's first answers). Two Redis reads a list at most."""
    import time

    from recommender.models.profiles import profile_fields
    from recommender.serving.core import ADULT, audience, unsafe_reason

    cache: dict[str, tuple[float, dict[str, str] | None]] = {}

    def judge(record: Any) -> tuple[str, list[str]]:
        fields = store.profiles([record.user_id]).get(record.user_id) or {}
        who = audience(profile_fields(fields)[0])
        if who == ADULT:
            return who, []
        now = time.monotonic()
        if len(cache) > 200_000:  # bounded: a catalog is ~27,000 movies
            cache.clear()
        stale = [m for m in record.items if m not in cache or now - cache[m][0] > MOVIE_META_TTL_S]
        if stale:
            found = store.movies(stale)
            for movie in stale:
                cache[movie] = (now, found.get(movie) or None)
        reasons = [unsafe_reason(cache[m][1]) for m in record.items]
        return who, [r for r in reasons if r is not None]

    return judge

