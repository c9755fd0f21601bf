"""Continuous online metrics, the pure core: the event log and the served records folded
into running counters per arm and model version, as graders and the team read them.

``LiveMetrics`` is fed served records (``served``: which arm and model version each user
was last served) and parsed log events (``add``), in the order a reader gets them, and
keeps, per label ``arm|version`` (``unassigned`` for users without a served record):

- requests by the grader's outcome (``movierec.grading.classify``: success, late, ...);
- the join's outcomes (``online_eval.join``: lists, eligible, taken within the window,
  minutes watched and ratings during the follow-up) and the films started (plays), from
  which the license cost and the cost per play and per list are computed with the
  movies' costs;
- personalized lists: a success whose list differs from the most common list of its
  *minute* and label (the graders use the clock hour; a minute bounds the memory of a
  process that runs for weeks, and says the same within a few points);
- availability: every closed minute of event time is up or down by the grader's rule
  (``movierec.grading.minute_down``), counted overall.

Everything is a running total, exported as Prometheus counters (``online_eval.monitor``):
per-minute figures are ``increase(...[1m])`` of them, the 7-day availability is
``increase`` over 7 days of up minutes over all minutes. ``state``/``restore`` give the
whole of it as JSON, so a restarted process goes on from its checkpoint with the Kafka
offsets saved alongside: nothing counted twice, no window lost.

Users' labels are kept for ``label_ttl_ms`` of served-record time after their last record
(swept every quarter of it, and never ahead of the log's own Kafka timestamps, see
``log_written``): a log line follows its answer by seconds, so memory holds the active
users only. A user served again in a newer version before their earlier line was read
counts that line in the newer label (a catch-up's small blur).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from movierec.grading import DEFAULT_DEADLINE_MS, DEFAULT_DOWN_THRESHOLD, classify, minute_down
from movierec.wire import Rate, Recommendation, Watch
from online_eval.join import (
    DEFAULT_FOLLOW_UP,
    DEFAULT_LATENESS,
    DEFAULT_WINDOW,
    UNASSIGNED,
    ArmOutcome,
    OutcomeJoin,
)
from recommender.serving.telemetry import ServedRecord

UNKNOWN_VERSION = "-"
_MINUTE = timedelta(minutes=1)


def label(arm: str, version: str | None) -> str:
    return f"{arm}|{version or UNKNOWN_VERSION}"


@dataclass
class LabelCounts:
    """The running totals of one ``arm|version``, outside the join's own."""

    outcomes: Counter[str] = field(default_factory=Counter)
    personalized: int = 0
    judged: int = 0
    """Successes whose minute has closed (the personalized share's denominator)."""


