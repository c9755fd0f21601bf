"""Settings of the training process (``movierec train``, ``movierec models``,
``movierec eval offline``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from movierec.settings import (
    KafkaSettings,
    RedisSettings,
    SettingsError,
    StoreSettings,
    WireSettings,
    setting,
)
from recommender.settings import RegistrySettings


@dataclass(frozen=True)
class TrainSettings(KafkaSettings, RedisSettings, StoreSettings, WireSettings, RegistrySettings):
    """Where training reads its data and writes its models, and how it trains them.

    The Kafka topic names the event store's data; training never connects to Kafka."""

    reports_dir: Path = setting(Path("var/reports"), "Folder for offline-evaluation reports")
    code_commit: str = setting(
        "", "Commit the code was built from, recorded where no git checkout is present (the "
            "container image bakes it in)")
    code_dirty: bool = setting(
        False, "Whether the built code differed from that commit (baked in with it)")
    train_models: str = setting("als,popularity,itemknn,hybrid", "Candidates to train, comma-separated")
    train_profiles: str = setting(
        "redis", "Where user profiles come from: redis (the consumer's enriched profiles) or none",
        choices=("redis", "none"),
    )
    train_shilling: str = setting(
        "exclude", "Coordinated fake accounts (recommender/shilling.py): exclude (leave every "
                   "detected campaign's accounts out of training) or off", choices=("exclude", "off"))
    train_threads: int = setting(0, "Threads for model fitting and batch scoring (0: all cores)", min=0)
    train_use_tuned: bool = setting(
        True, "Train with the best parameters of the latest recorded search (movierec tune) "
              "that saw nothing of the run's test period; they win over MOVIEREC_ALS_*")
    eval_test_share: float = setting(
        0.15, "Share of the snapshot's time span held out, at its end, for offline evaluation",
        min=0.01, max=0.9,
    )
    eval_k: int = setting(20, "List length of offline metrics (the API answers 20)", min=1, max=500)
    als_factors: int = setting(16, "ALS latent factors (tuned: docs/models.md)", min=1, max=1024)
    als_iterations: int = setting(15, "ALS iterations", min=1, max=200)
    als_regularization: float = setting(1.0, "ALS L2 regularisation", min=0)
    als_alpha: float = setting(20.0, "ALS confidence scaling of the interaction values", min=0)
    als_warm_iterations: int = setting(
        5, "Iterations of an ALS retraining started from the champion's item factors (when "
           "it has ALS factors of the same size); 0: always train cold", min=0, max=200)
    als_cg_steps: int = setting(3, "Conjugate-gradient steps per ALS half-iteration", min=1, max=20)
    als_item_cg_steps: int = setting(
        0, "CG steps on the item side only (0: MOVIEREC_ALS_CG_STEPS); 1 halves the item "
           "side's time at full scale (docs/models.md)", min=0, max=20)
    gate_metric: str = setting("ndcg@20", "Offline metric the promotion gate compares")
    gate_min_lift: float = setting(
        0.05, "Relative lift over the popularity baseline a model needs to be promoted", min=0
    )
    gate_max_regression: float = setting(
        0.02, "Relative drop against the current champion the gate tolerates", min=0, max=1
    )

    def __post_init__(self) -> None:
        from recommender.models import CANDIDATES

        unknown = [m for m in self.model_names() if m not in CANDIDATES]
        if unknown or not self.model_names():
            raise SettingsError(
                f"MOVIEREC_TRAIN_MODELS={self.train_models!r}: choose from {sorted(CANDIDATES)}"
            )

    def model_names(self) -> list[str]:
        return [m.strip() for m in self.train_models.split(",") if m.strip()]
