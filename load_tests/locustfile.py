"""Locust scenarios for ``GET /recommend/<userid>``: a weighted mix of kinds of users.

Run it through ``python -m load_tests.run`` (which also judges the SLO), or directly:
``locust -f load_tests/locustfile.py --headless --host http://127.0.0.1:8082 -u 50 -r 50
-t 30s --csv var/loadtest/locust``.

Kinds of users (``FastHttpUser``: geventhttpclient, the cheapest client locust has, since
the generator shares the machine's cores with the server), each with a weight:

- ``HeavyUser`` (heavy): a small set of known ids, called again and again (the most
  active users; their answers are the ones a cache would help);
- ``KnownUser`` (known): ids drawn uniformly from the known range;
- ``NewUser`` (new): ids from a range no one has used (cold start), still a 200;
- ``InvalidIdUser`` (absurd, malformed): numeric ids above the service's largest id, and
  malformed ones (``abc``, ``-1``, ``1.5``, ``%20``, a 30-digit number, ...); a 400 with a
  plain-text reason is the success, a 200 or a 5xx a failure;
- ``BurstUser`` (burst): fires a quick sequence of known ids with no wait between them.

A 200 to a valid id is a success only when ``movierec.wire.parse_answer`` accepts the body
(at most 20 MLiP ids, commas, one line, nothing else), no id repeats, the type is
text/plain, and it came within the deadline. An answer with an ``X-Fallback`` header is
named ``/recommend/<kind> fallback=<reason>`` (``load_tests.slo.request_name``), so
locust's CSV has the degraded counts by reason without any extra event.

Final numbers: locust rewrites ``<prefix>_stats.csv`` once a second and not again at
shutdown, so that file misses the run's last second (11% of a 5 s run in a test). When
the test quits, after the users stopped, this file writes ``<prefix>_final_stats.csv``
(``load_tests.slo.FINAL_STATS_SUFFIX``) with locust's own ``StatsCSV`` writer: same
columns, final counts. ``load_tests.locust_csv.load_locust_csv`` prefers it.

Environment (read once, when locust fires ``init``):

| variable | default | meaning |
|---|---|---|
| MOVIEREC_LOADTEST_USERS | 1-100000 | known user ids, ``lo-hi`` inclusive |
| MOVIEREC_LOADTEST_HEAVY | 20 | heavy ids: a list ``7,42,99`` or a count spread over the known range |
| MOVIEREC_LOADTEST_NEW | 1000000000-1999999999 | ids never seen, ``lo-hi`` |
| MOVIEREC_LOADTEST_MAX_USER_ID | 2147483647 | the service's largest id (absurd ids lie above it) |
| MOVIEREC_LOADTEST_DEADLINE_MS | 600 | an answer later than this is a failure |
| MOVIEREC_LOADTEST_WAIT_MS | 0-0 | think time between tasks, ``lo-hi`` ms, uniform |
| MOVIEREC_LOADTEST_BURST | 10 | requests per burst |
| MOVIEREC_LOADTEST_WEIGHT_HEAVY, _KNOWN, _NEW, _INVALID, _BURST | 20, 50, 15, 10, 5 | user weights |

Weights share out the users (locust's ``-u``), not the requests: with the defaults, run
at least 20 users so that every kind gets one; a weight of 0 leaves a kind out. With no
think time (the default) every user is a closed loop at full speed, so ``-u`` sets the
concurrency. The only module-level action is registering the ``init`` listener, which is
how a locustfile declares its setup.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from locust import FastHttpUser, events, task
from locust.runners import WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from load_tests.slo import FINAL_STATS_SUFFIX, LoadTestError, request_name
from movierec.wire import Rejection, parse_answer

WEIGHT_HEAVY = 20
WEIGHT_KNOWN = 50
WEIGHT_NEW = 15
WEIGHT_INVALID = 10
WEIGHT_BURST = 5
DEFAULT_KNOWN = "1-100000"
DEFAULT_HEAVY = "20"
DEFAULT_NEW = "1000000000-1999999999"
"""Far above the ~1M users of the site, below the service's default largest id."""
DEFAULT_MAX_USER_ID = 2_147_483_647
DEFAULT_DEADLINE_MS = 600.0
DEFAULT_WAIT_MS = "0-0"
DEFAULT_BURST = 10

MALFORMED_IDS: tuple[str, ...] = (
    "abc", "-1", "1.5", "%20", "123456789012345678901234567890", "", "%C2%B2", "+7",
)
"""Path segments that are not user ids; "" is /recommend/ and "%C2%B2" is "²", a Unicode
digit that ``str.isdigit`` would accept."""
LONGEST_ID = 10**19 - 1
"""The largest 19-digit number: absurd ids stay numeric and within the digit limit, so
only their value makes them invalid."""
PREFIX = "/recommend/"
GIVE_UP_DEADLINES = 5.0
"""A request is abandoned after this many deadlines (3 s by default): it failed already,
and a hung service must not hold a user for locust's default 60 s."""


