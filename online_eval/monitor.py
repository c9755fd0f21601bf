"""``movierec eval live``'s adapter: both Kafka topics read continuously into
``online_eval.live.LiveMetrics``, its totals exported to Prometheus, and a checkpoint
(the totals and the next Kafka offsets, one JSON file written atomically) so a restart
goes on where the last checkpoint left off.

Why a checkpoint and not a consumer group: the totals and the offsets must move
together. A committed group offset with totals kept elsewhere would, after a crash
between the two writes, either count a stretch twice or lose it; one file holding both,
replaced whole (``movierec.durable.write_atomic``), cannot disagree with itself. Records
read after the last checkpoint are read again after a restart, and counted once, since
the totals they changed were not saved either.

Like ``movierec eval online`` it assigns partitions without a group and commits nothing
(safe on the course's broker); it reads only the MLiP log and the served-records topic,
so it runs unchanged against the course's topic.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from movierec.durable import make_dirs, write_atomic
from movierec.wire import LineParser, Rejection
from online_eval.join import OnlineEvalError
from online_eval.live import LiveMetrics
from online_eval.settings import OnlineSettings
from recommender.serving.core import ADULT, MINOR, UNKNOWN_AGE
from recommender.serving.telemetry import ServedRecord, decode_served
from stream_consumer.validate import Check, Validator

log = logging.getLogger(__name__)

CHECKPOINT = "live-checkpoint.json"
COUNTERS = {
    "eligible": ("movierec_online_lists_eligible", "Served lists whose take window closed"),
    "taken": ("movierec_online_lists_taken", "Eligible lists from which a film was started"),
    "minutes": ("movierec_online_minutes_watched", "Minutes watched of films started from lists"),
    "ratings": ("movierec_online_ratings", "Ratings of films started from lists"),
    "rating_sum": ("movierec_online_rating_stars", "Stars of those ratings, summed"),
    "plays": ("movierec_online_plays", "Films started from lists"),
    "cost_usd": ("movierec_online_license_cost_usd", "License cost of those plays, USD"),
    "personalized": ("movierec_online_lists_personalized",
                     "Successful lists unlike their minute's most common list"),
    "judged": ("movierec_online_lists_judged", "Successful lists whose minute has closed"),
}


class Monitor:
    """The running reader (module docstring). ``costs(movies)`` gives the license cost
    per play of movies (USD; a missing one costs 0). ``safety(record)`` judges a served
    list for minors: its audience (``recommender.serving.core.audience``) and the
    ``unsafe_reason`` of each unsafe movie in it; counted as ``safety`` totals."""

    def __init__(self, settings: OnlineSettings, *, state_dir: Path,
                 costs: Callable[[set[str]], dict[str, float]] | None = None,
                 safety: Callable[[ServedRecord], tuple[str, list[str]]] | None = None) -> None:
        self.settings = settings
        self.path = Path(state_dir) / CHECKPOINT
        self.live = LiveMetrics()
        self.offsets: dict[str, dict[int, int]] = {}
        self.lines = {"accepted": 0, "rejected": 0, "implausible": 0}
        self.served_records = {"accepted": 0, "rejected": 0}
        self.safety: Counter[str] = Counter()
        """Served lists by ``audience`` and unsafe movies by ``unsafe|audience|reason``."""
        self._judge = safety
        self._costs = costs
        self._cost_cache: dict[str, float] = {}
        self.lock = threading.Lock()
        self._parser = LineParser(settings.rating_scale)
        self._validator = Validator(runtime_of=lambda _movie: None)
        if self.path.exists():
            self._load()
        # What Prometheus sees: the totals of the last checkpoint, never ahead of what a
        # restart restores (a counter that went back would read as a reset to Prometheus,
        # and increase() would count its whole value again). They lag by one checkpoint.
        self.exported = LiveMetrics()
        self.exported.restore(self.live.state())
        self.exported_lines = dict(self.lines)
        self.exported_served = dict(self.served_records)
        self.exported_safety = dict(self.safety)

    # -- checkpoint -------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            self.live.restore(doc["live"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OnlineEvalError(f"cannot resume from {self.path}: {exc}; move it away to "
                                  f"start from the topics' beginning") from exc
        self.offsets = {t: {int(p): int(o) for p, o in parts.items()}
                        for t, parts in doc["offsets"].items()}
        self.lines.update(doc.get("lines", {}))
        self.served_records.update(doc.get("served_records", {}))
        self.safety.update(doc.get("safety", {}))
        log.info("resumed from %s at offsets %s", self.path, self.offsets)

    def checkpoint(self) -> None:
        with self.lock:
            doc = {"offsets": self.offsets, "live": self.live.state(), "lines": self.lines,
                   "served_records": self.served_records, "safety": dict(self.safety)}
            text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
        make_dirs(self.path.parent)
        write_atomic(self.path, text.encode("utf-8"))
        exported = LiveMetrics()
        exported.restore(doc["live"])
        with self.lock:
            self.exported = exported
            self.exported_lines = dict(doc["lines"])
            self.exported_served = dict(doc["served_records"])
            self.exported_safety = dict(doc["safety"])

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, topic: str, partition: int, offset: int, value: bytes | None,
             written_ms: int) -> None:
        """One Kafka record of either topic, in the order read (a served-topic value
        holds one served record or several: ``decode_served``)."""
        records: list[ServedRecord] = []
        bad, judged = 0, []
        if topic == self.settings.served_topic:
            records, bad = decode_served(value)
            judged = [j for r in records if (j := self._judged(r)) is not None]
        with self.lock:
            if topic == self.settings.served_topic:
                self.served_records["rejected"] += bad
                for record in records:
                    self.live.served(record)
                self.served_records["accepted"] += len(records)
                for who, reasons in judged:
                    self.safety[who] += 1
                    self.safety.update(f"unsafe|{who}|{r}" for r in reasons)
            else:
                self._log_line(value or b"", written_ms, partition)
            self.offsets.setdefault(topic, {})[partition] = offset + 1

    def _judged(self, record: ServedRecord) -> tuple[str, list[str]] | None:
        """``safety(record)``, or None without a judge or when the store cannot answer
        (counted as ``unjudged``: a store hiccup never stops the reader)."""
        if self._judge is None or record.status != 200:
            return None
        try:
            return self._judge(record)
        except Exception as exc:
            log.warning("safety check of %s failed: %s", record.request_id, exc)
            with self.lock:
                self.safety["unjudged"] += 1
            return None

    def _log_line(self, value: bytes, written_ms: int, partition: int) -> None:
        self.live.log_written(written_ms)
        event = self._parser.parse(value)
        if isinstance(event, Rejection):
            self.lines["rejected"] += 1
            return
        problem = self._validator.check(event, written_ms)
        if problem is not None and problem[0] is Check.FUTURE_TIMESTAMP:
            self.lines["implausible"] += 1
            return
        self.lines["accepted"] += 1
        self.live.add(event, source=partition)

    def run(self, stop: threading.Event, *, checkpoint_s: float = 30.0,
            idle_exit_s: float | None = None, from_now: bool = False) -> None:
        """Read both topics until ``stop`` is set (or ``idle_exit_s`` without a record),
        checkpointing every ``checkpoint_s`` and at the end. A partition without a
        checkpointed offset is read from its beginning, or with ``from_now`` from its end
        (a monitor started beside a long history counts what happens from now on)."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        from movierec.kafka_records import install as install_bulk_decoding

        topics = (self.settings.served_topic, self.settings.kafka_topic)
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, client_id="movierec-live",
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
            allow_auto_create_topics=False, max_poll_records=5000,
            max_partition_fetch_bytes=256 * 1024)
        install_bulk_decoding(consumer)  # records decoded in bulk: ~4x less CPU (kafka_records)
        try:
            late: set[str] = set()
            found = self._wait_for_topics(consumer, topics, stop, late)
            if found is None:
                return
            tps = [TopicPartition(topic, p) for topic in topics for p in sorted(found[topic])]
            consumer.assign(tps)
            self.live.expect_sources([tp.partition for tp in tps if tp.topic == topics[1]])
            for tp in tps:
                at = self.offsets.get(tp.topic, {}).get(tp.partition)
                # a topic that appeared after the monitor started holds only what is new
                if at is None and from_now and tp.topic not in late:
                    consumer.seek_to_end(tp)
                elif at is None:
                    consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, at)
            last_save = last_record = time.monotonic()
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=500)
                # served records first: an answer is recorded before its log line is written
                for tp, records in sorted(batch.items(), key=lambda kv: kv[0].topic != topics[0]):
                    for record in records:
                        self.feed(tp.topic, tp.partition, record.offset, record.value,
                                  record.timestamp)
                now = time.monotonic()
                if batch:
                    last_record = now
                if now - last_save >= checkpoint_s:
                    self.checkpoint()
                    last_save = now
                if idle_exit_s is not None and now - last_record >= idle_exit_s:
                    break
        except KafkaError as exc:
            raise OnlineEvalError(f"reading {topics} failed: {exc}") from None
        finally:
            consumer.close()
            self.checkpoint()

    def _wait_for_topics(self, consumer: Any, topics: tuple[str, ...], stop: threading.Event,
                         late: set[str], *, every_s: float = 2.0) -> dict[str, set[int]] | None:
        """The partitions of each topic, waiting while one does not exist yet (the
        served-records topic appears with the service's first answer): a monitor started
        before the traffic waits for it instead of exiting; the topics it waited for are
        added to ``late``. None when ``stop`` is set."""
        said = False
        while True:
            found = {topic: consumer.partitions_for_topic(topic) or set() for topic in topics}
            missing = [topic for topic, parts in found.items() if not parts]
            late.update(missing)
            if not missing:
                return found
            if not said:
                log.warning("waiting for topic(s) %s at %s", ", ".join(missing),
                            self.settings.kafka_bootstrap)
                said = True
            if stop.wait(every_s):
                return None

    # -- reading ----------------------------------------------------------------------------

    def totals(self, *, exported: bool = False) -> dict[str, dict[str, float]]:
        """The running totals (``exported``: those of the last checkpoint, which the
        Prometheus export serves)."""
        with self.lock:
            live = self.exported if exported else self.live
            movies = live.movies_played()
            missing = movies - self._cost_cache.keys()
            if missing and self._costs is not None:
                try:
                    found = self._costs(missing)
                except Exception as exc:  # a store hiccup: costs come at the next scrape
                    log.warning("license costs unavailable: %s", exc)
                else:
                    self._cost_cache.update({m: found.get(m, 0.0) for m in missing})
            return live.totals(self._cost_cache)


