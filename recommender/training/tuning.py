"""Hyperparameter search on the validation period, recorded in the registry.

What is tuned: the factor model (ALS ``factors``, ``regularization``, ``alpha``), the
confidence formula every model trains on (``recommender.confidence``: the recency
half-life, the credit of a film only rated, the recency floor) and, for the hybrid, its
ranker (trees, leaves, learning rate, smallest leaf). By a TPE search (optuna; Bergstra et
al. 2011, "Algorithms for Hyper-Parameter Optimization", NeurIPS), each trial one fit and
one evaluation.

**No look at the test period.** The search sees only the events before the pipeline's own
test cut, and splits them the pipeline's way again (``validation_inputs``): its
"test" is the stretch just before the real one, so a configuration is chosen on data
the gate's numbers never come from.

**Recorded** in the registry (``Registry.record_tuning``): every trial's parameters and
score, the best, the data it was tuned on and when; ``movierec models show`` of a
version names the tuning it used. Training then takes the latest record's best
parameters for that model, among the records that saw nothing of its own test period
(``seen_until``, ``pipeline.Tuned``), and every model version stores the
confidence parameters it was trained with, which serving uses to weigh a history the
same way (``ServingModel.load``).

**On a schedule**: ``movierec tune --if-older-than HOURS`` searches only when the latest
record for the model is older than that (or there is none), so a cron job or the
retraining loop can call it every cycle and pay for a search only as often as asked.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from recommender.confidence import ConfidenceParams
from recommender.dataset import event_ms
from recommender.training.pipeline import Pipeline, TrainInputs, candidate_params, split_cut
from recommender.training.settings import TrainSettings

log = logging.getLogger(__name__)

TUNABLE = ("als", "hybrid")
"""The candidates with a search space."""
CONFIDENCE_KEYS = ("half_life_days", "rated_only_fraction", "recency_floor")


def validation_inputs(inputs: TrainInputs, test_share: float) -> TrainInputs:
    """The events before the pipeline's test cut (what the search may see)."""
    cut, _ = split_cut(inputs.events, test_share)
    ms = event_ms(inputs.events)
    cut_ms = int((cut - datetime(1970, 1, 1)).total_seconds() * 1000)
    before = inputs.events.filter(pa.array(ms < cut_ms))
    return dataclasses.replace(inputs, events=before)


def suggest(trial: Any, model: str) -> tuple[dict[str, Any], dict[str, float]]:
    """(model params, confidence params) of one trial of ``model``'s search space."""
    params: dict[str, Any] = {
        "factors": trial.suggest_int("factors", 8, 64, log=True),
        "regularization": trial.suggest_float("regularization", 0.01, 30.0, log=True),
        "alpha": trial.suggest_float("alpha", 1.0, 100.0, log=True),
    }
    if model == "hybrid":
        params |= {
            "trees": trial.suggest_int("trees", 40, 200, log=True),
            "leaves": trial.suggest_int("leaves", 7, 31),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "min_leaf": trial.suggest_int("min_leaf", 20, 500, log=True),
        }
    confidence = {
        "half_life_days": trial.suggest_float("half_life_days", 3.0, 120.0, log=True),
        "rated_only_fraction": trial.suggest_float("rated_only_fraction", 0.2, 1.0),
        "recency_floor": trial.suggest_float("recency_floor", 0.02, 0.5, log=True),
    }
    return params, confidence


@dataclass
class TuningResult:
    """One search: the model, the metric, every trial, the best, and on what."""

    model: str
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tune(settings: TrainSettings, inputs: TrainInputs, *, model: str = "hybrid", trials: int = 20,
         timeout_s: float | None = None, seed: int = 0,
         progress: Callable[[str], None] = lambda _: None) -> TuningResult:
    """Search ``model``'s space for the best ``settings.gate_metric`` on the validation
    period of ``inputs`` (see the module docstring)."""
    import optuna  # training only, and slow to import

    if model not in TUNABLE:
        raise ValueError(f"no search space for {model!r}; choose from {TUNABLE}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    validation = validation_inputs(inputs, settings.eval_test_share)
    metric = settings.gate_metric
    base_params = candidate_params(dataclasses.replace(settings, train_models=model))[model]
    # seen_until: every event the search saw is before it (a training whose test period
    # starts earlier must not take this search up: Tuned.latest)
    seen_until = split_cut(inputs.events, settings.eval_test_share)[0]
    result = TuningResult(model, metric, data={**inputs.data, "validation_rows": validation.events.num_rows,
                                               "seen_until": seen_until.isoformat()},
                          started=datetime.now(UTC).isoformat(timespec="seconds"))
    started = time.perf_counter()

    def objective(trial: Any) -> float:
        params, confidence = suggest(trial, model)
        pipeline = Pipeline(settings, confidence=ConfidenceParams(**confidence))
        prepared = pipeline.prepare(validation)
        evaluated, row = pipeline.evaluate_candidate(model, {**base_params, **params}, prepared)
        value = float(evaluated.means[metric])
        result.trials.append({"number": trial.number, "params": params, "confidence": confidence,
                              metric: value, "fit_seconds": row["train_seconds"]})
        progress(f"trial {trial.number}: {metric} {value:.5f}")
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials, timeout=timeout_s)
    best = next(t for t in result.trials if t["number"] == study.best_trial.number)
    result.best = {"params": best["params"], "confidence": best["confidence"], metric: best[metric]}
    result.seconds = round(time.perf_counter() - started, 1)
    return result