def _range(env: Mapping[str, str], name: str, default: str) -> tuple[int, int]:
    text = env.get(name, default).strip()
    lo, sep, hi = text.partition("-")
    if not (sep and lo.strip().isdigit() and hi.strip().isdigit()) or int(lo) > int(hi):
        raise LoadTestError(f"{name} must be 'lo-hi' with 0 <= lo <= hi, got {text!r}")
    return int(lo), int(hi)


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    text = env.get(name, str(default)).strip()
    try:
        value = float(text)
    except ValueError:
        raise LoadTestError(f"{name} must be a number, got {text!r}") from None
    if value < minimum:
        raise LoadTestError(f"{name} must be >= {minimum}, got {text!r}")
    return value


@dataclass(frozen=True)
class LoadConfig:
    """The scenario's knobs (module docstring); ids are ints, times in ms."""

    known: tuple[int, int]
    heavy: tuple[int, ...]
    new: tuple[int, int]
    max_user_id: int
    deadline_ms: float
    wait_ms: tuple[int, int]
    burst: int
    weights: dict[str, int]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LoadConfig:
        """The config from ``MOVIEREC_LOADTEST_*`` variables; ``LoadTestError`` naming the
        variable when one is malformed."""
        p = "MOVIEREC_LOADTEST_"
        known = _range(env, p + "USERS", DEFAULT_KNOWN)
        heavy_text = env.get(p + "HEAVY", DEFAULT_HEAVY).replace(" ", "")
        if "," in heavy_text or not heavy_text.isdigit():
            try:
                heavy = tuple(int(x) for x in heavy_text.split(",") if x)
            except ValueError:
                raise LoadTestError(f"{p}HEAVY must be a count or a list of ids, "
                                    f"got {heavy_text!r}") from None
        else:  # a count: spread evenly over the known range
            count = max(1, min(int(heavy_text), known[1] - known[0] + 1))
            step = (known[1] - known[0] + 1) / count
            heavy = tuple(known[0] + int(i * step) for i in range(count))
        if not heavy:
            raise LoadTestError(f"{p}HEAVY names no id")
        max_id = int(_number(env, p + "MAX_USER_ID", DEFAULT_MAX_USER_ID, minimum=1))
        if max_id >= LONGEST_ID:
            raise LoadTestError(f"{p}MAX_USER_ID must be below {LONGEST_ID}")
        weights = {kind: int(_number(env, f"{p}WEIGHT_{kind.upper()}", default, minimum=0))
                   for kind, default in (("heavy", WEIGHT_HEAVY), ("known", WEIGHT_KNOWN),
                                         ("new", WEIGHT_NEW), ("invalid", WEIGHT_INVALID),
                                         ("burst", WEIGHT_BURST))}
        if not any(weights.values()):
            raise LoadTestError("every MOVIEREC_LOADTEST_WEIGHT_* is 0: no user to run")
        return cls(known=known, heavy=heavy, new=_range(env, p + "NEW", DEFAULT_NEW),
                   max_user_id=max_id,
                   deadline_ms=_number(env, p + "DEADLINE_MS", DEFAULT_DEADLINE_MS, minimum=1),
                   wait_ms=_range(env, p + "WAIT_MS", DEFAULT_WAIT_MS),
                   burst=int(_number(env, p + "BURST", DEFAULT_BURST, minimum=1)),
                   weights=weights)


@cache
def config() -> LoadConfig:
    """The process's config, read from ``os.environ`` on first use."""
    return LoadConfig.from_env(os.environ)


def list_failure(status: int, content_type: str, body: str, elapsed_ms: float,
                 deadline_ms: float) -> str | None:
    """Why an answer to a valid id is a failure, or None for a success."""
    if elapsed_ms > deadline_ms:
        return f"late: {elapsed_ms:.0f} ms > {deadline_ms:.0f} ms"
    if status != 200:
        return f"status {status}, expected 200"
    if not content_type.startswith("text/plain"):
        return f"content type {content_type!r}, expected text/plain"
    ids = parse_answer(body)
    if isinstance(ids, Rejection):
        return f"malformed answer ({ids.reason.value}: {ids.detail})"
    if len(set(ids)) != len(ids):
        return "an id repeats in the answer"
    return None


def rejection_failure(status: int, content_type: str, body: str, elapsed_ms: float,
                      deadline_ms: float) -> str | None:
    """Why an answer to an invalid id is a failure (anything but a timely 400 with a
    plain-text reason), or None for a success."""
    if elapsed_ms > deadline_ms:
        return f"late: {elapsed_ms:.0f} ms > {deadline_ms:.0f} ms"
    if status != 400:
        return f"status {status}, expected 400 for an invalid id"
    if not content_type.startswith("text/plain") or not body.strip():
        return "a 400 without a plain-text reason"
    return None