class LiveCollector(Collector):
    """The monitor's totals as Prometheus counters (names in ``COUNTERS`` and below)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Any]:
        totals = self.monitor.totals(exported=True)
        requests = CounterMetricFamily("movierec_online_requests",
                                       "Recommendation lines in the log by the graders' outcome",
                                       labels=["arm", "version", "outcome"])
        families = {key: CounterMetricFamily(name, text, labels=["arm", "version"])
                    for key, (name, text) in COUNTERS.items()}
        for label, row in totals.items():
            arm, _, version = label.partition("|")
            for key, value in row.items():
                if key.startswith("requests_"):
                    requests.add_metric([arm, version or "-", key[9:]], value)
                elif key in families:
                    families[key].add_metric([arm, version or "-"], value)
        yield requests
        yield from families.values()
        live, monitor = self.monitor.exported, self.monitor
        minutes = CounterMetricFamily("movierec_online_availability_minutes",
                                      "Closed minutes of the log, up or down by the graders' rule",
                                      labels=["state"])
        minutes.add_metric(["up"], live.minutes_up)
        minutes.add_metric(["down"], live.minutes_down)
        yield minutes
        lines = CounterMetricFamily("movierec_online_log_lines", "Log lines read, by result",
                                    labels=["result"])
        for result, n in monitor.exported_lines.items():
            lines.add_metric([result], n)
        yield lines
        served = CounterMetricFamily("movierec_online_served_records",
                                     "Served records read, by result", labels=["result"])
        for result, n in monitor.exported_served.items():
            served.add_metric([result], n)
        yield served
        yield from _safety_families(monitor.exported_safety)
        clock = live.join.clock
        yield GaugeMetricFamily("movierec_online_log_time_seconds",
                                "Latest event time read from the log (unix seconds, as UTC)",
                                value=0.0 if clock is None else clock.replace(tzinfo=UTC).timestamp())


def _safety_families(totals: dict[str, int]) -> Iterator[Any]:
    """The safety totals as two counters: lists judged by audience (always the three
    audiences, so a dashboard shows 0 rather than nothing) and unsafe movies served."""
    lists = CounterMetricFamily("movierec_online_lists_safety_judged",
                                "Served lists judged for minors, by audience",
                                labels=["audience"])
    for who in (ADULT, MINOR, UNKNOWN_AGE, "unjudged"):
        lists.add_metric([who], totals.get(who, 0))
    unsafe = CounterMetricFamily("movierec_online_unsafe_served",
                                 "Unsafe movies (adult, R, NC-17, X or unverified) served in "
                                 "lists to minors or users of unknown age",
                                 labels=["audience", "reason"])
    for key, n in sorted(totals.items()):
        if key.startswith("unsafe|"):
            _, who, reason = key.split("|", 2)
            unsafe.add_metric([who, reason], n)
    yield lists
    yield unsafe


def registry_for(monitor: Monitor) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(LiveCollector(monitor))
    return registry
