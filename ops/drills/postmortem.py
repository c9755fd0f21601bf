"""A drill's result and its postmortem skeleton (markdown) and timeline (JSON): pure.

The skeleton has what the drill knows (summary, impact as measured, the timeline with
the exact commands, the durations) and empty headings for what people add (root cause,
what went well, what to improve, action items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from ops.drills.core import ACTION, RUNBOOK, Scenario, Timeline, durations


@dataclass
class Outcome:
    """What one drill found: its timeline, which alert detected the fault (None: none in
    time), and the problems that make it fail (empty: it passed)."""

    scenario: Scenario
    timeline: Timeline
    detected_by: str | None = None
    problems: list[str] = field(default_factory=list)
    impact: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        s = self.scenario
        return {"scenario": s.name, "fault": s.fault, "alerts": list(s.alerts),
                "recovery": s.recovery, "probe": s.probe,
                "runbook": f"docs/runbook.md#{s.runbook}", "detected_by": self.detected_by,
                "passed": self.passed, "problems": list(self.problems),
                "impact": list(self.impact), **durations(self.timeline),
                "timeline": [{"at_s": round(e.at_s, 3), "at": _clock(e.at_s), "kind": e.kind,
                              "text": e.text, "command": e.command}
                             for e in self.timeline.sorted()]}


def _clock(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f} s"


def markdown(outcome: Outcome) -> str:
    """The postmortem skeleton of one drill."""
    s, result = outcome.scenario, outcome.to_dict()
    events = outcome.timeline.sorted()
    start = events[0].at_s if events else 0.0
    how = ("the runbook's commands (run by the drill, listed in the timeline)"
           if s.recovery == RUNBOOK else "automatic (no command)")
    lines = [
        f"# Postmortem (drill): {s.name}",
        "",
        f"Drill of {_clock(start)[:10]}, `movierec drill {s.name}`. "
        + ("It **passed**." if outcome.passed else "It **failed**: " + "; ".join(outcome.problems)),
        "",
        "## Summary",
        "",
        f"- Fault: {s.fault}.",
        f"- Detected by: {outcome.detected_by or 'nothing within ' + f'{s.detect_bound_s:.0f} s'}"
        f" (expected: {', '.join(s.alerts)}).",
        f"- Recovery: {how}; runbook section `docs/runbook.md#{s.runbook}`.",
        f"- Recovered means: {s.probe}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| time to detect (fault -> alert received) | {_seconds(result['time_to_detect_s'])} |",
        f"| time to recover (fault -> healthy again) | {_seconds(result['time_to_recover_s'])} |",
        f"| time to resolve (fault -> resolution received) | "
        f"{_seconds(result['time_to_resolve_s'])} |",
        "",
        "## Impact",
        "",
        *([f"- {line}" for line in outcome.impact] or ["- (to fill in)"]),
        "",
        "## Timeline (UTC)",
        "",
        "| time | +s | event | what happened |",
        "|---|---|---|---|",
    ]
    injected = next((e.at_s for e in events if e.kind == "injected"), start)
    for e in events:
        text = e.text.replace("|", "\\|")
        if e.command:
            text += f": `{e.command}`"
        lines.append(f"| {_clock(e.at_s)[11:]} | {e.at_s - injected:+.1f} | {e.kind} | {text} |")
    commands = [e.command for e in events if e.kind == ACTION and e.command]
    lines += ["", "## Recovery commands", ""]
    lines += [f"    {c}" for c in commands] or ["None: the system recovers by itself."]
    lines += ["", "## Root cause", "", "(to fill in)", "",
              "## What went well", "", "- (to fill in)", "",
              "## What to improve", "", "- (to fill in)", "",
              "## Action items", "", "| action | owner | due |", "|---|---|---|",
              "| (to fill in) | | |", ""]
    return "\n".join(lines)
