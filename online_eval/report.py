"""The online evaluation report: one row per arm, and each arm against a reference arm.

Pure: built from the join's per-arm outcomes (``online_eval.join``) and the per-arm facts
of the served records (``ArmServing``, filled by ``online_eval.source.ServedTally``).
Shares are fractions (0..1) in ``to_dict``, percentages in the text forms; ``None`` where
there is nothing to divide by.

The reference arm is the one named, or by default the arm whose served model versions
are all of the popularity baseline (exactly one such arm; otherwise no comparison, and a
note says to name one). Each other arm's take rate is compared with the reference's by
the two-proportion z-test of ``online_eval.stats``; the verdict says in words whether the
difference is significant at 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from online_eval.join import UNASSIGNED, ArmOutcome, OnlineEvalError
from online_eval.stats import (
    ALPHA,
    ProportionTest,
    two_proportion_test,
    wilson_interval,
)
from recommender.versions import model_name

BASELINE_MODEL = "popularity"
"""Model name of the baseline (``recommender.training.pipeline.BASELINE``; not imported, that
module brings the training stack with it)."""


@dataclass(frozen=True)
class ArmServing:
    """What the service's own records say of one arm. ``users``: users whose latest
    record is in this arm; ``answers``: records; latencies in milliseconds (nearest rank,
    over a uniform sample beyond ``source.RESERVOIR`` records); ``model_versions``: every
    version seen, sorted."""

    users: int
    answers: int
    fallbacks: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    model_versions: tuple[str, ...]

    @property
    def fallback_share(self) -> float | None:
        return self.fallbacks / self.answers if self.answers else None


@dataclass(frozen=True)
class ArmRow:
    """One arm: the log's outcomes and, when its records exist, the service's facts."""

    arm: str
    outcome: ArmOutcome
    serving: ArmServing | None

    def to_dict(self) -> dict[str, Any]:
        o, s = self.outcome, self.serving
        low, high = wilson_interval(o.taken, o.eligible)
        return {
            "arm": self.arm, "requests": o.requests, "successes": o.successes,
            "eligible": o.eligible, "censored": o.censored, "taken": o.taken,
            "take_rate": o.take_rate, "take_rate_ci95": [low, high] if o.eligible else None,
            "minutes": o.minutes, "minutes_per_eligible": o.minutes / o.eligible if o.eligible else None,
            "ratings": o.ratings, "mean_rating": o.mean_rating,
            "users": s.users if s else None, "answers": s.answers if s else None,
            "fallback_share": s.fallback_share if s else None,
            "latency_p50_ms": s.latency_p50_ms if s else None,
            "latency_p99_ms": s.latency_p99_ms if s else None,
            "model_versions": list(s.model_versions) if s else [],
        }


@dataclass(frozen=True)
class Comparison:
    """``arm``'s take rate minus ``reference``'s, tested (``test.diff`` = arm - reference)."""

    arm: str
    reference: str
    test: ProportionTest

    def verdict(self) -> str:
        t = self.test
        if t.diff is None or t.ci_low is None or t.ci_high is None or t.p_value is None:
            return (f"{self.arm} vs {self.reference}: cannot compare, an arm has no eligible "
                    f"recommendations")
        words = "significant" if t.significant() else "not significant"
        return (f"{self.arm} vs {self.reference}: take rate {t.diff * 100:+.2f} points "
                f"(95% CI {t.ci_low * 100:+.2f} to {t.ci_high * 100:+.2f}), z = {t.z:.2f}, "
                f"p = {t.p_value:.3g}: {words} at {ALPHA:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "reference": self.reference, "metric": "take_rate",
                **self.test.to_dict(), "significant": self.test.significant(),
                "verdict": self.verdict()}


@dataclass(frozen=True)
class OnlineReport:
    """Per-arm rows, comparisons against ``reference`` and the run's parameters."""

    window_min: float
    follow_up_min: float
    server: str | None
    since: datetime | None
    until: datetime | None
    reference: str | None
    rows: list[ArmRow]
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, outcomes: dict[str, ArmOutcome], serving: dict[str, ArmServing], *,
              window: timedelta, follow_up: timedelta, reference: str | None = None,
              server: str | None = None, since: datetime | None = None,
              until: datetime | None = None, notes: list[str] | None = None) -> OnlineReport:
        """Rows for every arm in either source (``UNASSIGNED`` last); ``OnlineEvalError``
        when a named ``reference`` is not one of them."""
        names = sorted(set(outcomes) | set(serving), key=lambda a: (a == UNASSIGNED, a))
        rows = [ArmRow(a, outcomes.get(a, ArmOutcome()), serving.get(a)) for a in names]
        notes = list(notes or [])
        if reference is not None and reference not in names:
            raise OnlineEvalError(f"reference arm {reference!r} not found; arms: {', '.join(names)}")
        if reference is None:
            baseline = [a for a, s in serving.items() if s.model_versions
                        and all(model_name(v) == BASELINE_MODEL for v in s.model_versions)]
            if len(baseline) == 1:
                reference = baseline[0]
            else:
                notes.append(f"no comparison: {len(baseline)} arms served only the "
                             f"{BASELINE_MODEL} baseline; name the reference arm")
        comparisons = [] if reference is None else [
            Comparison(r.arm, reference, two_proportion_test(
                r.outcome.taken, r.outcome.eligible,
                outcomes.get(reference, ArmOutcome()).taken,
                outcomes.get(reference, ArmOutcome()).eligible))
            for r in rows if r.arm not in (reference, UNASSIGNED)]
        return cls(window.total_seconds() / 60, follow_up.total_seconds() / 60, server, since,
                   until, reference, rows, comparisons, notes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO text)."""
        return {"window_min": self.window_min, "follow_up_min": self.follow_up_min,
                "server": self.server,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "reference": self.reference, "arms": [r.to_dict() for r in self.rows],
                "comparisons": [c.to_dict() for c in self.comparisons], "notes": self.notes}

    # -- text ------------------------------------------------------------------------

    _COLUMNS = ("arm", "users", "requests", "eligible", "censored", "taken",
                "take rate [95% CI]", "min/list", "rated", "mean stars", "fallback",
                "p50 ms", "p99 ms", "models")

    def _cells(self) -> list[list[str]]:
        out = []
        for row in self.rows:
            d = row.to_dict()
            ci = d["take_rate_ci95"]
            rate = "-" if ci is None else f"{d['take_rate']:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"
            models = sorted({model_name(v) or v for v in d["model_versions"]})
            out.append([row.arm, _num(d["users"]), _num(d["requests"]), _num(d["eligible"]),
                        _num(d["censored"]), _num(d["taken"]), rate, _num(d["minutes_per_eligible"], ".1f"),
                        _num(d["ratings"]), _num(d["mean_rating"], ".2f"),
                        _num(d["fallback_share"], ".1%"), _num(d["latency_p50_ms"], ".1f"),
                        _num(d["latency_p99_ms"], ".1f"), ",".join(models) or "-"])
        return out

    def _header(self) -> str:
        span = f"{self.since.isoformat() if self.since else 'start'} to " \
               f"{self.until.isoformat() if self.until else 'end'}"
        return (f"Online evaluation: window {self.window_min:g} min, follow-up "
                f"{self.follow_up_min:g} min, server {self.server or 'any'}, {span}, "
                f"reference arm {self.reference or 'none'}")

    def format_table(self) -> str:
        """Plain text for the terminal: header, aligned table, verdicts, notes."""
        cells = [list(self._COLUMNS), *self._cells()]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self._COLUMNS))]
        lines = [self._header(), ""]
        last = len(widths) - 1  # names (first and last column) left, numbers right
        lines += ["  ".join(c.ljust(w) if i in (0, last) else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in cells]
        lines += [""] + [c.verdict() for c in self.comparisons]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_markdown(self) -> str:
        """A markdown section: header line, table, verdicts and notes as lists."""
        lines = [f"**{self._header()}**", "", "| " + " | ".join(self._COLUMNS) + " |",
                 "|" + "---|" * len(self._COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in self._cells()]
        lines += [""] + [f"- {c.verdict()}" for c in self.comparisons]
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _num(value: float | None, spec: str = ",") -> str:
    """``value`` formatted, or "-" when there is none."""
    return "-" if value is None else format(value, spec)
