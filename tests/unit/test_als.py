"""ALS beyond the shared contract: the fold-in solve is the training objective's own,
cold start by segment, single-threaded BLAS where implicit wants it, memory-mapped
factors after load, and the batch path against a plain numpy ranking."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import scipy.sparse as sp
import threadpoolctl

import recommender.models.als as als_module
from recommender.models.als import ALSRecommender
from recommender.models.base import History, TrainSet, is_mapped, top_n
from recommender.models.profiles import Profile
from tests.unit.test_models_contract import (
    GLOBAL_ORDER,
    PROFILE_A,
    PROFILE_B,
    two_blocks,
)

ALPHA, LAMBDA, FACTORS = 5.0, 5.0, 8


@pytest.fixture(scope="module")
def random_world() -> TrainSet:
    """300 users x 50 items, 15% filled, confidences uniform in [0.1, 2]."""
    rng = np.random.default_rng(0)
    matrix = sp.random(300, 50, density=0.15, format="csr", dtype=np.float32,
                       random_state=rng)
    matrix.data[:] = rng.uniform(0.1, 2.0, matrix.nnz).astype(np.float32)
    matrix.sort_indices()
    return TrainSet(matrix, np.arange(300, dtype=np.int64),
                    np.array([f"m{i:04d}+2000" for i in range(50)], dtype=object),
                    np.zeros(matrix.nnz), datetime(2025, 3, 1))


@pytest.fixture(scope="module")
def random_model(random_world) -> ALSRecommender:
    model = ALSRecommender(factors=FACTORS, regularization=LAMBDA, alpha=ALPHA, iterations=30,
                           num_threads=1, random_state=1)
    model.fit(random_world)
    return model


def test_folding_in_a_training_history_gives_back_the_trained_factor(random_model,
                                                                    random_world):
    # Training converges to the same least-squares solution the fold-in computes, so a
    # training user's history must give back their factor. Measured: max relative error
    # 0.04, min cosine 0.9994; implicit's own confidence (c = alpha r) gives 0.21 and
    # 0.985, dropping lambda 0.25, dropping Y^T Y 1.1, ignoring the weights 0.5.
    m = random_world.matrix
    for u in range(random_world.n_users):
        lo, hi = m.indptr[u], m.indptr[u + 1]
        x = random_model.user_vector(History(m.indices[lo:hi], m.data[lo:hi]))
        y = random_model.user_factors[u]
        assert np.linalg.norm(x - y) / np.linalg.norm(y) < 0.1
        assert x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) > 0.995


def test_repeated_history_items_count_as_one_with_summed_weight(random_model):
    once = random_model.user_vector(History(np.array([3, 7], np.int32),
                                            np.array([1.5, 0.5], np.float32)))
    split = random_model.user_vector(History(np.array([3, 7, 3], np.int32),
                                             np.array([1.0, 0.5, 0.5], np.float32)))
    np.testing.assert_allclose(split, once, rtol=1e-5)


def test_batch_is_the_top_of_the_trained_scores_without_seen_items(random_model,
                                                                 random_world):
    rows = np.arange(0, 300, 3)
    batch = random_model.recommend_batch(rows, 10)
    m = random_world.matrix
    for row, recs in zip(rows, batch, strict=True):
        scores = random_model.item_factors @ random_model.user_factors[row]
        seen = m.indices[m.indptr[row]:m.indptr[row + 1]]
        assert recs.tolist() == top_n(scores, 10, seen).tolist()


def test_cold_start_uses_the_segment_mean_then_popularity():
    train = two_blocks()
    model = ALSRecommender(factors=2, regularization=0.1, alpha=10.0, iterations=15,
                           num_threads=1, random_state=3, min_segment_users=50)
    model.fit(train)
    # Segment B has 60 training users (>= 50): its mean vector ranks block B first.
    assert set(model.recommend_new(PROFILE_B, 10).tolist()) == set(range(10, 20))
    # Segment A has 40 (< 50), a 70-year-old's segment none: both fall back to popularity.
    assert model.recommend_new(PROFILE_A, 5).tolist() == GLOBAL_ORDER[:5]
    assert model.recommend_new(Profile(age=70), 5).tolist() == GLOBAL_ORDER[:5]


def test_blas_runs_one_thread_in_fit_and_batch(monkeypatch, random_world):
    seen_threads: list[int] = []

    def blas_threads() -> None:
        seen_threads.extend(api["num_threads"] for api in threadpoolctl.threadpool_info()
                            if api["user_api"] == "blas")

    def recording_alternate(*args, **kwargs):
        blas_threads()
        return real_alternate(*args, **kwargs)

    def recording_topk(*args, **kwargs):
        blas_threads()
        return real_topk(*args, **kwargs)

    real_topk, real_alternate = als_module.topk, als_module.alternate
    monkeypatch.setattr(als_module, "alternate", recording_alternate)
    monkeypatch.setattr(als_module, "topk", recording_topk)
    with threadpoolctl.threadpool_limits(2, "blas"):
        model = ALSRecommender(factors=4, iterations=2, num_threads=1)
        model.fit(random_world)
        model.recommend_batch(np.arange(10), 5)
    assert seen_threads and set(seen_threads) == {1}


def test_loaded_factors_stay_memory_mapped(random_model, random_world, tmp_path):
    random_model.save(tmp_path)
    loaded = ALSRecommender.load(tmp_path)
    assert is_mapped(loaded.user_factors)
    assert is_mapped(loaded.item_factors)
    history = History(np.array([1, 2, 3], np.int32), np.ones(3, np.float32))
    assert np.array_equal(loaded.user_vector(history), random_model.user_vector(history))


def test_alternate_reproduces_implicits_fit_and_splits_the_cg_steps() -> None:
    """With equal steps the half-iteration driver is implicit's own fit, bit for bit; with
    fewer item-side steps it is a different (still converging) fit."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recommender.models.als_solve import alternate

    cui = sp.random(400, 150, density=0.05, format="csr", dtype=np.float32, random_state=3)
    cui.data = 1 + 20 * cui.data
    with threadpool_limits(1, "blas"):
        ref = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=1.0,
                                      dtype=np.float32, iterations=4, random_state=0)
        ref.cg_steps = 2
        ref.fit(cui, show_progress=False)
        users, items = alternate(cui, factors=8, iterations=4, regularization=0.1,
                                 user_cg_steps=2, item_cg_steps=2)
        split_u, split_i = alternate(cui, factors=8, iterations=4, regularization=0.1,
                                     user_cg_steps=2, item_cg_steps=1)
    assert np.array_equal(users, ref.user_factors) and np.array_equal(items, ref.item_factors)
    assert not np.array_equal(split_i, items)
    # both fits explain the observed entries far better than the random start
    rows, cols = cui.nonzero()
    for u, i in ((users, items), (split_u, split_i)):
        assert np.mean(np.sum(u[rows] * i[cols], axis=1)) > 0.5


