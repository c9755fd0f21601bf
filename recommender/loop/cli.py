"""``movierec loop``: the retraining loop as a service (``run``), one pass (``once``) and
its journal (``status``). Thin: the decisions are ``recommender.loop.runner`` and
``triggers``; the world is ``recommender.loop.adapters``."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from movierec.settings import load

if TYPE_CHECKING:
    from recommender.loop.cycle import Cycle
    from recommender.loop.journal import Journal
    from recommender.loop.loop_metrics import LoopMetrics
    from recommender.loop.runner import Ports
    from recommender.loop.settings import LoopSettings

log = logging.getLogger(__name__)


def _settings() -> LoopSettings:
    from recommender.loop.settings import LoopSettings

    return load(LoopSettings)


def _journal(settings: LoopSettings) -> Journal:
    from recommender.loop.journal import Journal

    return Journal(settings.loop_dir / "journal.jsonl")


def _ports(settings: LoopSettings) -> Ports:
    from recommender.loop.adapters import ports
    from stores.keys import Keys
    from stores.redis_online import RedisOnlineStore

    store = RedisOnlineStore.connect(settings.redis_url, Keys(settings.redis_prefix), timeout_s=10)
    return ports(settings, online_store=store)


def pass_once(settings: LoopSettings, journal: Journal, ports: Ports, *,
              manual: str | None = None, metrics: LoopMetrics | None = None) -> list[str]:
    """One pass: check the triggers when no cycle is open (or open one by hand with the
    reason ``manual``), then advance the cycle until it waits. Returns the actions done.
    A paused loop opens no cycle by itself, but finishes the one in progress (a canary
    left running would keep users on an unjudged model)."""
    from recommender.loop import adapters
    from recommender.loop.cycle import open_cycle
    from recommender.loop.runner import step
    from recommender.loop.triggers import Trigger, check

    cycles = journal.cycles()
    trigger = None
    if open_cycle(cycles) is None:
        if manual is None and paused(settings) is not None:
            return ["paused"]
        if manual is not None:
            now = adapters.signals(settings, cycles).log_time
            trigger = Trigger("manual", manual, {}, now)
        else:
            seen = adapters.signals(settings, cycles, champion=ports.champion())
            trigger = check(seen, settings.triggers())
    done: list[str] = []
    for _ in range(100):
        before = len(journal.entries())
        started = time.monotonic()
        action = step(journal, ports, settings.cycle(), trigger)
        if metrics is not None and action.value != "wait":
            metrics.action_seconds.labels(action.value).observe(time.monotonic() - started)
        trigger = None
        done.append(action.value)
        current = open_cycle(journal.cycles())
        if len(journal.entries()) == before or current is None:
            break
        if current.stage.value == "looked" and action.value == "watch":
            break
    return done


def paused(settings: LoopSettings) -> str | None:
    """The reason the loop is paused (``movierec loop pause``), or None."""
    try:
        return (settings.loop_dir / "paused").read_text(encoding="utf-8").strip() or "paused"
    except FileNotFoundError:
        return None


@click.group("loop")
def loop() -> None:
    """The retraining loop: triggers, training, a canary, promotion or rollback."""


@loop.command("run")
@click.option("--metrics-port", type=int, help="Port of /metrics (default MOVIEREC_LOOP_METRICS_PORT).")
def run(metrics_port: int | None) -> None:
    """Run the loop until SIGTERM or Ctrl-C: every MOVIEREC_LOOP_CHECK_S seconds, check
    the triggers or look at the canary. Holds the loop's lock: one loop at a time."""
    from prometheus_client import start_http_server

    from recommender.loop.journal import LoopLock
    from recommender.loop.loop_metrics import LoopMetrics

    settings = _settings()
    journal = _journal(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # the action in hand finishes and is journaled first

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    with LoopLock(settings.loop_dir / "loop.lock"):
        metrics = LoopMetrics.create(journal)
        port = settings.loop_metrics_port if metrics_port is None else metrics_port
        server = (start_http_server(port, addr=settings.metrics_host, registry=metrics.registry)[0]
                  if port else None)
        ports = _ports(settings)
        click.echo(f"loop: journal {journal.path}, checks every {settings.loop_check_s:g} s",
                   err=True)
        try:
            while not stop.is_set():
                try:
                    done = pass_once(settings, journal, ports, metrics=metrics)
                except Exception:  # a bad pass must not end the service; the journal holds
                    log.exception("loop pass failed; retrying in %s s", settings.loop_check_s)
                    done = []
                if done and done != ["wait"]:
                    log.info("loop pass: %s", ", ".join(done))
                stop.wait(settings.loop_check_s)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if server is not None:
                server.shutdown()


@loop.command("once")
@click.option("--now", "manual", metavar="REASON",
              help="Open a cycle now for REASON, whatever the triggers say.")
@click.option("--until-closed", is_flag=True,
              help="Keep looking at the canary (every MOVIEREC_LOOP_CHECK_S s) until the "
                   "cycle closes.")
@click.option("--json", "as_json", is_flag=True, help="Print the cycle as JSON.")
def once(manual: str | None, until_closed: bool, as_json: bool) -> None:
    """One pass of the loop: check the triggers (or open a cycle --now), then advance the
    open cycle as far as it goes without waiting."""
    from recommender.loop.cycle import open_cycle
    from recommender.loop.journal import LoopLock

    settings = _settings()
    journal = _journal(settings)
    with LoopLock(settings.loop_dir / "loop.lock"):
        ports = _ports(settings)
        done = pass_once(settings, journal, ports, manual=manual)
        while until_closed and open_cycle(journal.cycles()) is not None:
            time.sleep(settings.loop_check_s)
            done += pass_once(settings, journal, ports)
    cycles = journal.cycles()
    last = cycles[-1] if cycles else None
    if as_json:
        click.echo(json.dumps({"actions": done, "cycle": _cycle_dict(last)}, indent=2))
        return
    click.echo("actions: " + ", ".join(done))
    if last is not None:
        _print_timeline(last)


@loop.command("pause")
@click.option("--reason", required=True, help="Why, shown by `movierec loop status`.")
def pause(reason: str) -> None:
    """Stop opening new cycles (a running loop keeps finishing the open one)."""
    from movierec.durable import make_dirs, write_atomic

    settings = _settings()
    make_dirs(settings.loop_dir)
    write_atomic(settings.loop_dir / "paused", reason.encode("utf-8"))
    click.echo(f"loop paused: {reason}")


@loop.command("resume")
def resume() -> None:
    """Let the loop open cycles again."""
    settings = _settings()
    (settings.loop_dir / "paused").unlink(missing_ok=True)
    click.echo("loop resumed")


@loop.command("status")
@click.option("--cycles", "n", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many recent cycles to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status(n: int, as_json: bool) -> None:
    """Who holds the loop, the open cycle, and the recent cycles with their timelines."""
    from recommender.loop.cycle import counts, open_cycle
    from recommender.loop.journal import LoopLock

    settings = _settings()
    cycles = _journal(settings).cycles()
    holder = LoopLock(settings.loop_dir / "loop.lock").holder()
    current = open_cycle(cycles)
    results = counts(cycles)
    doc = {"running": holder, "paused": paused(settings),
           "open_cycle": None if current is None else current.id,
           "results": results, "cycles": [_cycle_dict(c) for c in cycles[-n:]]}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    if doc["paused"]:
        click.echo(f"loop paused: {doc['paused']}")
    click.echo(f"loop: {'running, ' + holder if holder else 'not running'}; "
               f"{len(cycles)} cycles: " + ", ".join(f"{k} {v}" for k, v in results.items()))
    for cycle in cycles[-n:]:
        _print_timeline(cycle)


def _cycle_dict(cycle: Cycle | None) -> dict[str, Any] | None:
    if cycle is None:
        return None
    return {"id": cycle.id, "trigger": cycle.trigger, "stage": cycle.stage.value,
            "result": None if cycle.result is None else cycle.result.value,
            "reason": cycle.reason, "challenger": cycle.challenger, "champion": cycle.champion,
            "looks": cycle.looks, "entries": cycle.entries}


def _print_timeline(cycle: Cycle) -> None:
    result = cycle.result.value if cycle.result else "in progress"
    click.echo(f"\ncycle {cycle.id} ({cycle.trigger}): {result}")
    for e in cycle.entries:
        detail = e.get("reason") or e.get("challenger") or e.get("experiment") or ""
        click.echo(f"  {e['at'][:19]}  {e['stage']:9s} {detail}")
