"""Settings of ``movierec audit``: where the telemetry is, where reports go. One frozen
object from ``MOVIEREC_*`` variables, built when the command runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from movierec.settings import (
    KafkaSettings,
    RedisSettings,
    ServedTopicSettings,
    WireSettings,
    setting,
)
from recommender.settings import ExperimentsSettings, RegistrySettings


@dataclass(frozen=True)
class AuditSettings(KafkaSettings, RedisSettings, ServedTopicSettings, WireSettings,
                    RegistrySettings, ExperimentsSettings):
    """The broker and topics the audits read, the online store, the running experiment
    (the fairness audit compares its arms), the reports' folder."""

    audit_reports_dir: Path = setting(
        Path("var/reports/audits"), "Folder of the audits' reports (one subfolder each)")
    audit_read_timeout_s: float = setting(
        600.0, "Longest an audit's read of one topic may take", min=1, max=86_400)
