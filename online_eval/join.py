"""The join of experiment arms with what users did next: per-arm outcomes of served lists.

Pure: ``OutcomeJoin`` is fed parsed log events (``Recommendation``, ``Watch``, ``Rate``;
others are ignored) and a mapping user id -> arm, and counts per arm. All times are the
log's *event* time (the simulated clock in simulation); the served records' wall-clock
times are never compared with them.

Definitions (docs/online_eval.md has them with examples):

- *request*: a recommendation line of the arm's users, inside ``[since, until)`` and from
  ``server`` when given (others are counted in ``filtered``). Users the mapping does not
  know go to the arm ``UNASSIGNED``, so they are counted, never dropped.
- *success*: status 200 with at most 20 ids (the parser already rejected malformed lists).
  An empty list is a success that cannot be taken.
- *taken*: the user starts watching a listed movie within ``window`` after the list: a
  watch line of a listed movie at time t, ``rec <= t <= rec + window``, whose minute index
  m puts the film's start at or after the list: ``t - m minutes >= rec - START_SLACK``.
  The log writes one line per minute watched, so t - m is when the film started; a film
  begun before the list and continued after it is not taken, and a lost minute-0 line does
  not lose the take. When several open lists of a user hold the movie, the latest gets it.
- *follow-up*: for each taken movie, its minutes watched (highest minute index seen + 1,
  as the consumer's feature: duplicated lines change nothing) and its rating (the latest;
  a tie goes to the higher score), both up to ``follow_up`` after the list. ``follow_up``
  is longer than ``window`` on purpose: a 30-minute horizon would cut every film at 30
  minutes and keep only the ratings of films abandoned early (a rating follows the film).
- *eligible*: a success whose window closed within the log (``rec + window <= end``,
  the latest event time). The log's end is a hard cut: younger successes are *censored*,
  counted but left out of every outcome, since they could not have been taken yet.

Memory is bounded: only lists still inside their window or follow-up are held, at most
``max_pending`` per user (the oldest is closed early beyond that, counted in
``overflow``). Lists close when the clock (the latest event time seen) passes their
horizon plus ``lateness``: events of one user arrive in time order (the log is keyed by
user), but partitions interleave, so one user's events may lag the clock a little.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from movierec.errors import MovierecError
from movierec.wire import MAX_ITEMS, Rate, Recommendation, Watch

UNASSIGNED = "unassigned"
"""The arm of users with no served record (e.g. served before telemetry existed)."""
DEFAULT_WINDOW = timedelta(minutes=30)
DEFAULT_FOLLOW_UP = timedelta(hours=4)
"""Long enough for a long film and the rating written after it."""
DEFAULT_LATENESS = timedelta(hours=1)
MAX_PENDING = 4
START_SLACK = timedelta(minutes=1)
"""Tolerance of the film-start check: stamps of the request line and of the first watch
line are written by different clients."""
_MINUTE = timedelta(minutes=1)


class OnlineEvalError(MovierecError):
    """Online evaluation cannot run as asked: bad options, no broker, missing or empty
    topics, an unknown reference arm. The message says which."""


@dataclass
class ArmOutcome:
    """What one arm's users did after its lists (module docstring for the definitions).

    ``minutes`` sums the minutes watched of taken movies (eligible lists only);
    ``ratings``/``rating_sum`` count and add up the stars of taken movies.
    """

    requests: int = 0
    successes: int = 0
    eligible: int = 0
    censored: int = 0
    taken: int = 0
    minutes: int = 0
    ratings: int = 0
    rating_sum: int = 0

    @property
    def take_rate(self) -> float | None:
        """taken / eligible, None without eligible lists."""
        return self.taken / self.eligible if self.eligible else None

    @property
    def mean_rating(self) -> float | None:
        return self.rating_sum / self.ratings if self.ratings else None


@dataclass(slots=True, eq=False)
class _Open:
    """One successful list still inside its window or follow-up."""

    time: datetime
    user: int
    arm: str
    items: frozenset[str]
    watched: dict[str, int] = field(default_factory=dict)  # taken movie -> highest minute
    stars: dict[str, tuple[datetime, int]] = field(default_factory=dict)  # -> (time, stars)
    closed: bool = False


class OutcomeJoin:
    """Counts per-arm outcomes from events fed in time order (per user); see the module
    docstring. Feed with ``add``; ``finish`` closes what is open and returns the counts."""

    def __init__(self, arm_of: Mapping[int, str], *, window: timedelta = DEFAULT_WINDOW,
                 follow_up: timedelta = DEFAULT_FOLLOW_UP, since: datetime | None = None,
                 until: datetime | None = None, server: str | None = None,
                 lateness: timedelta = DEFAULT_LATENESS, max_pending: int = MAX_PENDING,
                 per_user: bool = False) -> None:
        if window <= timedelta(0) or follow_up < window:
            raise OnlineEvalError(f"need 0 < window <= follow-up, got {window} and {follow_up}")
        if lateness < timedelta(0) or max_pending < 1:
            raise OnlineEvalError(f"need lateness >= 0 and max_pending >= 1, got {lateness} "
                                  f"and {max_pending}")
        if since is not None and until is not None and not since < until:
            raise OnlineEvalError(f"since {since.isoformat()} must be before until {until.isoformat()}")
        self.arm_of = arm_of
        self.window, self.follow_up, self.lateness = window, follow_up, lateness
        self.since, self.until, self.server = since, until, server
        self.max_pending = max_pending
        self.outcomes: dict[str, ArmOutcome] = {}
        self.per_user: dict[str, dict[int, list[int]]] | None = {} if per_user else None
        """With ``per_user``: arm -> user -> [eligible lists, taken lists], the unit of the
        canary's sequential test (``online_eval.sequential``)."""
        self.plays: dict[str, Counter[str]] = {}
        """Arm -> movie -> films started from the arm's eligible lists (what the license
        cost of a play is counted on)."""
        self.filtered = 0   # requests outside since/until or from another server
        self.overflow = 0   # lists closed early: the user got more than max_pending newer ones
        self.clock: datetime | None = None
        self._open: dict[int, list[_Open]] = {}  # per user, oldest first
        self._in_window: deque[_Open] = deque()  # arrival order, swept by the clock
        self._following: deque[_Open] = deque()  # taken lists past their window

    @property
    def pending(self) -> int:
        """Lists held open now (the join's memory)."""
        return sum(len(lists) for lists in self._open.values())

    def add(self, event: object, *, sweep: bool = True) -> None:
        """Take one event; kinds other than Recommendation, Watch and Rate are ignored.
        ``sweep=False``: the caller closes lists itself with ``advance`` (a reader of
        several partitions at once, whose slowest partition sets the pace)."""
        if not isinstance(event, Recommendation | Watch | Rate):
            return
        if self.clock is None or event.time > self.clock:
            self.clock = event.time
            if sweep:
                self._sweep(self.clock - self.lateness)
        if isinstance(event, Recommendation):
            self._recommendation(event)
        elif isinstance(event, Watch):
            self._watch(event)
        else:
            self._rate(event)

    def state(self) -> dict:
        """Everything the join holds, as plain JSON (a checkpoint of a long-running
        reader, ``online_eval.live``); ``restore`` takes it back. Per-user tallies are
        not kept: a checkpointed join counts arms, not users."""
        lists = [{"time": o.time.isoformat(), "user": o.user, "arm": o.arm,
                  "items": sorted(o.items), "watched": o.watched,
                  "stars": {m: [t.isoformat(), r] for m, (t, r) in o.stars.items()}}
                 for held in self._open.values() for o in held]
        return {"clock": None if self.clock is None else self.clock.isoformat(),
                "filtered": self.filtered, "overflow": self.overflow,
                "outcomes": {arm: vars(o).copy() for arm, o in self.outcomes.items()},
                "plays": {arm: dict(c) for arm, c in self.plays.items()}, "open": lists}

    def restore(self, state: dict) -> None:
        """Take back a ``state()``: the open lists go on where they were."""
        self.clock = None if state["clock"] is None else datetime.fromisoformat(state["clock"])
        self.filtered, self.overflow = int(state["filtered"]), int(state["overflow"])
        self.outcomes = {arm: ArmOutcome(**o) for arm, o in state["outcomes"].items()}
        self.plays = {arm: Counter(c) for arm, c in state["plays"].items()}
        self._open.clear()
        self._in_window.clear()
        self._following.clear()
        for d in sorted(state["open"], key=lambda d: d["time"]):
            opened = _Open(datetime.fromisoformat(d["time"]), int(d["user"]), d["arm"],
                           frozenset(d["items"]), dict(d["watched"]),
                           {m: (datetime.fromisoformat(t), int(r))
                            for m, (t, r) in d["stars"].items()})
            self._open.setdefault(opened.user, []).append(opened)
            # a taken list past its window moves on to the follow-up at the next sweep
            self._in_window.append(opened)

    def user_take_rates(self, arm: str) -> list[float]:
        """Each of the arm's users' share of eligible lists taken (needs ``per_user``)."""
        if self.per_user is None:
            raise OnlineEvalError("per-user take rates need OutcomeJoin(per_user=True)")
        return [taken / eligible for eligible, taken in self.per_user.get(arm, {}).values()]

    def advance(self, watermark: datetime) -> None:
        """Close what ended before ``watermark - lateness`` (see ``add(sweep=False)``)."""
        self._sweep(watermark - self.lateness)

    def finish(self, end: datetime | None = None) -> dict[str, ArmOutcome]:
        """Close every open list, eligible when its window ended by ``end`` (default: the
        latest event time), and return the outcomes by arm name (sorted)."""
        end = self.clock if end is None else end
        for lists in list(self._open.values()):
            for opened in list(lists):
                self._close(opened, eligible=end is not None and opened.time + self.window <= end)
        self._in_window.clear()
        self._following.clear()
        return dict(sorted(self.outcomes.items()))

    # -- events ------------------------------------------------------------------------

    def _recommendation(self, event: Recommendation) -> None:
        if ((self.since is not None and event.time < self.since)
                or (self.until is not None and event.time >= self.until)
                or (self.server is not None and event.server != self.server)):
            self.filtered += 1
            return
        arm = self.arm_of.get(event.user_id, UNASSIGNED)
        outcome = self._outcome(arm)
        outcome.requests += 1
        if event.status != 200 or len(event.items) > MAX_ITEMS:
            return
        outcome.successes += 1
        held = self._open.get(event.user_id)
        if held is not None and len(held) >= self.max_pending:
            self.overflow += 1
            self._close(held[0], eligible=True)
        opened = _Open(event.time, event.user_id, arm, frozenset(event.items))
        self._open.setdefault(event.user_id, []).append(opened)
        self._in_window.append(opened)

    def _watch(self, event: Watch) -> None:
        held = self._open.get(event.user_id)
        if not held:
            return
        movie, t = event.movie_id, event.time
        for opened in reversed(held):  # a film already taken: follow it up
            if movie in opened.watched:
                if t <= opened.time + self.follow_up and event.minute > opened.watched[movie]:
                    opened.watched[movie] = event.minute
                return
        started = t - event.minute * _MINUTE
        for opened in reversed(held):
            if (movie in opened.items and opened.time <= t <= opened.time + self.window
                    and started >= opened.time - START_SLACK):
                opened.watched[movie] = event.minute
                return

    def _rate(self, event: Rate) -> None:
        for opened in reversed(self._open.get(event.user_id, ())):
            if event.movie_id in opened.watched:
                if opened.time <= event.time <= opened.time + self.follow_up:
                    before = opened.stars.get(event.movie_id)
                    if before is None or (event.time, event.rating) > before:
                        opened.stars[event.movie_id] = (event.time, event.rating)
                return

    # -- bookkeeping -------------------------------------------------------------------

    def _outcome(self, arm: str) -> ArmOutcome:
        outcome = self.outcomes.get(arm)
        if outcome is None:
            outcome = self.outcomes[arm] = ArmOutcome()
        return outcome

    def _sweep(self, limit: datetime) -> None:
        """Close lists whose horizon ends before ``limit``; a taken list moves on to wait
        for its follow-up. Both queues are in arrival order, near enough time order."""
        while self._in_window and self._in_window[0].time + self.window < limit:
            opened = self._in_window.popleft()
            if opened.closed:
                continue
            if opened.watched:
                self._following.append(opened)
            else:
                self._close(opened, eligible=True)
        while self._following and self._following[0].time + self.follow_up < limit:
            opened = self._following.popleft()
            if not opened.closed:
                self._close(opened, eligible=True)

    def _close(self, opened: _Open, *, eligible: bool) -> None:
        opened.closed = True
        held = self._open[opened.user]
        held.remove(opened)
        if not held:
            del self._open[opened.user]
        outcome = self._outcome(opened.arm)
        if not eligible:
            outcome.censored += 1
            return
        outcome.eligible += 1
        outcome.taken += bool(opened.watched)
        if self.per_user is not None:
            tally = self.per_user.setdefault(opened.arm, {}).setdefault(opened.user, [0, 0])
            tally[0] += 1
            tally[1] += bool(opened.watched)
        if opened.watched:
            self.plays.setdefault(opened.arm, Counter()).update(opened.watched.keys())
        outcome.minutes += sum(m + 1 for m in opened.watched.values())
        outcome.ratings += len(opened.stars)
        outcome.rating_sum += sum(stars for _, stars in opened.stars.values())