def _loss(model: ALSRecommender, train: TrainSet) -> float:
    """The weighted squared error ALS minimises, over every (user, item) cell (small)."""
    p = (train.matrix.toarray() > 0).astype(np.float64)
    c = 1 + ALPHA * train.matrix.toarray()
    pred = model.user_factors.astype(np.float64) @ model.item_factors.T.astype(np.float64)
    return float(np.sum(c * (p - pred) ** 2)
                 + LAMBDA * (np.sum(model.user_factors ** 2) + np.sum(model.item_factors ** 2)))


def test_a_warm_start_reaches_the_cold_fit_in_fewer_iterations(random_world) -> None:
    """Yesterday's item factors (a model of 40 of today's 50 items, in another order)
    start today's fit: 2 warm iterations get as close to the 30-iteration fit as 6 cold
    ones, and the facts say how much was known."""
    def als(iterations: int) -> ALSRecommender:
        return ALSRecommender(factors=FACTORS, regularization=LAMBDA, alpha=ALPHA,
                              iterations=iterations, num_threads=1, random_state=1)

    yesterday_rows = np.arange(40)[::-1]
    yesterday = TrainSet(random_world.matrix[:, yesterday_rows].tocsr(), random_world.user_ids,
                         random_world.item_ids[yesterday_rows], np.zeros(0), datetime(2025, 2, 28))
    old = als(30)
    old.fit(yesterday)
    full, cold, warm = als(30), als(6), als(30)
    full.fit(random_world)
    cold.fit(random_world)
    assert warm.warm_from(old.item_ids, old.item_factors, iterations=2)
    warm.fit(random_world)
    assert warm.fit_facts["warm_start"] == {"items_known": 40, "items": 50, "iterations": 2}
    target = _loss(full, random_world)
    assert _loss(warm, random_world) - target < _loss(cold, random_world) - target
    # known items start where yesterday ended: after 2 iterations they are still close
    moved = np.linalg.norm(warm.item_factors[:40][::-1] - old.item_factors, axis=1)
    assert np.median(moved) < np.median(np.linalg.norm(old.item_factors, axis=1))
    # one fit only: the next fit of the same object is cold again
    warm.fit(random_world)
    assert "warm_start" not in warm.fit_facts


def test_a_warm_start_needs_the_same_number_of_factors(random_model) -> None:
    other = ALSRecommender(factors=FACTORS + 1)
    assert not other.warm_from(random_model.item_ids, random_model.item_factors, iterations=3)
    from recommender.models.als_solve import alternate

    with pytest.raises(ValueError, match="item_init"):
        alternate(sp.random(5, 4, density=0.5, format="csr", dtype=np.float32), factors=2,
                  iterations=1, regularization=0.1, user_cg_steps=1, item_cg_steps=1,
                  item_init=np.zeros((3, 2), np.float32))
