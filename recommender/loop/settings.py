"""Settings of the retraining loop (``movierec loop``): one frozen object from
``MOVIEREC_*`` variables. The loop trains (the training settings), reads the topics (the
online-evaluation settings) and writes the experiment file serving reads."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from movierec.settings import SettingsError, setting
from online_eval.sequential import Guardrails, SequentialSettings
from online_eval.settings import OnlineSettings
from recommender.loop.runner import CycleSettings
from recommender.loop.triggers import TriggerSettings
from recommender.settings import ExperimentsSettings
from recommender.training.settings import TrainSettings

DURATION = re.compile(r"^[1-9][0-9]*[smhdw]$")


@dataclass(frozen=True)
class LoopSettings(TrainSettings, OnlineSettings, ExperimentsSettings):
    """When the loop retrains, how its canary decides, and where it keeps its journal."""

    loop_dir: Path = setting(Path("var/loop"), "Folder of the loop's journal and lock")
    loop_every_h: float = setting(
        24.0, "Hours of log (event time) between scheduled retrainings", min=0.01, max=24 * 90)
    loop_cooldown_h: float = setting(
        6.0, "Hours of log after a cycle began before drift or decay may start another",
        min=0, max=24 * 90)
    loop_decay: float = setting(
        0.2, "Relative drop of the champion's take rate (against its own recent level) that "
             "triggers a retraining, when significant", min=0.01, max=1)
    loop_decay_window: str = setting(
        "1h", "Window (a Prometheus duration) over which the champion's take rate is "
              "compared with the window before it")
    loop_check_s: float = setting(
        60.0, "Seconds between the loop's checks of its triggers and its canary", min=0.1,
        max=86_400)
    loop_canary_share: float = setting(
        0.1, "Share of users the canary routes to the challenger", min=0.001, max=0.5)
    loop_take_window_min: float = setting(
        30.0, "Minutes (event time) within which a listed movie must start for the canary to "
              "count the list as taken", min=0.1, max=24 * 60)
    loop_canary_max_h: float = setting(
        6.0, "Hours (wall time) after which an inconclusive canary keeps the champion",
        min=0.001, max=24 * 30)
    loop_alpha: float = setting(
        0.05, "Error rate the canary's sequential test keeps, however often it looks",
        min=0.0001, max=0.5)
    loop_tau: float = setting(
        0.02, "Mixing standard deviation of the mSPRT (take-rate units): the effect size it "
              "is most sensitive to", min=0.0001, max=1)
    loop_min_users: int = setting(
        100, "Users an arm needs before the canary's test may stop", min=2)
    loop_margin: float = setting(
        0.05, "Non-inferiority margin of the canary, relative to the champion's take rate: "
              "a challenger shown not worse by more than it is promoted (fresher data at no "
              "measurable cost); 0: only a significantly better one", min=0, max=0.5)
    loop_max_p99_ms: float = setting(
        300.0, "Guardrail: the challenger arm's p99 latency above which the canary stops",
        min=1, max=60_000)
    loop_max_fallback_share: float = setting(
        0.10, "Guardrail: the challenger arm's share of fallback answers", min=0, max=1)
    loop_max_error_share: float = setting(
        0.01, "Guardrail: the challenger arm's share of failed requests in the log", min=0, max=1)
    loop_max_cost_ratio: float = setting(
        1.25, "Guardrail: the challenger's license cost per play over the champion's",
        min=1, max=100)
    loop_metrics_port: int = setting(
        9103, "Port of the loop's /metrics (0: none)", min=0, max=65535)
    loop_prometheus_url: str = setting(
        "http://127.0.0.1:9090", "Prometheus the loop asks for the consumer's drift alarm "
                                 "(empty: no drift trigger)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not DURATION.match(self.loop_decay_window):
            raise SettingsError(f"MOVIEREC_LOOP_DECAY_WINDOW={self.loop_decay_window!r}: a "
                                f"Prometheus duration such as 30m, 1h or 1d")

    def cycle(self) -> CycleSettings:
        return CycleSettings(
            share=self.loop_canary_share, max_canary=timedelta(hours=self.loop_canary_max_h),
            sequential=SequentialSettings(alpha=self.loop_alpha, tau=self.loop_tau,
                                          min_users=self.loop_min_users,
                                          margin=self.loop_margin),
            guardrails=Guardrails(p99_ms=self.loop_max_p99_ms,
                                  fallback_share=self.loop_max_fallback_share,
                                  error_share=self.loop_max_error_share,
                                  cost_per_play_ratio=self.loop_max_cost_ratio))

    def triggers(self) -> TriggerSettings:
        return TriggerSettings(every=timedelta(hours=self.loop_every_h),
                               decay=self.loop_decay,
                               cooldown=timedelta(hours=self.loop_cooldown_h))
