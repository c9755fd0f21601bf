"""``movierec eval offline``: the candidates' comparison on a leakage-free temporal split,
without registering anything."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("eval")
def eval_group() -> None:
    """Evaluate models."""


@eval_group.command("offline")
@click.option("--models", help="Candidates, comma-separated (default MOVIEREC_TRAIN_MODELS).")
@click.option("--snapshot", help="Evaluate on this saved snapshot id (default: snapshot the store now).")
@click.option("--profiles", type=click.Choice(["redis", "none"]),
              help="Where profiles come from (default MOVIEREC_TRAIN_PROFILES).")
@click.option("--report-dir", type=click.Path(path_type=Path),
              help="Folder for comparison.md/.json/.svg (default: under MOVIEREC_REPORTS_DIR).")
def offline(models, snapshot, profiles, report_dir) -> None:
    """Fit each candidate before the cut, measure it after: accuracy, slices, training
    time, latency, throughput and size, as markdown, JSON and an SVG plot."""
    from recommender.cli import run_pipeline

    report = run_pipeline(register=False, promote=False, models=models, snapshot=snapshot,
                          profiles=profiles, report_dir=report_dir)
    click.echo(report.report_files["md"].read_text())
