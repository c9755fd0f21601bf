"""Settings of ``movierec eval online`` and ``movierec eval live``: where the two topics
are, how long a read may take, where the live metrics keep their checkpoint. One frozen
object from ``MOVIEREC_*`` variables, built when the command runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from movierec.settings import (
    KafkaSettings,
    MetricsSettings,
    RedisSettings,
    ServedTopicSettings,
    WireSettings,
    setting,
)


@dataclass(frozen=True)
class OnlineSettings(KafkaSettings, RedisSettings, WireSettings, ServedTopicSettings,
                     MetricsSettings):
    """The broker, the event-log topic (``kafka_topic``), the served-records topic and the
    rating scale of the log's rate lines."""

    online_read_timeout_s: float = setting(
        600.0, "Longest a read of one topic may take before the report is marked incomplete",
        min=1, max=86_400,
    )
    online_idle_s: float = setting(
        30.0, "Seconds without a record before a read of a topic gives up (marked incomplete)",
        min=0.1, max=3_600,
    )
    online_state_dir: Path = setting(
        Path("var/online"), "Folder of the live online metrics' checkpoint (movierec eval live)")
    online_metrics_port: int = setting(
        9104, "Port of the live online metrics' /metrics (0: none)", min=0, max=65535)
    online_checkpoint_s: float = setting(
        30.0, "Seconds between checkpoints of the live online metrics", min=0.1, max=3_600)
