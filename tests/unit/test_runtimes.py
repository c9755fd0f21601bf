"""Runtimes for the watched fraction, the same in training and serving
(``recommender/runtimes.py``): the serving rule (metadata, else the runtime training
stored with the version, else the flat default of an older version), and a hand-built
log whose fold-in weights are worked out below."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest

from movierec.wire import Watch
from recommender.dataset import build_trainset_with_runtimes, cut_ms
from recommender.models import model_class
from recommender.registry import Registry
from recommender.runtimes import RUNTIME_ARRAY, serving_runtimes
from recommender.serving.core import history_of
from recommender.serving.loaded import ServingModel
from recommender.serving.state import ModelUnavailable
from stores.online import UserState
from tests.unit.test_dataset import at, table_of
from tests.unit.test_models_contract import N_ITEMS
from tests.unit.test_serving_model import METADATA, MOVIES, fit, metadata

STORED = np.arange(N_ITEMS, dtype=np.float32) + 30  # item i: 30 + i minutes


def test_serving_takes_the_stored_runtimes_else_metadata_then_the_default():
    """A runtime the metadata learned after training (a) does not override the one the
    model was trained with; only a version without stored runtimes reads the metadata."""
    ids = ["a", "b", "c"]
    stored = np.array([40, 50, 60], np.float32)
    out = serving_runtimes(ids, {"a": 100, "c": 120}, stored, 90.0)
    assert out.dtype == np.float32 and out.tolist() == [40, 50, 60]
    assert serving_runtimes(ids, {"a": 100}, None, 90.0).tolist() == [100, 90, 90]


@pytest.mark.parametrize("stored", [np.ones(2, np.float32), np.array([1, 0, 1], np.float32),
                                    np.array([1, np.nan, 1], np.float32)])
def test_broken_stored_runtimes_are_refused(stored):
    with pytest.raises(ValueError, match=RUNTIME_ARRAY):
        serving_runtimes(["a", "b", "c"], {}, stored, 90.0)


def test_a_served_version_uses_the_runtimes_stored_with_it(tmp_path):
    """Every item gets the stored runtime, whether its metadata has none (items 5, 6, 7:
    runtime "", "abc", "0"; 19: no metadata) or another one (100 minutes)."""
    reg = Registry(tmp_path / "registry")
    mv = reg.register(fit("popularity"), metadata=METADATA, arrays={RUNTIME_ARRAY: STORED})
    served = ServingModel.load(reg, mv.version, movies=metadata(MOVIES))
    assert served.runtimes.dtype == np.float32 and served.runtimes.tolist() == STORED.tolist()


def test_a_version_without_stored_runtimes_still_loads_with_the_flat_default(tmp_path):
    reg = Registry(tmp_path / "registry")
    mv = reg.register(fit("popularity"), metadata=METADATA)
    meta = json.loads((mv.path / "meta.json").read_text())
    del meta["arrays"]  # as an older registry wrote it
    (mv.path / "meta.json").write_text(json.dumps(meta))
    served = ServingModel.load(reg, mv.version, movies=metadata(MOVIES), default_runtime=45.0)
    assert [served.runtimes[i] for i in (4, 5, 19)] == [100.0, 45.0, 45.0]
    served.smoke_check()


def test_a_version_with_broken_stored_runtimes_is_unavailable(tmp_path):
    reg = Registry(tmp_path / "registry")
    mv = reg.register(fit("popularity"), metadata=METADATA, arrays={RUNTIME_ARRAY: STORED[:5]})
    with pytest.raises(ModelUnavailable, match=rf"{mv.version}.*{RUNTIME_ARRAY} has shape \(5,\)"):
        ServingModel.load(reg, mv.version, movies=metadata(MOVIES))


def test_fold_in_weight_equals_the_training_confidence(tmp_path):
    """"x+2000" has no runtime anywhere: 20 users watched 40 minutes (minute 39), user 21
    watched 20, so training estimates 40 minutes (the 0.95 quantile of 21 lengths is the
    20th, 40) and user 21's fraction is 20/40 = 0.5; the flat 90 minutes gave 20/90.
    "y+2000" has an API runtime of 100 in both."""
    events = [Watch(at(0), u, "x+2000", 39) for u in range(1, 21)]
    events += [Watch(at(0), 21, "x+2000", 19), Watch(at(0), 21, "y+2000", 49)]
    as_of = at(0) + timedelta(days=30)  # one half-life: recency 0.5
    train, runtime = build_trainset_with_runtimes(table_of(events), as_of=as_of,
                                                  runtimes={"y+2000": 100})
    assert list(train.item_ids) == ["x+2000", "y+2000"] and runtime.tolist() == [40.0, 100.0]
    model = model_class("popularity")()
    model.fit(train)
    reg = Registry(tmp_path / "registry")
    movies = {"x+2000": {"adult": "0", "content_rating": "PG", "runtime": ""},
              "y+2000": {"adult": "0", "content_rating": "PG", "runtime": "100"}}
    new = reg.register(model, metadata=METADATA, arrays={RUNTIME_ARRAY: runtime})
    old = reg.register(model, metadata=METADATA)  # as registered before runtimes were stored
    t = cut_ms(at(0))
    state = UserState(progress={"x+2000": 19, "y+2000": 49}, recent={"x+2000": t, "y+2000": t})
    weights = {}
    for key, mv in (("new", new), ("old", old)):
        served = ServingModel.load(reg, mv.version, movies=metadata(movies))
        weights[key] = history_of(state, served.index, served.runtimes, now_ms=cut_ms(as_of),
                                  params=served.confidence, rating_scale=served.rating_scale).weights
    trained = train.matrix[int(np.searchsorted(train.user_ids, 21))].toarray()[0]
    np.testing.assert_allclose(trained, [0.5 * 0.5, 0.5 * 0.5], rtol=1e-6)
    np.testing.assert_array_equal(weights["new"], trained)
    np.testing.assert_allclose(weights["old"], [20 / 90 * 0.5, 0.5 * 0.5], rtol=1e-6)
