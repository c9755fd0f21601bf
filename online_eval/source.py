"""Where online evaluation reads: the served-records topic and the event-log topic.

- ``ServedTally`` (pure) folds served records (``ServedRecord`` JSON, written by the
  service's telemetry) into each user's arm (the arm of their latest record, by the
  record's own wall-clock time) and per-arm serving facts: answers, fallbacks, latency
  quantiles, model versions.
- ``read_topic`` and ``read_log`` are the Kafka adapter (kafka-python). Each reads every
  partition of its topic from the beginning to the end offsets present when reading
  started, then stops: a report describes the log as it stood, never waits for more. The
  consumer has no group (assign + seek, nothing committed), so it never disturbs the
  consumer groups of the stream consumer or anyone else, and it never creates a topic.
  The reading is ``movierec.kafka_read.read_once``, shared with the grader.

Log lines are parsed by ``movierec.wire.LineParser``; an event stamped later than its line
can have been written (a bad clock: the consumer's own check,
``stream_consumer.validate.Validator``, against the Kafka record's timestamp) is dropped,
so it can neither take a list nor move the join's clock.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from movierec.kafka_read import TopicReadError, read_once
from movierec.wire import LineParser, Rejection
from online_eval.join import OnlineEvalError, OutcomeJoin
from online_eval.report import ArmServing
from recommender.serving.telemetry import ServedRecord, decode_served
from stream_consumer.validate import Check, Validator

RESERVOIR = 100_000
"""Latencies kept per arm for the quantiles: exact up to this many records, beyond it a
uniform sample (algorithm R, seeded)."""
FETCH_BYTES = 256 * 1024
"""Most bytes fetched per partition per request: a small fetch keeps partitions close in
event time while they interleave (the join allows one hour of lag)."""


class ServedTally:
    """Served records folded per user and per arm; feed with ``add_raw`` or ``add``."""

    def __init__(self, reservoir: int = RESERVOIR, seed: int = 0) -> None:
        self.arm_of: dict[int, str] = {}
        self._seen_at: dict[int, int] = {}  # user -> time_ms of the latest record
        self.switched: set[int] = set()  # users seen in two arms or more
        self.records = 0
        self.bad_records = 0  # values that are not served records
        self._answers: Counter[str] = Counter()
        self._fallbacks: Counter[str] = Counter()
        self._versions: dict[str, set[str]] = {}
        self._latency: dict[str, list[float]] = {}
        self._size = reservoir
        self._rng = random.Random(seed)

    def add_raw(self, value: bytes | None) -> None:
        """One Kafka value (one served record or several, ``decode_served``); each line
        that is not a served record (a tombstone's None included) is counted in
        ``bad_records``."""
        records, bad = decode_served(value)
        self.bad_records += bad
        for record in records:
            self.add(record)

    def add(self, record: ServedRecord) -> None:
        self.records += 1
        user, arm = record.user_id, record.arm
        before = self.arm_of.get(user)
        if before is not None and before != arm:
            self.switched.add(user)
        if before is None or record.time_ms >= self._seen_at[user]:  # a tie: the later offset
            self.arm_of[user], self._seen_at[user] = arm, record.time_ms
        self._answers[arm] += 1
        self._fallbacks[arm] += record.fallback is not None
        if record.model_version is not None:
            self._versions.setdefault(arm, set()).add(record.model_version)
        sample = self._latency.setdefault(arm, [])
        if len(sample) < self._size:
            sample.append(record.latency_ms)
        else:  # algorithm R (Vitter 1985): keep the new one with probability size / seen
            slot = self._rng.randrange(self._answers[arm])
            if slot < self._size:
                sample[slot] = record.latency_ms

    def summary(self) -> dict[str, ArmServing]:
        """Per-arm serving facts, by arm name."""
        users = Counter(self.arm_of.values())
        out = {}
        for arm in sorted(self._answers):
            p50, p99 = (float(q) for q in np.percentile(  # inverted_cdf: the nearest rank
                np.asarray(self._latency[arm]), [50, 99], method="inverted_cdf"))
            out[arm] = ArmServing(users=users[arm], answers=self._answers[arm],
                                  fallbacks=self._fallbacks[arm], latency_p50_ms=p50,
                                  latency_p99_ms=p99,
                                  model_versions=tuple(sorted(self._versions.get(arm, ()))))
        return out


@dataclass
class LogRead:
    """What reading the event log found: lines, rejected (unparseable) lines, events
    dropped as implausible (far ahead of the clock), and notes of a read cut short."""

    lines: int = 0
    rejected: int = 0
    implausible: int = 0
    notes: list[str] = field(default_factory=list)


def read_topic(bootstrap: str, topic: str, feed: Callable[[bytes, int], None], *,
               timeout_s: float, idle_s: float,
               written_since_ms: int | None = None) -> tuple[int, list[str]]:
    """Feed every value of ``topic`` up to the end offsets of now (only those written at
    or after ``written_since_ms``, epoch ms of Kafka's record timestamps, when given);
    returns (records, notes). ``OnlineEvalError`` when the topic does not exist or the
    broker fails mid-read."""
    count = 0

    def counted(value: bytes, written_ms: int) -> None:
        nonlocal count
        count += 1
        feed(value, written_ms)

    try:
        notes = read_once(bootstrap, topic, counted, client_id="movierec-online-eval",
                          timeout_s=timeout_s, idle_s=idle_s, since_ms=written_since_ms,
                          fetch_bytes=FETCH_BYTES)
    except TopicReadError as exc:
        raise OnlineEvalError(str(exc)) from None
    return count, [f"{topic}: {note}" for note in notes]


def read_log(bootstrap: str, topic: str, join: OutcomeJoin, *, rating_scale: int,
             timeout_s: float, idle_s: float, written_since_ms: int | None = None) -> LogRead:
    """Parse the event-log topic (what was written since ``written_since_ms``, when given)
    and feed its events to ``join``."""
    parser = LineParser(rating_scale)
    validator = Validator(runtime_of=lambda _movie: None)  # runtimes are the consumer's job
    read = LogRead()

    def feed(value: bytes, written_ms: int) -> None:
        event = parser.parse(value)
        if isinstance(event, Rejection):
            read.rejected += 1
            return
        problem = validator.check(event, written_ms)
        if problem is not None and problem[0] is Check.FUTURE_TIMESTAMP:
            read.implausible += 1
            return
        join.add(event)  # more than 20 ids: a request the join counts as no success

    read.lines, read.notes = read_topic(bootstrap, topic, feed, timeout_s=timeout_s,
                                        idle_s=idle_s, written_since_ms=written_since_ms)
    return read
