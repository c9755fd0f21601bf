"""``movierec audit <name>``: an audit of the running system from its own telemetry,
written as a report (markdown, JSON, plots) under ``MOVIEREC_AUDIT_REPORTS_DIR/<name>``.

Exit status 0 when the audit passes, 1 when it fails (so a CI job or a drill can gate on
it), with ``--json`` printing the report's JSON body either way."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click


@click.group()
def audit() -> None:
    """Responsible-operation audits of the running system, from its telemetry."""


def _report_options(name: str, since_help: str) -> Callable[[Callable], Callable]:
    """The options every audit takes: the window, the report folder, --json."""
    def add(command: Callable) -> Callable:
        for option in reversed((
                click.option("--since-min", type=float, help=since_help),
                click.option("--out", "out_dir", type=click.Path(path_type=Path),
                             help=f"Report folder (default MOVIEREC_AUDIT_REPORTS_DIR/{name})."),
                click.option("--json", "as_json", is_flag=True,
                             help="Print the report's JSON."))):
            command = option(command)
        return command
    return add


def _finish(built: Any, folder: Path, as_json: bool) -> NoReturn:
    """Write the report, say the verdict (or print its JSON), exit 0 on pass, 1 on fail."""
    from audit import report

    paths = report.write(built, folder)
    if as_json:
        click.echo(json.dumps(built.as_json(), indent=2, sort_keys=True, default=str))
    else:
        click.echo(f"{built.name}: {'PASS' if built.passed else 'FAIL'}: {built.result}")
        click.echo("report: " + ", ".join(str(p) for p in paths))
    sys.exit(0 if built.passed else 1)


LISTS_SINCE = "Only lists served in the last N minutes (default: the whole topic)."


@audit.command("safety")
@_report_options("safety", LISTS_SINCE)
def safety(since_min: float | None, out_dir: Path | None, as_json: bool) -> None:
    """Every served list judged for minors: adult, R, NC-17, X or unverified movies to
    users under 18 (or of unknown age), on every path and arm."""
    from audit import safety_report, telemetry
    from audit.safety import audit as run_audit
    from audit.settings import AuditSettings
    from movierec.settings import load
    from stores.keys import Keys
    from stores.redis_online import RedisOnlineStore

    settings = load(AuditSettings)
    since_ms = None if since_min is None else int((time.time() - since_min * 60) * 1000)
    served = telemetry.read_served(settings.kafka_bootstrap, settings.served_topic,
                                   since_ms=since_ms, timeout_s=settings.audit_read_timeout_s)
    store = RedisOnlineStore.connect(settings.redis_url, Keys(settings.redis_prefix),
                                     timeout_s=10)
    ages = telemetry.ages(store, (r.user_id for r in served.records))
    meta = telemetry.movie_meta(store, (m for r in served.records for m in r.items))
    result = run_audit(served.records, ages, meta)
    window = "the whole topic" if since_min is None else f"the last {since_min:g} min"
    built = safety_report.build(result, source=f"topic {settings.served_topic} ({window})",
                                rejected=served.rejected)
    _finish(built, out_dir or settings.audit_reports_dir / "safety", as_json)


@audit.command("fairness")
@_report_options("fairness", "Only what was written in the last N minutes (default: the "
                             "whole log).")
@click.option("--window-min", type=float, default=30.0, show_default=True,
              help="A list is taken when a listed film starts within this many minutes.")
def fairness(since_min: float | None, window_min: float, out_dir: Path | None,
             as_json: bool) -> None:
    """Outcomes by age group and gender (take rate with intervals, minutes per list) and
    exposure of long-tail and older movies against their demand, from the event log."""
    from audit import fairness as core
    from audit import fairness_log, fairness_report, telemetry
    from audit.settings import AuditSettings
    from movierec.settings import load
    from recommender.rerank import RANKING_DEPTH
    from recommender.serving.experiments import ExperimentStore
    from stores.keys import Keys
    from stores.redis_online import RedisOnlineStore

    settings = load(AuditSettings)
    store = RedisOnlineStore.connect(settings.redis_url, Keys(settings.redis_prefix),
                                     timeout_s=10)
    ages = telemetry.GroupOf(store, lambda f: core.age_group(f[0]))
    genders = telemetry.GroupOf(store, lambda f: core.gender_group(f[1]))
    by_age, by_gender = fairness_log.joins(ages, genders, window_min)
    # the running experiment: its arms are compared (a mitigation arm beside its control)
    experiment = ExperimentStore(settings.serve_experiments_file).read()[1]
    by_arm = (None if experiment is None
              else fairness_log.join(fairness_log.ArmOf(experiment), window_min))
    since_ms = None if since_min is None else int((time.time() - since_min * 60) * 1000)
    read = fairness_log.read_fairness(
        settings.kafka_bootstrap, settings.kafka_topic, by_age, by_gender,
        rating_scale=settings.rating_scale, timeout_s=settings.audit_read_timeout_s,
        idle_s=10.0, written_since_ms=since_ms, by_arm=by_arm)
    overall, age_results = core.judge_groups(by_age.finish())
    _, gender_results = core.judge_groups(by_gender.finish())
    exposed = core.exposure(read.lists)
    meta = telemetry.movie_meta(store, set(exposed) | set(read.started))
    # the head by the site's own plays: the consumer's decayed popularity ranking (the
    # re-ranker's head comes from the same plays, through the model's training data)
    ranked = store.popular(RANKING_DEPTH)
    tail = (set(meta) | set(exposed) | set(read.started)) - core.head_of(ranked)
    old = {m for m, f in meta.items() if (y := core.release_year(f)) and y < core.OLD_BEFORE_YEAR}
    groups = {"long tail": tail, f"released before {core.OLD_BEFORE_YEAR}": old}
    providers = [core.judge_provider(g, members, exposed, read.started)
                 for g, members in groups.items()]
    policies = {} if experiment is None else {a.name: a.rerank for a in experiment.arms}
    arms = (None if by_arm is None else
            core.judge_arms(by_arm.finish(), read.arm_lists, policies, groups, read.started))
    mitigation = fairness_report.mitigation(
        policies, {} if experiment is None else {a.name: a.share for a in experiment.arms},
        None if experiment is None else experiment.id)
    window = "the whole log" if since_min is None else f"the last {since_min:g} min"
    built = fairness_report.build(overall, age_results, gender_results, providers,
                                  source=f"topic {settings.kafka_topic} ({window})",
                                  lists=len(read.lists), arms=arms, mitigation_text=mitigation)
    _finish(built, out_dir or settings.audit_reports_dir / "fairness", as_json)


@audit.command("feedback")
@_report_options("feedback", "Only what was written in the last N minutes (default: the "
                             "whole log).")
@click.option("--bucket-hours", type=click.FloatRange(min=0.25), default=24.0,
              show_default=True, help="Length of a time bucket, in hours of event time.")
@click.option("--popularity-days", type=click.FloatRange(min=0.01), default=7.0,
              show_default=True,
              help="Plays in this many days before the first full bucket rank the head "
                   "(the long tail is the rest).")
def feedback(since_min: float | None, bucket_hours: float, popularity_days: float,
             out_dir: Path | None, as_json: bool) -> None:
    """Feedback loops: catalog coverage of the lists, Gini of exposure and the long-tail
    share of plays per bucket of event time, from the event log, and their trends; the
    re-ranking arms of the running experiment as the mitigation in force."""
    from datetime import UTC, datetime

    from audit import feedback_report
    from audit.feedback import Tally, measure
    from audit.settings import AuditSettings
    from movierec.settings import load
    from recommender.serving.experiments import ExperimentStore
    from recommender.serving.state import ServingError

    settings = load(AuditSettings)
    try:
        error, experiment = None, ExperimentStore(settings.serve_experiments_file).read()[1]
    except ServingError as exc:
        error, experiment = str(exc), None
    since_ms = None if since_min is None else int((time.time() - since_min * 60) * 1000)
    tally = Tally(bucket_hours * 3600.0)
    _read_log(settings.kafka_bootstrap, settings.kafka_topic, tally, experiment,
              rating_scale=settings.rating_scale, timeout_s=settings.audit_read_timeout_s,
              written_since_ms=since_ms)
    window = "the whole log" if since_min is None else f"the last {since_min:g} min"
    built = feedback_report.build(
        measure(tally, popularity_s=popularity_days * 86_400.0),
        source=f"topic {settings.kafka_topic} ({window})",
        mitigation=feedback_report.mitigation(experiment, error=error, at=datetime.now(UTC)),
        policies=None if experiment is None
        else {a.name: getattr(a, "rerank", None) for a in experiment.arms})
    _finish(built, out_dir or settings.audit_reports_dir / "feedback", as_json)


def _read_log(bootstrap: str, topic: str, tally: Any, experiment: Any, *, rating_scale: int,
              timeout_s: float, written_since_ms: int | None) -> None:
    """Feed the event log's lists (status 200), plays (watch lines of minute 0) and rated
    movies to ``tally`` (``audit.feedback.Tally``), at their event time (UTC); each list
    with its user's arm of ``experiment`` (serving's sticky assignment) when one runs."""
    from datetime import UTC

    from movierec.wire import LineParser, Rate, Recommendation, Watch
    from online_eval.source import read_topic
    from recommender.serving.experiments import arm_at, bucket

    parser = LineParser(rating_scale)
    arms: dict[int, str] = {}

    def arm_of(user: int) -> str | None:
        if experiment is None:
            return None
        if user not in arms:
            arms[user] = arm_at(experiment.arms, bucket(user, experiment.id)).name
        return arms[user]

    def feed(value: bytes, _written_ms: int) -> None:
        event = parser.parse(value)
        if isinstance(event, Recommendation):
            if event.status == 200 and event.items:
                tally.add_list(event.time.replace(tzinfo=UTC).timestamp(), event.user_id,
                               event.items, arm_of(event.user_id))
        elif isinstance(event, Watch):
            if event.minute == 0:
                tally.add_play(event.time.replace(tzinfo=UTC).timestamp(), event.movie_id)
            else:
                tally.add_movie(event.movie_id)
        elif isinstance(event, Rate):
            tally.add_movie(event.movie_id)

    read_topic(bootstrap, topic, feed, timeout_s=timeout_s, idle_s=10.0,
               written_since_ms=written_since_ms)


@audit.command("security")
@_report_options("security", LISTS_SINCE)
def security(since_min: float | None, out_dir: Path | None, as_json: bool) -> None:
    """Scraping by enumeration in the served records, and the shilling check of the model
    that serves; exit status 1 when an enumeration is found."""
    from audit import security_report, telemetry
    from audit.scraping import enumerations
    from audit.settings import AuditSettings
    from movierec.settings import load
    from recommender.registry import Registry, RegistryError

    settings = load(AuditSettings)
    since_ms = None if since_min is None else int((time.time() - since_min * 60) * 1000)
    served = telemetry.read_served(settings.kafka_bootstrap, settings.served_topic,
                                   since_ms=since_ms, timeout_s=settings.audit_read_timeout_s)
    requests = sorted((r.time_ms, r.user_id) for r in served.records)
    shilling, model = None, None
    try:
        champion = Registry(settings.registry_dir).get("champion")
        model, shilling = champion.version, champion.meta.get("data", {}).get("shilling")
    except RegistryError:
        pass
    window = "the whole topic" if since_min is None else f"the last {since_min:g} min"
    built = security_report.build(enumerations(requests), lists=len(requests),
                                  shilling=shilling, model=model,
                                  source=f"topic {settings.served_topic} ({window})")
    _finish(built, out_dir or settings.audit_reports_dir / "security", as_json)
