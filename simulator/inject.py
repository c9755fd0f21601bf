"""Fault and attack injection into the simulated event stream, with ground truth.

The course staff inject bad data on purpose (mlip-interface.md section 1); so does the
simulator, each kind switchable with a rate, and every injected item is written to a
ground-truth side file (JSON lines) so tests can check that the system detects it:

- ``malformed``: a valid line is replaced by a broken variant of one of the shapes
  below; each mutation says, by hand, which rejection reason it must get.
- ``duplicate``: a line is sent again a few lines later.
- ``reorder``: a line is held back and sent a few lines later (local reordering).
- ``schema_change``: from a point on, timestamps are written as epoch milliseconds
  (each such line is rejected as ``bad_timestamp``).
- ``shilling``: fake accounts sign up and rate one target movie with the top score,
  plus filler ratings of popular movies.

Taste drift and the popularity shift change the world's behaviour, not the lines:
see ``HistoryGenerator`` (``drift_at_s``, ``shift_at_s``). A scraping client is a
behaviour of HTTP clients, not of the log.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, Any

import numpy as np

from movierec.wire import Reason, account_line, format_time, rate_line

Line = tuple[bytes, bytes]  # (line, key)


def _fields(line: bytes) -> tuple[bytes, bytes, bytes]:
    stamp, user, request = line.split(b",", 2)
    return stamp, user, request


def _m_garbage(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    return b"\xff\xfe" + rng.bytes(int(rng.integers(5, 60))), Reason.BAD_ENCODING


def _m_empty(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    return b"", Reason.EMPTY


def _m_too_long(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    return line + b"x" * 9000, Reason.TOO_LONG


def _m_cut_fields(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    stamp, user, _ = _fields(line)
    return stamp + b"," + user, Reason.BAD_FIELD_COUNT


def _m_bad_user(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    stamp, user, request = _fields(line)
    bad = (b"user" + user, b"-" + user, user + b"x", b"")[int(rng.integers(4))]
    return b",".join((stamp, bad, request)), Reason.BAD_USER_ID


def _m_bad_time(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    _, user, request = _fields(line)
    bad = (b"2025-13-45T99:99:99", b"yesterday", b"2025-02-30T10:00:00")[int(rng.integers(3))]
    return b",".join((bad, user, request)), Reason.BAD_TIMESTAMP


def _m_unknown_kind(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    stamp, user, request = _fields(line)
    return b",".join((stamp, user, request.replace(b"GET /", b"POST /", 1))), Reason.UNKNOWN_KIND


def _m_bad_movie(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    stamp, user, request = _fields(line)
    if request.startswith(b"GET /data/m/"):
        movie, _, rest = request[12:].partition(b"/")
        return b",".join((stamp, user, b"GET /data/m/" + movie.upper() + b"/" + rest)), Reason.BAD_MOVIE_ID
    if request.startswith(b"GET /rate/"):
        movie, _, rest = request[10:].rpartition(b"=")
        return b",".join((stamp, user, b"GET /rate/" + movie.upper() + b"=" + rest)), Reason.BAD_MOVIE_ID
    return _m_cut_fields(line, rng)


def _m_truncate(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    """Cut inside the movie id, as a line truncated in transit."""
    stamp, user, request = _fields(line)
    if request.startswith(b"GET /data/m/"):
        movie = request[12:].partition(b"/")[0]
        cut = request[: 12 + max(1, len(movie) // 2)]
        return b",".join((stamp, user, cut)), Reason.BAD_MINUTE
    if request.startswith(b"GET /rate/"):
        movie = request[10:].rpartition(b"=")[0]
        cut = request[: 10 + max(1, len(movie) // 2)]
        return b",".join((stamp, user, cut)), Reason.BAD_RATING
    return _m_cut_fields(line, rng)


def _m_bad_value(line: bytes, rng: np.random.Generator, scale: int) -> tuple[bytes, Reason]:
    """A non-numeric or out-of-range rating, or a non-numeric minute."""
    stamp, user, request = _fields(line)
    if request.startswith(b"GET /rate/"):
        head = request.rpartition(b"=")[0]
        if rng.random() < 0.5:
            value = str((0, scale + 1, scale + 5, 99)[int(rng.integers(4))]).encode()
            return b",".join((stamp, user, head + b"=" + value)), Reason.RATING_OUT_OF_RANGE
        value = (b"four", b"4.5", b"", b"*****")[int(rng.integers(4))]
        return b",".join((stamp, user, head + b"=" + value)), Reason.BAD_RATING
    if request.startswith(b"GET /data/m/"):
        head = request[:-4].rpartition(b"/")[0]
        value = (b"-3", b"x", b"1e3", b"99999")[int(rng.integers(4))]
        return b",".join((stamp, user, head + b"/" + value + b".mpg")), Reason.BAD_MINUTE
    return _m_bad_user(line, rng)


def _m_bad_recommendation(line: bytes, rng: np.random.Generator) -> tuple[bytes, Reason]:
    stamp, user, _ = _fields(line)
    request = b"recommendation request team:8082, status two hundred, result: , 12 ms"
    return b",".join((stamp, user, request)), Reason.BAD_STATUS


MUTATIONS: dict[str, Callable[..., tuple[bytes, Reason]]] = {
    "garbage": _m_garbage, "empty": _m_empty, "too_long": _m_too_long,
    "cut_fields": _m_cut_fields, "bad_user": _m_bad_user, "bad_time": _m_bad_time,
    "unknown_kind": _m_unknown_kind, "bad_movie": _m_bad_movie, "truncate": _m_truncate,
    "bad_value": _m_bad_value, "bad_recommendation": _m_bad_recommendation,
}


def mutate(line: bytes, name: str, rng: np.random.Generator, rating_scale: int = 5) -> tuple[bytes, Reason]:
    """A broken variant of a valid line, with the reason a correct parser must give."""
    if name == "bad_value":
        return _m_bad_value(line, rng, rating_scale)
    return MUTATIONS[name](line, rng)


@dataclass
class InjectionPlan:
    """What to inject; rates are per line of the organic stream."""

    malformed: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    schema_change_at_h: float | None = None  # hours into the history
    shilling_accounts: int = 0
    shilling_target: str = ""                # movie id; empty: an obscure film is picked
    shilling_at_h: float = 0.0               # hours into the history
    window: int = 20                         # how far (in lines) duplicates/reordered lines move
    seed: int = 0
    rating_scale: int = 5

    @classmethod
    def parse(cls, text: str, **defaults: Any) -> InjectionPlan:
        """``"malformed=0.01,duplicate=0.02,schema_change_at_h=6"`` -> a plan; ``defaults``:
        fields set before the text's items (the seed, the rating scale)."""
        plan = cls(**defaults)
        names = {f.name: f for f in dataclasses.fields(cls)}
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, eq, value = item.partition("=")
            if not eq or name not in names:
                raise ValueError(f"bad injection item {item!r}; items are "
                                 + ", ".join(f"{n}=" for n in names))
            default = names[name].default  # every field has one; None: an optional number
            convert = float if default is None or default is dataclasses.MISSING else type(default)
            try:
                setattr(plan, name, convert(value))
            except ValueError:
                raise ValueError(f"bad value in injection item {item!r}") from None
        for rate in ("malformed", "duplicate", "reorder"):
            if not 0 <= getattr(plan, rate) <= 1:
                raise ValueError(f"{rate}= must be a rate between 0 and 1")
        if plan.malformed + plan.duplicate + plan.reorder > 1:
            raise ValueError("malformed + duplicate + reorder must not exceed 1")
        if plan.window < 2:
            raise ValueError("window= must be at least 2")
        if plan.shilling_accounts < 0:
            raise ValueError("shilling_accounts= must not be negative")
        return plan

    @property
    def active(self) -> bool:
        return bool(self.malformed or self.duplicate or self.reorder or self.shilling_accounts
                    or self.schema_change_at_h is not None)


