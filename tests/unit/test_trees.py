"""The numpy tree predictor gives what LightGBM gives."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.models.trees import TreeArrays, from_lightgbm


def _booster(x: np.ndarray, y: np.ndarray, group: list[int], **params):
    import lightgbm

    data = lightgbm.Dataset(x, y, group=group, params={"verbosity": -1, "use_missing": False})
    return lightgbm.train({"objective": "lambdarank", "num_leaves": 15, "min_data_in_leaf": 5,
                           "learning_rate": 0.1, "verbosity": -1, "seed": 1, "use_missing": False,
                           "num_threads": 1, **params}, data, num_boost_round=40)


@pytest.mark.parametrize("objective", ["binary", "lambdarank"])  # the hybrid's default, and another
@pytest.mark.parametrize("max_depth", [-1, 4])
def test_predictions_equal_lightgbm_s_even_with_nans(max_depth: int, objective: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 6))
    x[:, 4] = np.where(rng.random(3000) < 0.4, 0.0, x[:, 4])       # zero-heavy feature
    y = (x[:, 0] + x[:, 2] * 0.5 + rng.normal(scale=0.3, size=3000) > 0.4).astype(int)
    booster = _booster(x, y, [30] * 100, max_depth=max_depth, objective=objective)
    trees = from_lightgbm(booster.dump_model())
    probe = rng.normal(size=(2000, 6))
    probe[::5, 4] = 0.0
    probe[::7, 2] = np.nan  # NaN: both read it as 0.0 (missing type None)
    # the raw score: the binary objective's probability is its logistic, which orders
    # the same (the hybrid only orders)
    np.testing.assert_allclose(trees.predict(probe), booster.predict(probe, raw_score=True),
                               rtol=1e-9, atol=1e-12)
    assert len(trees.value) == booster.num_trees()
    assert trees.depth >= 3 and (max_depth < 0 or trees.depth <= max_depth)


def test_a_stump_and_a_padded_leaf_by_hand() -> None:
    """Depth 2: tree 0 splits on feature 0 at 0.5, then its left child on feature 1 at 0;
    its right child was a leaf (3.0), padded: both of its leaves hold 3.0."""
    trees = TreeArrays(np.array([[0, 1, 0]], np.int32), np.array([[0.5, 0.0, np.inf]]),
                       np.array([[-1.0, 1.0, 3.0, 3.0]]))
    x = np.array([[0.2, -1.0], [0.2, 2.0], [0.9, 5.0], [np.nan, 0.5]])
    assert trees.depth == 2
    assert trees.predict(x).tolist() == [-1.0, 1.0, 3.0, 1.0]  # NaN -> 0 <= 0.5: left
    assert trees.predict(np.zeros((0, 2))).tolist() == []


def test_round_trip_through_arrays_and_refused_models() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 3))
    booster = _booster(x, (x[:, 1] > 0).astype(int), [20] * 30)
    trees = from_lightgbm(booster.dump_model())
    again = TreeArrays.from_arrays(trees.arrays("r_"), "r_")
    np.testing.assert_array_equal(again.predict(x), trees.predict(x))
    dump = booster.dump_model()
    dump["tree_info"][0]["tree_structure"]["decision_type"] = "=="
    with pytest.raises(ValueError, match="numerical"):
        from_lightgbm(dump)
    dump["tree_info"][0]["tree_structure"].update(decision_type="<=", missing_type="NaN")
    with pytest.raises(ValueError, match="use_missing=false"):
        from_lightgbm(dump)
    with pytest.raises(ValueError, match="complete trees"):
        TreeArrays.from_arrays({"feature": np.zeros((1, 3), np.int32), "threshold": np.zeros((1, 2)),
                                "value": np.zeros((1, 4))})
