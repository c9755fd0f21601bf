"""Settings of ``movierec eval online``: where the two topics are and how long a read may
take. One frozen object from ``MOVIEREC_*`` variables, built when the command runs."""

from __future__ import annotations

from dataclasses import dataclass

from movierec.settings import KafkaSettings, ServedTopicSettings, WireSettings, setting


@dataclass(frozen=True)
class OnlineSettings(KafkaSettings, WireSettings, ServedTopicSettings):
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
