"""``movierec demo up|down|status``: the whole system end to end on the local stack."""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import TYPE_CHECKING

import click

from ops.demo.stages import DemoError

if TYPE_CHECKING:  # imported where used: the CLI starts without the demo's dependencies
    from ops.demo.flow import DemoPlan

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop the demo like Ctrl-C does (SIGHUP: the terminal went away)."""


def _plan(full: bool = False) -> DemoPlan:
    from ops.demo.flow import DemoPlan

    return DemoPlan.load(full=full)


@click.group()
def demo() -> None:
    """The main job: stack, world, history, consumer, training, service, live users, report."""


@demo.command("up")
@click.option("--full", is_flag=True,
              help="Full scale: 1,000,000 users x 27,000 movies, 2 days (long); a "
                   "MOVIEREC_DEMO_* variable you set still wins.")
@click.option("--foreground", is_flag=True,
              help="Stay attached after the report; Ctrl-C then stops everything.")
@click.option("--reset", "reset_data", is_flag=True,
              help="Wipe the topic, event store, registry and Redis keys even if a demo did "
                   "not make them.")
def demo_up(full: bool, foreground: bool, reset_data: bool) -> None:
    """Run every stage in order, print the report, and leave the system running."""
    from ops.demo import flow, report
    from ops.demo.stages import Stages

    plan = _plan(full)
    d = plan.demo
    logging.getLogger("kafka").setLevel(logging.ERROR)  # its event-loop timing warnings
    log_dir = plan.log_dir
    stages = Stages(log_dir=log_dir, run_dir=plan.run_dir,
                    total=len(flow.STAGES), timeout_s=d.demo_stage_timeout_s)
    click.echo(f"movierec demo: {d.demo_users:,} users x {d.demo_movies:,} movies, "
               f"{d.demo_days:g} days of history, {d.demo_live_s:g} s of live sessions at "
               f"{d.demo_live_rate:g} req/s\nstage logs: {log_dir}/<stage>.log")
    for name, value in plan.overridden.items():
        click.echo(f"note: the demo runs on its local stack; {name}={value} is ignored")
    started = time.perf_counter()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_interrupt)
    try:
        flow.check_ports_free(plan)
        outcome = flow.run(plan, stages, reset_data=reset_data)
        result, markdown = stages.step("report", "grade report, online A/B, offline "
                                       "comparison, provenance",
                                       lambda note: report.build(plan, outcome, note))
        total = time.perf_counter() - started
        result["timings_s"] = {**{k: round(v, 1) for k, v in stages.timings.items()},
                               "total": round(total, 1)}
        report.write(plan.demo_dir, result, markdown)
    except DemoError as exc:
        click.echo(f"\nmovierec demo failed: {exc}\n\nWhat was started keeps running for "
                   f"inspection; `make demo-down` stops it.", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: stopping everything the demo started", err=True)
        _down(plan)
        sys.exit(130)
    click.echo("\n" + markdown)
    click.echo(_whats_running(plan, result, total))
    if foreground:
        click.echo("foreground: Ctrl-C stops everything")
        try:
            signal.pause()
        except KeyboardInterrupt:
            click.echo("\nstopping everything the demo started")
            _down(plan)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _whats_running(plan: DemoPlan, result: dict, total_s: float) -> str:
    trace = result["provenance"]
    var = plan.stack.var_dir
    return "\n".join([
        f"The demo took {total_s / 60:.1f} minutes. Everything keeps running:",
        f"  the team's dashboard  {plan.dashboard_url}   <- open this: the whole system, live",
        f"  recommendation API  {plan.serve_url}/recommend/<userid>   (try user {trace['user']})",
        f"  its metrics         {plan.serve_url}/metrics",
        f"  consumer metrics    http://127.0.0.1:{plan.consumer.metrics_port}/metrics",
        f"  online metrics      http://127.0.0.1:{plan.online.online_metrics_port}/metrics",
        f"  Prometheus          {plan.stack.local_prometheus_url}",
        f"  user/movie API      {plan.api_url}/user/<userid>",
        "Inspect what happened:",
        "  .venv/bin/movierec models list            # versions, aliases, gate",
        "  .venv/bin/movierec models show champion   # everything recorded about it",
        "  .venv/bin/movierec loop status            # the loop's cycles and their timelines",
        "  .venv/bin/movierec eval online --window-min 10 --reference champion   # the canary, again",
        f"  curl -s {trace['url']}",
        "  .venv/bin/movierec drift report           # the event stream against its reference",
        f"  report: {plan.demo_dir}/report.md and report.json",
        f"  logs:   {var}/log/demo/<stage>.log (serve, consume, world keep writing), "
        f"{var}/log/kafka/server.log, {var}/log/redis.log",
        "Stop everything: make demo-down   (or .venv/bin/movierec demo down)",
    ])


def _down(plan: DemoPlan) -> list[str]:
    """Stop the demo's services, then the stack. A second Ctrl-C or signal while this
    runs is ignored: half a teardown would leave things running."""
    from ops import stack
    from ops.demo.reset import stop_services

    for sig in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(sig, signal.SIG_IGN)
    stopped = stop_services(plan)
    stopped += list(stack.down(plan.stack))
    return stopped


@demo.command("down")
def demo_down() -> None:
    """Stop what the demo started: its services, then Kafka, Redis and Prometheus."""
    stopped = _down(_plan())
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@demo.command("status")
def demo_status() -> None:
    """One line per demo service and stack part; exit status 1 unless all run."""
    from ops import stack
    from ops.demo.reset import SERVICES
    from ops.stack import procs

    plan = _plan()
    ok = True
    for name in reversed(SERVICES):
        pid = procs.owned_pid(plan.pid_file(name))
        ok &= pid is not None
        click.echo(f"{name:10s} {'up' if pid else 'down':9s} "
                   + (f"pid {pid}" if pid else "") + f"  log {plan.log_of(name)}")
    for part in stack.status(plan.stack):
        ok &= part.healthy
        click.echo(f"{part.name:10s} {part.state:9s} 127.0.0.1:{part.port}  {part.detail}")
    report = plan.demo_dir / "report.md"
    click.echo(f"report: {report}" if report.exists() else "no report yet")
    sys.exit(0 if ok else 1)
