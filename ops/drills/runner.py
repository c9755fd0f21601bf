"""Running one drill: check, inject, wait for the alert, recover, wait for health and the
resolution, restore (always: also on a failure, Ctrl-C or SIGTERM), and write
``<var>/drills/<UTC stamp>-<scenario>/postmortem.md`` and ``timeline.json``."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from ops.demo.flow import DemoPlan
from ops.demo.reset import SERVICES
from ops.drills.core import (
    ACTION,
    FAILED,
    FIRED,
    INJECTED,
    NOTE,
    RECEIVED,
    RECOVERED,
    RESOLVED,
    RESTORED,
    RUNBOOK,
    SCENARIOS,
    STARTED,
    Timeline,
    Wanted,
    find_alert,
    rfc3339_s,
)
from ops.drills.faults import Fault, fault_for, wait_for
from ops.drills.postmortem import Outcome, markdown
from ops.drills.probes import Demo, DrillError, Traffic

PREFLIGHT_S = 120.0
"""How long a drill waits for the system to be healthy (and for an earlier firing of its
alert to resolve) before it refuses to start."""
POLL_S = 1.0


def still_firing(records: Iterable[Mapping], names: tuple[str, ...],
                 labels: Wanted) -> list[str]:
    """Alerts among ``names`` (with their ``labels``) whose latest record is a firing:
    Alertmanager would not notify them again, so a drill cannot start on top of them."""
    latest: dict[str, Mapping] = {}
    for r in sorted(records, key=lambda r: r.get("received_s", 0.0)):
        if find_alert([r], names, status=r.get("status", ""), since_s=0.0, labels=labels):
            latest[str(r.get("fingerprint"))] = r
    return sorted({r["alertname"] for r in latest.values() if r.get("status") == "firing"})


def _preflight(demo: Demo, fault: Fault) -> None:
    s = fault.scenario

    def ready() -> str | None:
        if firing := still_firing(demo.notifications(), s.alerts, fault.labels()):
            return f"{', '.join(firing)} still firing from before"
        return fault.healthy()

    if not wait_for(ready, PREFLIGHT_S, interval_s=2.0):
        raise DrillError(f"the system is not ready for the drill after {PREFLIGHT_S:.0f} s: "
                         f"{ready()}")


def _wait_alert(demo: Demo, fault: Fault, *, status: str, since_s: float, bound_s: float,
                fingerprint: str | None = None) -> Mapping | None:
    deadline = time.monotonic() + bound_s
    while True:
        record = find_alert(demo.notifications(), fault.scenario.alerts, status=status,
                            since_s=since_s, labels=fault.labels(), fingerprint=fingerprint)
        if record is not None or time.monotonic() > deadline:
            return record
        time.sleep(POLL_S)


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_drill(name: str, plan: DemoPlan, *, detect_bound_s: float | None = None,
              say: Callable[[str], None] = print) -> tuple[Outcome, Path]:
    """Run scenario ``name`` on the demo of ``plan``; (what it found, its folder)."""
    scenario = SCENARIOS[name]
    demo = Demo(plan)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    drill_dir = plan.stack.var_dir / "drills" / f"{stamp}-{name}"
    drill_dir.mkdir(parents=True, exist_ok=True)
    fault = fault_for(name, demo, drill_dir)
    timeline = Timeline()
    outcome = Outcome(scenario, timeline)
    bound = detect_bound_s or scenario.detect_bound_s

    def note(kind: str, text: str, command: str | None = None, at_s: float | None = None) -> None:
        event = timeline.add(time.time() if at_s is None else at_s, kind, text, command)
        say(f"  {datetime.fromtimestamp(event.at_s, UTC):%H:%M:%S}  {kind:15s} {text}"
            + (f"\n{'':28s}$ {command}" if command else ""))

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    traffic = Traffic(demo)
    running: list[str] = []
    injected_at: float | None = None
    interrupted = False
    say(f"drill {name}: {scenario.fault}")
    try:
        note(STARTED, f"drill started; light traffic on {plan.serve_url}; checking the "
                      "system is healthy")
        traffic.start()
        fault.start_traffic(bound + scenario.recover_bound_s + 120)
        _preflight(demo, fault)
        running = [name for name in SERVICES if demo.pid(name) is not None]
        injected_at = time.time()
        note(INJECTED, fault.inject(), at_s=injected_at)
        fired = _wait_alert(demo, fault, status="firing", since_s=injected_at, bound_s=bound)
        if fired is None:
            outcome.problems.append(f"no {' or '.join(scenario.alerts)} within {bound:.0f} s")
            note(FAILED, outcome.problems[-1])
        else:
            outcome.detected_by = fired["alertname"]
            if (started := rfc3339_s(fired.get("starts_at"))) is not None:
                note(FIRED, f"{fired['alertname']} firing at Prometheus (its condition held for "
                            "the rule's for:)", at_s=started)
            note(RECEIVED, f"{fired['alertname']} ({fired.get('severity')}) received: "
                           f"{fired.get('annotations', {}).get('summary', '')}",
                 at_s=fired["received_s"])
        fault.after_detection()
        if scenario.recovery == RUNBOOK:
            acted_at = time.time()
            for command in fault.recover():
                note(ACTION, f"runbook (docs/runbook.md#{scenario.runbook})", command, acted_at)
        else:
            note(NOTE, "recovery is automatic: no command")
        if wait_for(fault.healthy, scenario.recover_bound_s):
            note(RECOVERED, f"healthy: {scenario.probe}")
        else:
            outcome.problems.append(f"not healthy {scenario.recover_bound_s:.0f} s after the "
                                    f"recovery began: {fault.healthy()}")
            note(FAILED, outcome.problems[-1])
        if fired is not None:
            resolved = _wait_alert(demo, fault, status="resolved", since_s=injected_at,
                                   bound_s=scenario.resolve_bound_s,
                                   fingerprint=fired.get("fingerprint"))
            if resolved is None:
                outcome.problems.append(f"{fired['alertname']} not resolved within "
                                        f"{scenario.resolve_bound_s:.0f} s")
                note(FAILED, outcome.problems[-1])
            else:
                note(RESOLVED, f"{resolved['alertname']} resolution received",
                     at_s=resolved["received_s"])
    except DrillError as exc:
        outcome.problems.append(str(exc))
        note(FAILED, str(exc))
    except KeyboardInterrupt:
        interrupted = True
        outcome.problems.append("interrupted")
        note(FAILED, "interrupted: restoring the system")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # half a restore would be worse
        traffic.stop()
        try:
            done = fault.restore()
        except Exception as exc:  # reported, never hidden: the system may need a hand
            done = [f"restore failed: {type(exc).__name__}: {exc}"]
            outcome.problems.append(done[0])
        if gone := [name for name in running if demo.pid(name) is None]:
            outcome.problems.append(f"demo services that stopped during the drill: "
                                    f"{', '.join(gone)} (`movierec demo status`; restart them)")
            done.append(outcome.problems[-1])
        note(RESTORED, "; ".join(done) or "nothing left to restore")
        signal.signal(signal.SIGTERM, previous)
    if injected_at is not None:
        _impact(outcome, traffic, demo, injected_at)
    (drill_dir / "timeline.json").write_text(json.dumps(outcome.to_dict(), indent=2) + "\n")
    (drill_dir / "postmortem.md").write_text(markdown(outcome))
    if interrupted:
        raise KeyboardInterrupt
    return outcome, drill_dir


def _impact(outcome: Outcome, traffic: Traffic, demo: Demo, injected_at: float) -> None:
    """What the drill's own traffic saw from the fault to the recovery, and the other
    alerts the receiver recorded meanwhile."""
    recovered = outcome.timeline.first(RECOVERED)
    end = recovered.at_s if recovered else time.time()
    seen = traffic.tally(injected_at, end)
    total = sum(seen.values())
    if total:
        parts = ", ".join(f"{n} {what}" for what, n in seen.most_common())
        outcome.impact.append(f"{total} requests of the drill's traffic (10/s) from the fault "
                              f"to the recovery, by answer path: {parts}"
                              + (" (failed: no 200 within 600 ms)" if seen["failed"] else ""))
    main = {outcome.detected_by}
    for r in demo.notifications():
        if r.get("received_s", 0.0) >= injected_at and r.get("alertname") not in main:
            outcome.timeline.add(r["received_s"], NOTE, f"also received: {r['alertname']} "
                                 f"{r.get('labels', {}).get('job', '')} {r['status']} (this "
                                 "fault's, or an earlier one's)")
