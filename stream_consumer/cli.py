"""``movierec consume``: run one member of the feature pipeline's consumer group."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING

import click

from movierec.settings import load

if TYPE_CHECKING:  # imported where used: the CLI starts without Kafka's client
    from stream_consumer.consumer import StreamConsumer
    from stream_consumer.enrich import Enricher
    from stream_consumer.settings import ConsumerSettings


def build(settings: ConsumerSettings, *,
          metrics_port: int | None = None) -> tuple[StreamConsumer, Enricher, Callable[[], None]]:
    """Wire the real adapters from settings: (StreamConsumer, Enricher, closer). The
    runner's ``dlq`` is the dead-letter sink ``MOVIEREC_DLQ_SINK`` asks for."""
    from kafka import KafkaConsumer
    from prometheus_client import start_http_server

    from movierec.kafka_records import install as install_bulk_decoding
    from stores.event_store import EventStore
    from stores.keys import Keys
    from stores.redis_online import RedisOnlineStore
    from stream_consumer.consumer import StreamConsumer
    from stream_consumer.consumer_metrics import ConsumerMetrics
    from stream_consumer.dlq_sinks import open_sink
    from stream_consumer.drift_monitor import DriftMonitor
    from stream_consumer.enrich import Enricher

    keys = Keys(settings.redis_prefix)
    features = RedisOnlineStore.connect(settings.redis_url, keys, timeout_s=settings.redis_timeout_s,
                                        recent_history=settings.recent_history)
    metrics = ConsumerMetrics.create()
    sink = open_sink(settings, lambda reason: metrics.dlq_fallbacks.labels(reason).inc())
    try:
        consumer = KafkaConsumer(
            settings.kafka_topic, bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.consumer_group, client_id="movierec-consumer",
            enable_auto_commit=False, auto_offset_reset="earliest",
            # 1 MiB a partition a fetch (~12k lines) bounds how far partitions drift apart in
            # event time while a backlog drains (the drift monitor's allowed lateness).
            max_poll_records=settings.consumer_batch_max, max_partition_fetch_bytes=1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            # a killed member's partitions move on after 6 s (the broker's minimum), not 10 s
            session_timeout_ms=6000, heartbeat_interval_ms=2000,
        )
    except BaseException:  # e.g. no broker: do not leave the dead-letter producer behind
        sink.close()
        raise
    if settings.consumer_bulk_decode:
        install_bulk_decoding(consumer)
    enricher = Enricher(features, settings.user_api_url)
    port = settings.metrics_port if metrics_port is None else metrics_port
    metrics.watch_disk(settings.store_dir)
    server = (start_http_server(port, addr=settings.metrics_host, registry=metrics.registry)[0]
              if port else None)
    runner = StreamConsumer(
        consumer, features, EventStore(settings.store_dir, settings.kafka_topic), dlq=sink,
        metrics=metrics, topic=settings.kafka_topic, rating_scale=settings.rating_scale,
        batch_max=settings.consumer_batch_max, poll_ms=settings.consumer_poll_ms,
        runtime_slack_min=settings.runtime_slack_min,
        future_tolerance_h=settings.future_tolerance_h, log_utc_offset_h=settings.log_utc_offset_h,
        runtime_of=enricher.runtime_of if settings.enrich else None,
        known_user=enricher.known_user if settings.enrich else None,
        known_movie=enricher.known_movie if settings.enrich else None,
        drift=DriftMonitor(known_user=enricher.known_user if settings.enrich else None,
                           known_movie=enricher.known_movie if settings.enrich else None,
                           grace_buckets=1),
    )

    def close() -> None:
        enricher.stop.set()
        consumer.close()
        sink.close()
        features.close()
        if server is not None:
            server.shutdown()
            server.server_close()

    return runner, enricher, close


GC_THRESHOLDS = (50_000, 20, 100)
"""Collections of the young generation after 50,000 net container allocations, not 700."""


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path of a long-running consumer.

    A poll of 20,000 records allocates tens of thousands of objects (kafka-python's
    ConsumerRecords, the fold's tuples), almost all freed by reference counting; with
    the default threshold of 700 the collector still runs dozens of times a poll and
    walks every object that survived. Freezing what start-up built (modules, clients,
    caches) moves it out of the collector's sight, and a higher young threshold makes
    collections rare. Measured on 1M lines in one process: 19.5 -> 14-16 s of CPU
    (docs/benchmarks.md). Cycles are still collected, only less often.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@click.command("consume")
@click.option("--max-lines", type=int, help="Stop after this many lines.")
@click.option("--idle-exit", type=float, help="Stop after this many seconds without lines.")
@click.option("--metrics-port", type=int, help="Port of /metrics (default MOVIEREC_METRICS_PORT).")
def consume(max_lines: int | None, idle_exit: float | None, metrics_port: int | None) -> None:
    """Consume the event log into Redis features, the event store and the DLQ."""
    from stream_consumer.settings import ConsumerSettings

    settings = load(ConsumerSettings)
    runner, enricher, close = build(settings, metrics_port=metrics_port)
    tune_gc()
    worker = threading.Thread(target=enricher.run, name="enricher", daemon=True) if settings.enrich else None
    if worker is not None:
        worker.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        runner.stop.set()  # finish the batch in hand, commit, leave the group

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"consuming {settings.kafka_topic} @ {settings.kafka_bootstrap} as "
               f"{settings.consumer_group}; rejects to {runner.dlq.where}", err=True)
    try:
        lines = runner.run(max_lines=max_lines, idle_exit_s=idle_exit)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        close()
        if worker is not None:
            worker.join(timeout=5)
    click.echo(json.dumps({"lines": lines, "enriched": enricher.fetched}))


@click.group("drift")
def drift() -> None:
    """Drift of the event stream against a reference window."""


@drift.command("report")
@click.option("--reference", "reference", nargs=2, type=click.DateTime(), metavar="START END",
              help="Reference window (event time). Default: the store's first --hours.")
@click.option("--current", "current", nargs=2, type=click.DateTime(), metavar="START END",
              help="Current window (event time). Default: the store's last --hours.")
@click.option("--hours", type=float, default=2.0, show_default=True,
              help="Length of the default windows.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def drift_report(reference: tuple[datetime, datetime] | None, current: tuple[datetime, datetime] | None,
                 hours: float, as_json: bool) -> None:
    """Compare two windows of the event store: event mix, ratings, popularity, session
    length, sign-ups, unknown users and movies (rejections come from the consumer)."""
    from datetime import timedelta

    from stores.event_store import EventStore, EventStoreError
    from stream_consumer.drift_report import report_from_frames
    from stream_consumer.settings import ConsumerSettings

    settings = load(ConsumerSettings)
    store = EventStore(settings.store_dir, settings.kafka_topic)
    times = store.read(columns=["time"])["time"]
    if times.empty:
        raise EventStoreError(f"the event store at {settings.store_dir} is empty")
    span = timedelta(hours=hours)
    first, last = times.min().to_pydatetime(), times.max().to_pydatetime()
    ref = reference or (first, first + span)
    cur = current or (last - span, last + timedelta(seconds=1))
    report = report_from_frames(store.read(start=ref[0], end=ref[1]),
                                store.read(start=cur[0], end=cur[1]))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format_table())
