"""``movierec drill <scenario>`` and ``movierec drill list``: incident drills on the
running demo (``movierec demo up``), with the demo's ``MOVIEREC_*`` environment."""

from __future__ import annotations

import json
import sys

import click

from ops.drills.core import SCENARIOS


@click.command("drill")
@click.argument("scenario", type=click.Choice([*SCENARIOS, "list"]))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--timeout-s", type=click.FloatRange(min=1), default=None,
              help="Longest wait for the alert, in seconds (default: the scenario's bound, "
                   "see `movierec drill list`).")
def drill(scenario: str, as_json: bool, timeout_s: float | None) -> None:
    """Inject SCENARIO's fault into the running demo, wait for its alert, recover (by
    itself or with the runbook's commands, printed), restore, and write a postmortem
    skeleton to var/drills/. `list` shows the scenarios. Exit status 1 if the alert did
    not come, the system did not recover or the alert did not resolve in time."""
    if scenario == "list":
        _list(as_json)
        return
    from ops.demo.flow import DemoPlan
    from ops.drills.runner import run_drill

    say = (lambda text: click.echo(text, err=True)) if as_json else click.echo
    try:
        outcome, folder = run_drill(scenario, DemoPlan.load(), detect_bound_s=timeout_s, say=say)
    except KeyboardInterrupt:
        click.echo("interrupted: the system was restored", err=True)
        sys.exit(130)
    result = {**outcome.to_dict(), "postmortem": str(folder / "postmortem.md"),
              "timeline_file": str(folder / "timeline.json")}
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"\n{'passed' if outcome.passed else 'FAILED: ' + '; '.join(outcome.problems)}"
                   f"\ntime to detect   {_s(result['time_to_detect_s'])}"
                   f"\ntime to recover  {_s(result['time_to_recover_s'])}"
                   f"\ntime to resolve  {_s(result['time_to_resolve_s'])}"
                   f"\npostmortem: {result['postmortem']}")
    if not outcome.passed:
        sys.exit(1)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def _list(as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"name": s.name, "fault": s.fault, "alerts": list(s.alerts),
                                "recovery": s.recovery, "probe": s.probe,
                                "detect_bound_s": s.detect_bound_s} for s in SCENARIOS.values()],
                              indent=2))
        return
    for s in SCENARIOS.values():
        click.echo(f"{s.name:17s} {s.recovery:9s} {', '.join(s.alerts)}\n{'':17s} {s.fault}")
