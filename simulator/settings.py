"""Settings of the simulator's processes (backfill, live, api, grade)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from movierec.settings import KafkaSettings, SettingsError, WireSettings, setting
from simulator.world import WorldSpec


@dataclass(frozen=True)
class SimSettings(KafkaSettings, WireSettings):
    """The world a simulator process draws, and where its lines go."""

    sim_seed: int = setting(42, "Seed of the simulated world and its behaviour", min=0)
    sim_users: int = setting(1_000_000, "Users in the simulated world", min=10, max=50_000_000)
    sim_movies: int = setting(27_000, "Movies in the simulated catalog", min=50, max=200_000)
    sim_describe_share: float = setting(0.3, "Share of users with a self-description", min=0, max=1)
    sim_new_share: float = setting(0.1, "Share of users who sign up during the simulation", min=0, max=1)
    sim_horizon_days: float = setting(30.0, "Days over which new users sign up", min=0.01)
    sim_start: str = setting("2025-03-01T00:00:00", "Simulated time at which history starts (ISO)")
    sim_bulk_client: str = setting(
        "confluent", "Kafka client for bulk writes (backfill): confluent or kafka-python",
        choices=("confluent", "kafka-python"),
    )

    def __post_init__(self) -> None:
        try:
            start = self.start_time()
        except ValueError:
            raise SettingsError(f"MOVIEREC_SIM_START={self.sim_start!r}: expected an ISO date-time") from None
        if start.tzinfo is not None:  # the log's times are local and carry no zone
            raise SettingsError(f"MOVIEREC_SIM_START={self.sim_start!r}: give a local time without a zone")

    def world_spec(self) -> WorldSpec:
        return WorldSpec(seed=self.sim_seed, n_users=self.sim_users, n_movies=self.sim_movies,
                         describe_share=self.sim_describe_share, new_share=self.sim_new_share,
                         horizon_days=self.sim_horizon_days)

    def start_time(self) -> datetime:
        return datetime.fromisoformat(self.sim_start)