class Injector:
    """Wraps a time-ordered (line, key) stream; writes one JSON line per injected item."""

    def __init__(self, plan: InjectionPlan, truth: IO[str] | None, start: datetime) -> None:
        self.plan = plan
        self.truth = truth
        self.start = start
        self.rng = np.random.default_rng([plan.seed, 7])
        self.counts: dict[str, int] = {}
        self.seq = 0  # index of the next line sent

    def _record(self, kind: str, **info: object) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.truth is not None:
            self.truth.write(json.dumps({"seq": self.seq, "kind": kind, **info}) + "\n")

    def _schema(self, line: bytes) -> bytes:
        stamp, rest = line.split(b",", 1)
        when = datetime.fromisoformat(stamp.decode())
        millis = int((when - datetime(1970, 1, 1)).total_seconds() * 1000)
        return str(millis).encode() + b"," + rest

    def run(self, lines: Iterator[tuple[float, bytes, bytes]]) -> Iterator[Line]:
        """Inject into a time-ordered stream of (seconds since start, line, key)."""
        plan, rng = self.plan, self.rng
        delayed: list[tuple[int, Line, str]] = []  # (release at seq, line, kind), sorted
        names = list(MUTATIONS)
        for t, line, key in lines:
            while delayed and delayed[0][0] <= self.seq:
                yield self._release(delayed.pop(0))
            roll = rng.random()
            if roll >= plan.malformed and plan.schema_change_at_h is not None \
                    and t >= plan.schema_change_at_h * 3600:
                # (a line chosen to be malformed keeps its old form, so that the reason
                # its mutation declares is the one a parser gives)
                if "schema_change" not in self.counts:
                    self._record("schema_change", at_h=plan.schema_change_at_h,
                                 form="epoch milliseconds")
                line = self._schema(line)
            if roll < plan.malformed:
                name = names[int(rng.integers(len(names)))]
                bad, reason = mutate(line, name, rng, plan.rating_scale)
                self._record("malformed", mutation=name, reason=reason.value,
                             original=line.decode("utf-8", "replace"))
                self.seq += 1
                yield bad, key
                continue
            if roll < plan.malformed + plan.reorder:  # held back, sent a few lines later
                self._delay(delayed, (line, key), "reorder", 2)
                continue
            if roll < plan.malformed + plan.reorder + plan.duplicate:  # sent again later
                self._delay(delayed, (line, key), "duplicate", 1)
            self.seq += 1
            yield line, key
        for item in delayed:
            yield self._release(item)

    def _delay(self, delayed: list, item: Line, kind: str, min_gap: int) -> None:
        delayed.append((self.seq + int(self.rng.integers(min_gap, self.plan.window + 1)), item, kind))
        delayed.sort(key=lambda d: d[0])

    def _release(self, entry: tuple[int, Line, str]) -> Line:
        _, item, kind = entry
        self._record(kind, line=item[0].decode("utf-8", "replace"))
        self.seq += 1
        return item


