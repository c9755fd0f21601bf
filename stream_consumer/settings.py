"""Settings of the stream consumer process."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from movierec.settings import (
    KafkaSettings,
    MetricsSettings,
    RedisSettings,
    StoreSettings,
    WireSettings,
    setting,
)


@dataclass(frozen=True)
class ConsumerSettings(KafkaSettings, RedisSettings, StoreSettings, WireSettings, MetricsSettings):
    consumer_group: str = setting("movierec-consumer", "Kafka consumer group of the feature pipeline")
    consumer_batch_max: int = setting(20_000, "Most lines handled per batch", min=1, max=100_000)
    consumer_bulk_decode: bool = setting(
        True, "Decode Kafka record batches in bulk (movierec.kafka_records), not one record at a time")
    consumer_poll_ms: int = setting(500, "Longest wait for a batch, ms", min=1, max=60_000)
    dlq_topic: str = setting("", "Dead-letter topic for rejected lines (default: <topic>.dlq)")
    dlq_sink: str = setting(
        "auto", "Where rejected lines go: kafka (the dead-letter topic; stop if the broker refuses "
        "it), file (<dlq dir>/<dlq topic>.jsonl), auto (Kafka; the file for good once the broker "
        "refuses)", choices=("auto", "kafka", "file"))
    dlq_dir: Path = setting(Path("var/dlq"), "Folder of the local dead-letter file")
    redis_timeout_s: float = setting(2.0, "Timeout of one Redis call, s", min=0.05, max=60)
    metrics_port: int = setting(9101, "Port of the consumer's /metrics (0: none)", min=0, max=65535)
    user_api_url: str = setting("http://127.0.0.1:8080", "Base URL of the user/movie API (course: :8080)")
    enrich: bool = setting(True, "Fetch new users' profiles and new movies' metadata from the API")
    recent_history: int = setting(50, "Recent-history entries kept per user", min=1, max=10_000)
    runtime_slack_min: int = setting(10, "Minutes past a movie's runtime still accepted", min=0)
    future_tolerance_h: float = setting(
        6.0, "Hours an event's time may run past when Kafka received its line (beyond the log's "
             "UTC offset) before it is rejected as a bad clock", min=0.01)
    log_utc_offset_h: float = setting(
        14.0, "How far the log's local times may run ahead of UTC, hours (14: any zone on Earth; "
              "the site's real offset, e.g. -5, tightens the future-time check)", min=-12, max=14)

    @property
    def dlq(self) -> str:
        return self.dlq_topic or f"{self.kafka_topic}.dlq"

    @property
    def dlq_file(self) -> Path:
        """The local dead-letter file: the topic's name, made a safe file name (a refused
        name may hold any character; Linux allows 255 bytes a name)."""
        return self.dlq_dir / (re.sub(r"[^A-Za-z0-9._-]", "_", self.dlq)[:240] + ".jsonl")
