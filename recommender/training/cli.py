"""``movierec train``, ``movierec eval offline`` and ``movierec models …``: thin commands
over the training pipeline and the registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from movierec.settings import load

if TYPE_CHECKING:  # imported where used: the CLI starts without the training stack
    from recommender.registry import Registry
    from recommender.training.pipeline import RunReport
    from recommender.training.settings import TrainSettings

log = logging.getLogger(__name__)


def _settings(**overrides: Any) -> TrainSettings:
    from recommender.training.settings import TrainSettings

    return load(TrainSettings, **{k: v for k, v in overrides.items() if v is not None})


def run_pipeline(*, register: bool, promote: bool, models: str | None, snapshot: str | None,
                 profiles: str | None, report_dir: Path | None) -> RunReport:
    """Load the inputs, run the pipeline under a progress bar, print the summary."""
    from tqdm import tqdm

    from recommender.registry import Registry
    from recommender.training.inputs import load_inputs
    from recommender.training.pipeline import Pipeline

    settings = _settings(train_models=models, train_profiles=profiles)
    bar = tqdm(desc="train", unit="step", leave=True, bar_format="{desc}: {n_fmt} steps [{elapsed}]{postfix}")

    def progress(stage: str) -> None:
        bar.set_postfix_str(stage)
        bar.update(1)

    try:
        progress("read the event store")
        inputs = load_inputs(settings, snapshot_id=snapshot)
        progress(f"{inputs.events.num_rows:,} rows of snapshot {inputs.data.get('snapshot_id')}")
        registry = Registry(settings.registry_dir) if register else None
        report = Pipeline(settings, registry=registry, progress=progress).run(
            inputs, register=register, promote=promote, report_dir=report_dir)
    finally:
        bar.close()
    _summary(report, settings.gate_metric)
    return report


def _summary(report: RunReport, metric: str) -> None:
    click.echo(f"\nsplit at {report.cut:%Y-%m-%d %H:%M:%S}; {report.test_users:,} test users "
               f"({report.new_test_users:,} new)")
    click.echo(f"{'model':12s} {metric:>9s} {'train s':>8s} {'p99 ms':>7s}  version / gate")
    for c in report.candidates:
        m = c.row.get("metrics", {}).get(metric)
        gate = "" if c.gate is None else ("passed" if c.gate["passed"] else
                                          "failed: " + "; ".join(c.gate["reasons"]))
        click.echo(f"{c.name:12s} {m if m is not None else float('nan'):9.4f} "
                   f"{c.row.get('train_seconds') or 0:8.2f} {c.row.get('infer_p99_ms') or 0:7.2f}  "
                   f"{c.version or '-'} {gate}")
    for name, test in report.paired.items():
        click.echo(f"{name} vs {test['against']}: mean {metric} difference "
                   f"{test['mean_diff']:+.4f}, 95% CI [{test['ci'][0]:+.4f}, {test['ci'][1]:+.4f}], "
                   f"Wilcoxon p = {test['p_value']:.2g}")
    if report.promoted:
        click.echo(f"champion: {report.promoted}")
    click.echo("report: " + ", ".join(str(p) for p in report.report_files.values()))


@click.command("train")
@click.option("--models", help="Candidates, comma-separated (default MOVIEREC_TRAIN_MODELS).")
@click.option("--snapshot", help="Train on this saved snapshot id (default: snapshot the store now).")
@click.option("--profiles", type=click.Choice(["redis", "none"]),
              help="Where profiles come from (default MOVIEREC_TRAIN_PROFILES).")
@click.option("--promote/--no-promote", default=True, show_default=True,
              help="Promote the best model that passes the gate to champion.")
@click.option("--report-dir", type=click.Path(path_type=Path),
              help="Folder for the comparison report (default: a new one under MOVIEREC_REPORTS_DIR).")
def train(models: str | None, snapshot: str | None, profiles: str | None, promote: bool,
          report_dir: Path | None) -> None:
    """Train the candidates on an event-store snapshot, evaluate them offline, register
    them with provenance, gate them and promote the best."""
    run_pipeline(register=True, promote=promote, models=models, snapshot=snapshot,
                 profiles=profiles, report_dir=report_dir)


@click.command("offline")
@click.option("--models", help="Candidates, comma-separated (default MOVIEREC_TRAIN_MODELS).")
@click.option("--snapshot", help="Evaluate on this saved snapshot id (default: snapshot the store now).")
@click.option("--profiles", type=click.Choice(["redis", "none"]),
              help="Where profiles come from (default MOVIEREC_TRAIN_PROFILES).")
@click.option("--report-dir", type=click.Path(path_type=Path),
              help="Folder for comparison.md/.json/.svg (default: under MOVIEREC_REPORTS_DIR).")
def offline(models: str | None, snapshot: str | None, profiles: str | None,
            report_dir: Path | None) -> None:
    """Fit each candidate before the cut, measure it after: accuracy, slices, training
    time, latency, throughput and size, as markdown, JSON and an SVG plot. Registers
    nothing."""
    report = run_pipeline(register=False, promote=False, models=models, snapshot=snapshot,
                          profiles=profiles, report_dir=report_dir)
    click.echo(report.report_files["md"].read_text())


@click.command("tune")
@click.option("--model", type=click.Choice(["als", "hybrid"]), default="hybrid", show_default=True,
              help="The candidate whose hyperparameters (and the confidence formula's) to search.")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Configurations to try (one fit and one evaluation each).")
@click.option("--timeout-s", type=click.FloatRange(min=0, min_open=True),
              help="Stop the search after this many seconds (the trials done count).")
@click.option("--snapshot", help="Tune on this saved snapshot id (default: snapshot the store now).")
@click.option("--if-older-than", "if_older_h", type=click.FloatRange(min=0),
              help="Search only when the model's latest recorded search is older than this many "
                   "hours (or there is none): for a schedule.")
@click.option("--json", "as_json", is_flag=True, help="Print the search's record as JSON.")
def tune(model: str, trials: int, timeout_s: float | None, snapshot: str | None,
         if_older_h: float | None, as_json: bool) -> None:
    """Search hyperparameters on the validation period (the stretch before the test cut),
    record the search in the registry; the next `movierec train` uses its best."""
    from datetime import UTC, datetime

    from recommender.registry import Registry
    from recommender.training.inputs import load_inputs
    from recommender.training.tuning import tune as run_search

    settings = _settings()
    registry = Registry(settings.registry_dir)
    if if_older_h is not None:
        latest = registry.tunings(model)
        if latest:
            age_h = (datetime.now(UTC) - datetime.fromisoformat(latest[0]["recorded"])).total_seconds() / 3600
            if age_h < if_older_h:
                click.echo(f"skipped: the latest search of {model} ({latest[0]['file']}) is "
                           f"{age_h:.1f} h old, under {if_older_h:g} h")
                return
    inputs = load_inputs(settings, snapshot_id=snapshot)
    result = run_search(settings, inputs, model=model, trials=trials, timeout_s=timeout_s,
                        progress=lambda line: click.echo(line, err=True))
    path = registry.record_tuning(result.to_dict())
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    best = result.best
    click.echo(f"{model}: best {result.metric} {best[result.metric]:.5f} of {len(result.trials)} "
               f"trials in {result.seconds:.0f} s; params {best['params']}, confidence "
               f"{best['confidence']}\nrecorded: {path}")


# -- models ------------------------------------------------------------------------------


@click.group("models")
def models() -> None:
    """List, inspect, promote and roll back registered model versions."""


def _registry() -> Registry:
    from recommender.registry import Registry

    return Registry(_settings().registry_dir)


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """Every version, newest first, with its aliases and gate metric."""
    registry = _registry()
    versions = registry.versions()
    aliases = registry.aliases()
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    metric = _settings().gate_metric
    rows: list[dict[str, Any]] = [
        {"version": v.version, "name": v.name, "created": v.created,
         "aliases": sorted(by_version.get(v.version, [])),
         metric: v.metrics.get(metric),
         "gate": None if v.meta.get("gate") is None else v.meta["gate"].get("passed")}
        for v in sorted(versions, key=lambda v: v.created, reverse=True)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models registered in {registry.root}")
    for r in rows:
        value = "-" if r[metric] is None else f"{r[metric]:.4f}"
        gate = {None: "-", True: "passed", False: "failed"}[r["gate"]]
        click.echo(f"{r['version']:40s} {r['created']:25s} {metric} {value:>7s}  gate {gate:6s} "
                   f"{','.join(r['aliases'])}")


@models.command("show")
@click.argument("version")
def models_show(version: str) -> None:
    """Everything recorded about VERSION (or an alias such as champion)."""
    mv = _registry().get(version)
    click.echo(json.dumps(mv.meta, indent=2, sort_keys=True))


@models.command("promote")
@click.argument("version")
@click.option("--alias", default="champion", show_default=True,
              help="The alias to point at VERSION (serving follows MOVIEREC_SERVE_ALIAS).")
@click.option("--reason", default="promoted by hand", show_default=True,
              help="Why, kept in the registry's event log.")
@click.option("--force", is_flag=True, help="Promote even if the version failed its gate.")
def models_promote(version: str, alias: str, reason: str, force: bool) -> None:
    """Point ALIAS at VERSION atomically (the previous holder is kept for rollback)."""
    registry = _registry()
    registry.promote(version, alias=alias, reason=reason, force=force)
    click.echo(f"{alias} -> {registry.aliases()[alias]}")


@models.command("rollback")
@click.option("--alias", default="champion", show_default=True,
              help="The alias to move back.")
@click.option("--reason", default="rolled back by hand", show_default=True,
              help="Why, kept in the registry's event log.")
def models_rollback(alias: str, reason: str) -> None:
    """Point ALIAS back at the version it held before its last promotion."""
    restored = _registry().rollback(alias, reason=reason)
    click.echo(f"{alias} -> {restored}")