def shilling_lines(ids: list[str], appeal: np.ndarray, plan: InjectionPlan, start: datetime,
                   first_user: int,
                   duration_s: float = 7200.0) -> tuple[str, list[tuple[float, bytes, bytes]]]:
    """A campaign of ``plan.shilling_accounts`` fake accounts (ids from ``first_user``):
    each signs up, rates the target movie with the top score, and rates 3-8 popular
    movies at random as filler. Returns the target and time-ordered (t, line, key).
    """
    rng = np.random.default_rng([plan.seed, 8])
    if plan.shilling_target:
        target = plan.shilling_target
    else:  # an obscure film: the point of the attack is to lift it
        obscure = np.argsort(appeal)[: max(1, len(ids) // 10)]
        target = ids[int(rng.choice(obscure))]
    popular = np.argsort(-appeal)[:200]
    out: list[tuple[float, bytes, bytes]] = []
    for n in range(plan.shilling_accounts):
        user = first_user + n
        key = str(user).encode()
        t = plan.shilling_at_h * 3600 + float(rng.uniform(0, duration_s))

        ratings = [(target, plan.rating_scale)] + [
            (ids[int(m)], int(rng.integers(1, plan.rating_scale + 1)))
            for m in rng.choice(popular, size=int(rng.integers(3, 9)), replace=False)
        ]
        out.append((t, account_line(_stamp(start, t), user).encode(), key))
        for movie, stars in ratings:
            t += float(rng.uniform(20, 300))
            out.append((t, rate_line(_stamp(start, t), user, movie, stars).encode(), key))
    out.sort(key=lambda item: item[0])
    return target, out


def _stamp(start: datetime, seconds: float) -> str:
    return format_time(start + timedelta(seconds=int(seconds)))
