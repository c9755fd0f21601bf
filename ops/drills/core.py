"""The drills' pure core: scenarios as data, the timeline of one drill, what it measures.

Times are Unix seconds (float) throughout. A drill's clock starts when the fault is
injected: *time to detect* is the first notification of one of the scenario's alerts
that the receiver recorded, minus the injection; *time to recover* is the first moment
the scenario's health probe passed again, minus the injection; *time to resolve* is the
receiver's record of that alert's resolution, minus the injection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

AUTOMATIC = "automatic"
RUNBOOK = "runbook"
"""How a scenario recovers: by itself, or by the runbook's commands (the drill runs them)."""

# the kinds of timeline events, in the order a drill usually records them
STARTED, INJECTED, FIRED, RECEIVED = "started", "injected", "alert_fired", "alert_received"
ACTION, RECOVERED, RESOLVED, RESTORED = "recovery_action", "recovered", "alert_resolved", "restored"
NOTE, FAILED = "note", "failed"


@dataclass(frozen=True)
class Scenario:
    """One drill, as data.

    - ``fault``: what is injected, in words; ``recovery``: AUTOMATIC or RUNBOOK;
    - ``alerts``: the alert names that detect it (the first to arrive counts);
    - ``probe``: what "recovered" means, in words (the adapter in ``faults`` checks it);
    - ``runbook``: the runbook section (anchor in docs/runbook.md) the fix comes from;
    - ``detect_bound_s``, ``recover_bound_s``, ``resolve_bound_s``: how long the drill
      waits for the alert, for the probe after recovery began, and for the resolution
      after recovery (s). The rules keep their production ``for:``; these bounds only
      stop a drill that would wait forever.
    """

    name: str
    fault: str
    alerts: tuple[str, ...]
    recovery: str
    probe: str
    runbook: str
    detect_bound_s: float = 300.0
    recover_bound_s: float = 180.0
    resolve_bound_s: float = 240.0


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("serve-killed", "SIGKILL to the serving process group: gunicorn's master and "
             "every worker (killed workers alone are replaced by the master and answer "
             "again within about 5 s, too short for any alert)",
             ("MovierecTargetDown",), RUNBOOK,
             "GET /recommend answers 200 from the model path (X-Answer-Path: model)",
             "movierectargetdown", detect_bound_s=240.0),
    Scenario("redis-down", "Redis stopped (`movierec infra down redis`)",
             ("MovierecRedisBreakerOpen",), RUNBOOK,
             "GET /recommend answers from the model path again (the breaker closed)",
             "movierecredisbreakeropen", detect_bound_s=240.0),
    Scenario("consumer-stalled", "SIGSTOP to the stream consumer: the process is frozen, "
             "its metrics endpoint too", ("MovierecConsumerStalled", "MovierecTargetDown"),
             RUNBOOK, "a running consumer answers its metrics and its group's lag is back "
             "under 50 lines", "movierecconsumerstalled", detect_bound_s=360.0),
    Scenario("kafka-down", "the Kafka broker stopped (`movierec infra down kafka`)",
             ("MovierecServedRecordsFailing",), RUNBOOK,
             "the broker answers, served records are published again and the consumer's "
             "lag is back under 50 lines", "movierecservedrecordsfailing",
             detect_bound_s=300.0, recover_bound_s=240.0),
    Scenario("corrupt-model", "a copy of the champion with one artifact file corrupted, "
             "registered and promoted to champion", ("MovierecModelRejected",), RUNBOOK,
             "the champion alias names the version that serves (X-Model-Version) and it "
             "answers from the model path", "movierecmodelrejected",
             detect_bound_s=300.0, resolve_bound_s=420.0),
    Scenario("drift", "a schema change upstream: rate lines stamped in epoch milliseconds "
             "(rejected as bad_timestamp), about 20 lines/s, until the alert arrives",
             ("MovierecDriftAlarm",), AUTOMATIC, "the rejection share's drift alarm is off "
             "again (the monitor's window rolled past the injected lines)", "movierecdriftalarm",
             detect_bound_s=720.0, recover_bound_s=300.0, resolve_bound_s=300.0),
)}


@dataclass(frozen=True)
class Event:
    """One line of the timeline: when (Unix s), what kind, what happened, the exact
    command when a person would type one."""

    at_s: float
    kind: str
    text: str
    command: str | None = None


@dataclass
class Timeline:
    """The events of one drill, in the order recorded."""

    events: list[Event] = field(default_factory=list)

    def add(self, at_s: float, kind: str, text: str, command: str | None = None) -> Event:
        event = Event(at_s, kind, text, command)
        self.events.append(event)
        return event

    def first(self, kind: str) -> Event | None:
        return next((e for e in self.events if e.kind == kind), None)

    def sorted(self) -> list[Event]:
        """Events by time (stable: equal times keep their recorded order)."""
        return sorted(self.events, key=lambda e: e.at_s)


def durations(timeline: Timeline) -> dict[str, float | None]:
    """Seconds from the injection to the first alert received (``time_to_detect_s``), to
    the health probe passing again (``time_to_recover_s``) and to the alert's resolution
    (``time_to_resolve_s``); None for what did not happen (or with no injection)."""
    injected = timeline.first(INJECTED)

    def since(kind: str) -> float | None:
        event = timeline.first(kind)
        if injected is None or event is None:
            return None
        return round(event.at_s - injected.at_s, 1)

    return {"time_to_detect_s": since(RECEIVED), "time_to_recover_s": since(RECOVERED),
            "time_to_resolve_s": since(RESOLVED)}


Wanted = Mapping[str, Mapping[str, "str | tuple[str, ...]"]]
"""Alert name -> label -> the value (or any of the values) a matching alert carries."""


def find_alert(records: Iterable[Mapping], names: Sequence[str], *, status: str, since_s: float,
               labels: Wanted | None = None, fingerprint: str | None = None) -> Mapping | None:
    """The first receiver record (``ops.alerting.receiver.records``) of one of ``names``
    with ``status``, received at or after ``since_s``, carrying the labels that
    ``labels[alertname]`` asks for (an alert name absent from ``labels`` asks for none;
    a tuple allows any of its values), and, when given, with that ``fingerprint``."""
    for record in sorted(records, key=lambda r: r.get("received_s", 0.0)):
        name = str(record.get("alertname", ""))
        wanted = (labels or {}).get(name, {})
        if (name in names and record.get("status") == status
                and record.get("received_s", 0.0) >= since_s
                and (fingerprint is None or record.get("fingerprint") == fingerprint)
                and all(record.get("labels", {}).get(k) in (v if isinstance(v, tuple) else (v,))
                        for k, v in wanted.items())):
            return record
    return None


def rfc3339_s(text: str | None) -> float | None:
    """Alertmanager's ``startsAt``/``endsAt`` (RFC 3339, up to nanoseconds, ``Z`` or an
    offset) as Unix seconds; None for a missing or zero time ("0001-01-01...")."""
    if not text or text.startswith("0001-"):
        return None
    body, zone = text, "+00:00"
    if body.endswith("Z"):
        body = body[:-1]
    elif len(body) > 6 and body[-6] in "+-" and body[-3] == ":":
        body, zone = body[:-6], body[-6:]
    if "." in body:  # Python reads at most microseconds
        head, frac = body.split(".", 1)
        body = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(body + zone).timestamp()
