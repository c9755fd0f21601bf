"""The search: on the validation period only, recorded in the registry, taken up by the
next training, and its confidence parameters carried to serving."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner

from movierec.settings import load
from offline_eval.simulated import compact_sessions, history_table, simulate
from recommender.confidence import ConfidenceParams
from recommender.dataset import event_ms
from recommender.registry import Registry
from recommender.training.pipeline import Pipeline, TrainInputs, Tuned, split_cut
from recommender.training.settings import TrainSettings
from recommender.training.tuning import tune, validation_inputs
from simulator.world import World, WorldSpec

START = datetime(2025, 3, 1)


@pytest.fixture(scope="module")
def inputs() -> TrainInputs:
    world = World.build(WorldSpec(seed=5, n_users=1500, n_movies=300))
    table = history_table(world, compact_sessions(simulate(world, start=START, days=10, seed=5)),
                          start=START)
    return TrainInputs(table, {"snapshot_id": "0123456789abcdef", "rows": table.num_rows,
                               "partitions": {"0": [0, table.num_rows - 1, table.num_rows]}})


def settings(tmp_path, **extra) -> TrainSettings:
    return load(TrainSettings, {}, registry_dir=tmp_path / "registry", reports_dir=tmp_path / "reports",
                train_threads=1, train_models="als,popularity", train_profiles="none",
                als_iterations=5, **extra)


def test_the_search_never_sees_the_test_period(inputs) -> None:
    cut, _ = split_cut(inputs.events, 0.15)
    seen = validation_inputs(inputs, 0.15)
    cut_ms = int((cut - datetime(1970, 1, 1)).total_seconds() * 1000)
    assert 0 < seen.events.num_rows < inputs.events.num_rows
    assert event_ms(seen.events).max() < cut_ms
    assert event_ms(inputs.events).max() >= cut_ms


def test_a_search_is_recorded_and_the_next_training_uses_its_best(inputs, tmp_path) -> None:
    s = settings(tmp_path)
    result = tune(s, inputs, model="als", trials=3, seed=1)
    assert len(result.trials) == 3 and result.metric == "ndcg@20"
    assert result.best["ndcg@20"] == max(t["ndcg@20"] for t in result.trials)
    assert set(result.best["confidence"]) == {"half_life_days", "rated_only_fraction", "recency_floor"}
    registry = Registry(s.registry_dir)
    path = registry.record_tuning(result.to_dict())
    assert registry.tunings("als")[0]["file"] == path.name and registry.tunings("hybrid") == []
    assert any(e["event"] == "tune" for e in registry.events())

    cut, _ = split_cut(inputs.events, s.eval_test_share)
    assert result.data["seen_until"] == cut.isoformat()
    tuned = Tuned.latest(registry, cut=cut)
    assert tuned.params["als"] == result.best["params"] and tuned.files["als"] == path.name
    pipeline = Pipeline(s, registry=registry)
    report = pipeline.run(inputs, promote=False)
    assert pipeline.confidence == ConfidenceParams(**result.best["confidence"])
    als = next(c for c in report.candidates if c.name == "als")
    meta = registry.get(als.version).meta
    assert meta["hyperparameters"]["factors"] == result.best["params"]["factors"]
    assert meta["confidence"] == json.loads(json.dumps(pipeline.confidence.__dict__))
    assert meta["tuning"] == path.name
    # switched off, training ignores the record
    plain = Pipeline(settings(tmp_path, train_use_tuned=False), registry=registry)
    plain.run(inputs, register=False)
    assert plain.confidence == ConfidenceParams() and plain.tuned == Tuned()


def test_each_trial_fits_and_scores_on_events_before_the_test_cut(inputs, tmp_path,
                                                                   monkeypatch) -> None:
    cut, _ = split_cut(inputs.events, 0.15)
    seen = []
    prepare = Pipeline.prepare

    def spy(self, given):
        seen.append(int(event_ms(given.events).max()))
        return prepare(self, given)

    monkeypatch.setattr(Pipeline, "prepare", spy)
    tune(settings(tmp_path), inputs, model="als", trials=2, seed=1)
    cut_ms = int((cut - datetime(1970, 1, 1)).total_seconds() * 1000)
    assert len(seen) == 2 and max(seen) < cut_ms


def record(registry: Registry, model: str, seen_until: datetime | None, half_life: float) -> str:
    data = {} if seen_until is None else {"seen_until": seen_until.isoformat()}
    return registry.record_tuning({"model": model, "data": data, "trials": [], "best": {
        "params": {"factors": int(half_life)}, "confidence": {"half_life_days": half_life}}}).name


def test_training_takes_the_newest_usable_search_of_any_model(tmp_path) -> None:
    registry = Registry(tmp_path / "registry")
    cut = datetime(2025, 3, 10)
    hybrid = record(registry, "hybrid", cut, 10.0)
    als = record(registry, "als", cut - timedelta(days=1), 99.0)  # newer, though "als" < "hybrid"
    assert [r["file"] for r in registry.tunings()] == [als, hybrid]
    tuned = Tuned.latest(registry, cut=cut)
    assert tuned.confidence == {"half_life_days": 99.0}
    assert tuned.files == {"als": als, "hybrid": hybrid}
    # a search that saw the test period of a run on an older snapshot is not taken up
    # by it, nor one that does not say what it saw
    record(registry, "als", cut + timedelta(hours=1), 5.0)
    record(registry, "als", None, 6.0)
    assert Tuned.latest(registry, cut=cut) == tuned
    newer = Tuned.latest(registry, cut=cut + timedelta(days=1))
    assert newer.confidence == {"half_life_days": 5.0} and newer.params["als"] == {"factors": 5}


def test_serving_weighs_histories_with_the_versions_own_confidence(inputs, tmp_path) -> None:
    from recommender.serving.loaded import ServingModel

    s = settings(tmp_path)
    registry = Registry(s.registry_dir)
    confidence = ConfidenceParams(half_life_days=5.0, rated_only_fraction=0.9, recency_floor=0.3)
    report = Pipeline(s, registry=registry, confidence=confidence).run(inputs, promote=False)
    version = next(c.version for c in report.candidates if c.name == "als")
    loaded = ServingModel.load(registry, version, movies=lambda ids: {})
    assert loaded.confidence == confidence


def test_the_cli_searches_only_when_the_latest_record_is_old(inputs, tmp_path, monkeypatch) -> None:
    from ops.cli import main
    from recommender.training import cli

    s = settings(tmp_path)
    registry = Registry(s.registry_dir)
    registry.record_tuning({"model": "als", "best": {"params": {"factors": 9}}, "trials": []})
    monkeypatch.setattr(cli, "_settings", lambda **_: s)
    searched = []
    monkeypatch.setattr("recommender.training.inputs.load_inputs",
                        lambda *a, **k: searched.append(1) or inputs)
    fresh = CliRunner().invoke(main, ["tune", "--model", "als", "--if-older-than", "24"])
    assert fresh.exit_code == 0 and "skipped" in fresh.output and searched == []
    # a record two days old: the schedule is due
    path = next((s.registry_dir / "tuning").glob("*.json"))
    record = json.loads(path.read_text())
    record["recorded"] = (datetime.now(UTC) - timedelta(days=2)).isoformat(timespec="seconds")
    path.write_text(json.dumps(record))
    due = CliRunner().invoke(main, ["tune", "--model", "als", "--trials", "2", "--if-older-than", "24"])
    assert due.exit_code == 0, due.output
    assert searched == [1] and "recorded:" in due.output
    assert len(registry.tunings("als")) == 2
    assert np.isfinite(registry.tunings("als")[0]["best"]["ndcg@20"])