def _header(response: Any, name: str) -> str:
    value = response.headers.get(name) if response.headers is not None else None
    if isinstance(value, list):
        value = value[0] if value else None
    return value or ""


def _no_answer(response: Any) -> str | None:
    """Why there is no answer at all (refused, reset, timed out), or None."""
    if response.status_code:
        return None
    return f"no answer ({response.request_meta.get('exception') or 'connection failed'})"


def _settle(response: Any, why: str | None) -> None:
    """Mark a caught response as a failure with ``why``, or as a success."""
    if why is None:
        response.success()
    else:
        response.failure(why)


class _Recommend(FastHttpUser):
    """Shared request code; ``cfg`` is bound in ``on_start``."""

    abstract = True
    cfg: LoadConfig

    def on_start(self) -> None:
        self.cfg = config()

    def wait_time(self) -> float:
        lo, hi = self.cfg.wait_ms
        return random.uniform(lo, hi) / 1000.0 if hi else 0.0

    def valid(self, kind: str, user_id: int) -> None:
        """One request for a valid id; a success is a well-formed list in time."""
        with self.client.get(f"{PREFIX}{user_id}", name=request_name(kind),
                             catch_response=True) as resp:
            fallback = _header(resp, "X-Fallback")
            if fallback and resp.status_code == 200:
                resp.request_meta["name"] = request_name(kind, fallback)
            why = _no_answer(resp) or list_failure(
                resp.status_code, _header(resp, "Content-Type"), resp.text or "",
                resp.request_meta["response_time"], self.cfg.deadline_ms)
            _settle(resp, why)

    def invalid(self, kind: str, raw: str) -> None:
        """One request for an invalid id; a success is a 400 with a reason, in time."""
        with self.client.get(f"{PREFIX}{raw}", name=request_name(kind),
                             catch_response=True) as resp:
            why = _no_answer(resp) or rejection_failure(
                resp.status_code, _header(resp, "Content-Type"), resp.text or "",
                resp.request_meta["response_time"], self.cfg.deadline_ms)
            _settle(resp, why)


class HeavyUser(_Recommend):
    weight = WEIGHT_HEAVY

    @task
    def again(self) -> None:
        self.valid("heavy", random.choice(self.cfg.heavy))


class KnownUser(_Recommend):
    weight = WEIGHT_KNOWN

    @task
    def known(self) -> None:
        self.valid("known", random.randint(*self.cfg.known))


class NewUser(_Recommend):
    weight = WEIGHT_NEW

    @task
    def new(self) -> None:
        self.valid("new", random.randint(*self.cfg.new))


class InvalidIdUser(_Recommend):
    weight = WEIGHT_INVALID

    @task
    def absurd(self) -> None:
        self.invalid("absurd", str(random.randint(self.cfg.max_user_id + 1, LONGEST_ID)))

    @task
    def malformed(self) -> None:
        self.invalid("malformed", random.choice(MALFORMED_IDS))


class BurstUser(_Recommend):
    weight = WEIGHT_BURST

    @task
    def burst(self) -> None:
        for _ in range(self.cfg.burst):
            self.valid("burst", random.randint(*self.cfg.known))


USER_CLASSES: dict[str, type[_Recommend]] = {
    "heavy": HeavyUser, "known": KnownUser, "new": NewUser, "invalid": InvalidIdUser,
    "burst": BurstUser,
}


def write_final_stats(environment: Any) -> None:
    """``<csv prefix>_final_stats.csv`` from the final stats (module docstring); nothing
    without ``--csv`` or on a worker (the master holds the merged stats)."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix or isinstance(environment.runner, WorkerRunner):
        return
    with open(f"{prefix}{FINAL_STATS_SUFFIX}", "w", encoding="utf-8", newline="") as f:
        StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))


@events.init.add_listener
def _configure(environment: Any, **_kwargs: Any) -> None:
    """Apply the environment's weights and timeouts before locust creates users (dispatch
    reads ``weight`` when the test starts, after ``init``), and write the final stats when the
    process quits (``quit`` fires after the runner stopped every user)."""
    cfg = config()
    give_up_s = GIVE_UP_DEADLINES * cfg.deadline_ms / 1000.0
    for kind, cls in USER_CLASSES.items():
        cls.weight = cfg.weights[kind]
        cls.connection_timeout = cls.network_timeout = give_up_s

    def on_quit(**_: Any) -> None:
        write_final_stats(environment)

    environment.events.quit.add_listener(on_quit)