class LiveMetrics:
    """The running totals (module docstring). Feed ``served`` and ``add``; read
    ``totals``; checkpoint with ``state``/``restore``."""

    def __init__(self, *, deadline_ms: int = DEFAULT_DEADLINE_MS,
                 down_threshold: float = DEFAULT_DOWN_THRESHOLD,
                 window: timedelta = DEFAULT_WINDOW, follow_up: timedelta = DEFAULT_FOLLOW_UP,
                 lateness: timedelta = DEFAULT_LATENESS,
                 label_ttl_ms: int = 3_600_000) -> None:
        self.deadline_ms, self.down_threshold = deadline_ms, down_threshold
        self.lateness, self.label_ttl_ms = lateness, label_ttl_ms
        self.labels: dict[int, tuple[str, int]] = {}  # user -> (label, served time ms)
        self.join = OutcomeJoin(_Labels(self.labels), window=window, follow_up=follow_up,
                                lateness=lateness)
        self.counts: dict[str, LabelCounts] = {}
        self.minutes_up = 0
        self.minutes_down = 0
        self._minutes: dict[datetime, list[int]] = {}  # open minute -> [requests, successes]
        self._lists: dict[tuple[datetime, str], Counter[tuple[str, ...]]] = {}
        self._served_clock = 0
        self._log_clock = 0  # the latest Kafka timestamp of a log line (0: not told)
        self._sources: dict[int, datetime] = {}  # partition -> latest event time
        self._closed: datetime | None = None  # minutes before this one are judged
        self._watermark: datetime | None = None  # the slowest partition's clock
        self.late_lines = 0
        """Recommendation lines whose minute had been judged when they arrived (counted
        in their label's outcomes, not in availability)."""

    # -- feeding ----------------------------------------------------------------------------

    def log_written(self, written_ms: int) -> None:
        """The Kafka timestamp of a log line just read: labels are only forgotten once
        the log too has moved past them (the served topic may be read ahead of the log,
        in a catch-up, and its users' lines must still find their arm)."""
        if written_ms > self._log_clock:
            self._log_clock = written_ms

    def served(self, record: ServedRecord) -> None:
        self.labels[record.user_id] = (label(record.arm, record.model_version), record.time_ms)
        if record.time_ms > self._served_clock + self.label_ttl_ms // 4:
            self._served_clock = record.time_ms
            now = min(record.time_ms, self._log_clock) if self._log_clock else record.time_ms
            cutoff = now - self.label_ttl_ms
            for user in [u for u, (_, t) in self.labels.items() if t < cutoff]:
                del self.labels[user]

    def expect_sources(self, sources: list[int]) -> None:
        """The partitions the log is read from: no minute closes until each has been
        heard from (a partition not yet read must not be overtaken). A partition that
        never gets a line holds every minute open: a live log's partitions all move."""
        for source in sources:
            self._sources.setdefault(source, datetime.min)

    def add(self, event: object, source: int | None = None) -> None:
        """One log event; ``source`` is the Kafka partition it came from, when the log is
        read from several at once (minutes then close on the slowest partition's clock,
        the watermark, so a partition read behind the others loses nothing)."""
        if (source is not None and isinstance(event, Recommendation | Watch | Rate)
                and event.time > self._sources.get(source, datetime.min)):
            self._sources[source] = event.time
        if isinstance(event, Recommendation):
            name = self.labels.get(event.user_id, (UNASSIGNED, 0))[0]
            outcome = classify(event, self.deadline_ms)
            self._counts(name).outcomes[outcome] += 1
            minute = event.time.replace(second=0, microsecond=0)
            if self._closed is not None and minute < self._closed:
                self.late_lines += 1  # its minute was judged already: never judged twice
                self._join(event)
                return
            tally = self._minutes.setdefault(minute, [0, 0])
            tally[0] += 1
            tally[1] += outcome == "success"
            if outcome == "success":
                self._lists.setdefault((minute, name), Counter())[event.items] += 1
        self._join(event)

    def _join(self, event: object) -> None:
        if not isinstance(event, Recommendation | Watch | Rate):
            return
        if not self._sources:  # one ordered stream: the join's own clock sets the pace
            before = self.join.clock
            self.join.add(event)
            if self.join.clock is not None and self.join.clock != before:
                self._close_minutes(self.join.clock - self.lateness)
            return
        self.join.add(event, sweep=False)
        watermark = min(self._sources.values())
        if watermark > (self._watermark or datetime.min):
            self._watermark = watermark
            self.join.advance(watermark)
            self._close_minutes(watermark - self.lateness)

    def _counts(self, name: str) -> LabelCounts:
        counts = self.counts.get(name)
        if counts is None:
            counts = self.counts[name] = LabelCounts()
        return counts

    def _close_minutes(self, limit: datetime) -> None:
        limit = limit.replace(second=0, microsecond=0)
        if self._closed is None or limit > self._closed:
            self._closed = limit
        for minute in [m for m in self._minutes if m + _MINUTE <= limit]:
            requests, successes = self._minutes.pop(minute)
            if minute_down(requests, successes, self.down_threshold):
                self.minutes_down += 1
            else:
                self.minutes_up += 1
        for key in [k for k in self._lists if k[0] + _MINUTE <= limit]:
            lists = self._lists.pop(key)
            total = sum(lists.values())
            common = max(lists.values())
            counts = self._counts(key[1])
            counts.judged += total
            # a list is "the common one" only when served at least twice (the graders' rule)
            counts.personalized += total - (common if common >= 2 else 0)

    # -- reading ----------------------------------------------------------------------------

    def totals(self, cost_of: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
        """Per label: request outcomes, the join's outcomes, plays and license cost (with
        ``cost_of``: movie -> USD per play), personalized and judged lists."""
        out: dict[str, dict[str, float]] = {}
        names = set(self.counts) | set(self.join.outcomes)
        for name in sorted(names):
            counts = self.counts.get(name, LabelCounts())
            joined = self.join.outcomes.get(name, ArmOutcome())
            plays = self.join.plays.get(name, Counter())
            row: dict[str, float] = {f"requests_{k}": float(v) for k, v in counts.outcomes.items()}
            row |= {k: float(v) for k, v in vars(joined).items()}
            row |= {"plays": float(sum(plays.values())),
                    "cost_usd": float(sum(n * (cost_of or {}).get(m, 0.0) for m, n in plays.items())),
                    "personalized": float(counts.personalized), "judged": float(counts.judged)}
            out[name] = row
        return out

    def movies_played(self) -> set[str]:
        return {m for c in self.join.plays.values() for m in c}

    # -- checkpoint -------------------------------------------------------------------------

    def state(self) -> dict:
        return {"join": self.join.state(),
                "labels": {str(u): [n, t] for u, (n, t) in self.labels.items()},
                "counts": {n: {"outcomes": dict(c.outcomes), "personalized": c.personalized,
                               "judged": c.judged} for n, c in self.counts.items()},
                "minutes_up": self.minutes_up, "minutes_down": self.minutes_down,
                "open_minutes": {m.isoformat(): v for m, v in self._minutes.items()},
                "open_lists": [[m.isoformat(), n, [[list(k), v] for k, v in c.items()]]
                               for (m, n), c in self._lists.items()],
                "served_clock": self._served_clock, "late_lines": self.late_lines,
                "log_clock": self._log_clock,
                "sources": {str(p): t.isoformat() for p, t in self._sources.items()},
                "closed": None if self._closed is None else self._closed.isoformat(),
                "watermark": None if self._watermark is None else self._watermark.isoformat()}

    def restore(self, state: dict) -> None:
        self.labels.clear()
        self.labels.update({int(u): (n, int(t)) for u, (n, t) in state["labels"].items()})
        self.join.restore(state["join"])
        self.counts = {n: LabelCounts(Counter(c["outcomes"]), int(c["personalized"]),
                                      int(c["judged"])) for n, c in state["counts"].items()}
        self.minutes_up, self.minutes_down = int(state["minutes_up"]), int(state["minutes_down"])
        self._minutes = {datetime.fromisoformat(m): list(v)
                         for m, v in state["open_minutes"].items()}
        self._lists = {(datetime.fromisoformat(m), n): Counter({tuple(k): v for k, v in c})
                       for m, n, c in state["open_lists"]}
        self._served_clock = int(state["served_clock"])
        self._log_clock = int(state.get("log_clock", 0))
        self.late_lines = int(state["late_lines"])
        self._sources = {int(p): datetime.fromisoformat(t) for p, t in state["sources"].items()}
        self._closed = None if state["closed"] is None else datetime.fromisoformat(state["closed"])
        self._watermark = (None if state["watermark"] is None
                           else datetime.fromisoformat(state["watermark"]))


class _Labels(Mapping[int, str]):
    """The join's user -> arm mapping: each user's current label."""

    def __init__(self, labels: dict[int, tuple[str, int]]) -> None:
        self._labels = labels

    def __getitem__(self, user: int) -> str:
        return self._labels[user][0]

    def __iter__(self) -> Iterator[int]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)
