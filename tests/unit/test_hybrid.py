"""The hybrid's own path: the held-out split it learns from, the ranker it learns, the same
answers after a save and load, and serving without LightGBM, pandas or pyarrow."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from offline_eval.evaluate import evaluate
from offline_eval.simulated import compact_sessions, history_table, simulate
from offline_eval.split import build_truth, temporal_split
from recommender.dataset import build_trainset
from recommender.models.base import History, TrainSet
from recommender.models.hybrid import HybridRecommender, validation_base
from recommender.models.hybrid_features import FEATURES, release_years, row_ranks, top_per_row
from recommender.models.popularity import PopularityRecommender
from recommender.models.profiles import Profile, Profiles
from recommender.training.pipeline import split_cut
from simulator.world import World, WorldSpec

START = datetime(2025, 3, 1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split():
    world = World.build(WorldSpec(seed=11, n_users=3000, n_movies=600))
    table = history_table(world, compact_sessions(simulate(world, start=START, days=12, seed=11)),
                          start=START)
    users = np.unique(table["user_id"].to_numpy())
    profiles = Profiles.from_records(r for u in users.tolist() if (r := world.user_record(int(u))))
    cut, end = split_cut(table, 0.15)
    train_rows, test_rows = temporal_split(table, cut, end=end)
    train = build_trainset(train_rows, as_of=cut, profiles=profiles)
    return train, build_truth(train, test_rows)


@pytest.fixture(scope="module")
def hybrid(split) -> HybridRecommender:
    model = HybridRecommender(factors=8, iterations=8, knn_k=50, n_als=40, n_knn=20, n_seg=20,
                              n_recent=10, trees=30, num_threads=1)
    model.fit(split[0])
    return model


def test_the_held_out_split_moves_the_latest_interactions_out_of_the_base() -> None:
    matrix = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 4.0]], np.float32))
    last = np.array([100.0, 10.0, 50.0, 5.0])  # aligned with matrix.data
    train = TrainSet(matrix, np.array([1, 2]), np.array(["a+2000", "b+2000", "c+2000"], dtype=object),
                     last, START)
    base, held = validation_base(train, 0.3)  # span 100 s: the last 30 s are held out
    assert base.matrix.toarray().tolist() == [[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]]
    assert held.toarray().tolist() == [[0.0, 2.0, 0.0], [0.0, 0.0, 4.0]]
    assert base.last_time.tolist() == [70.0, 20.0] and base.as_of == START - timedelta(seconds=30)


def test_features_and_ranks_helpers() -> None:
    assert release_years(np.array(["up+2009", "no+year", "x+0042"], dtype=object))[0] == 2009
    assert np.isnan(release_years(np.array(["no+year"], dtype=object))).all()
    rows, items = np.array([0, 0, 0, 1]), np.array([5, 3, 9, 2])
    assert top_per_row(rows, items, np.array([1.0, 2.0, 1.0, 0.5]), 3, 2).tolist() == [
        [3, 5], [2, -1], [-1, -1]]
    assert len(FEATURES) == 19 and len(set(FEATURES)) == 19
    # ties share their best rank, whatever the items' order (0 = highest)
    ranks = row_ranks(np.array([0, 0, 0, 0, 0, 1, 1, 1]), np.array([0, 0, 0.5, 0, 0.2, 3, 1, 3]))
    assert ranks.tolist() == [2, 2, 0, 2, 1, 0, 2, 0]


def test_the_ranker_learns_from_the_held_out_period_and_beats_popularity(split, hybrid) -> None:
    train, truth = split
    assert hybrid.fit_facts["ranker"] == "binary"  # the default objective
    assert hybrid.fit_facts["ranker_users"] >= 50 and hybrid.fit_facts["ranker_positives"] > 0
    mine = evaluate(hybrid, train, truth, k=20, latency_sample=5)
    popularity = PopularityRecommender(by_segment=True)
    popularity.fit(train)
    base = evaluate(popularity, train, truth, k=20, latency_sample=5)
    assert mine.means["ndcg@20"] > base.means["ndcg@20"]


def test_answers_never_hold_the_history_or_the_banned(hybrid, split) -> None:
    train = split[0]
    row = int(np.argmax(np.diff(train.matrix.indptr)))
    lo, hi = train.matrix.indptr[row], train.matrix.indptr[row + 1]
    history = History(train.matrix.indices[lo:hi].astype(np.int32), train.matrix.data[lo:hi])
    exclude = np.array([0, 1, 2])
    recs = hybrid.recommend(history, 20, exclude=exclude, profile=Profile(age=30, gender="F", liked=(7,)))
    assert len(recs) == 20 and len(set(recs.tolist())) == 20
    assert not set(recs.tolist()) & (set(history.items.tolist()) | {0, 1, 2, 7})
    cold = hybrid.recommend_new(Profile(age=16, gender="M"), 20)
    assert len(cold) == 20 and cold.dtype == np.int32


def test_the_one_user_path_equals_the_sparse_block_it_replaces(hybrid, split) -> None:
    """``_block_one`` (serving, no sparse matrices) against ``_block`` of the same row."""
    train = split[0]
    rng = np.random.default_rng(3)
    n_items = len(hybrid.item_ids)
    fields = ("als", "knn", "user_genres", "user_items", "user_pop", "pop_rows")
    for k, new in [(1, False), (8, False), (40, False), (5, True), (0, True)]:
        items = rng.choice(n_items, size=k, replace=False).astype(np.int32)
        weights = rng.uniform(0.1, 3.0, size=k).astype(np.float32)
        vector = rng.normal(size=hybrid._als.item_factors.shape[1]).astype(np.float32)
        banned = np.zeros((1, n_items), dtype=bool)
        fast = hybrid._block_one(vector, History(items, weights), 3, banned, new=new)
        row = sp.csr_matrix((weights, (np.zeros(k, np.int64), items.astype(np.int64))),
                            shape=(1, n_items))
        slow = hybrid._block(vector[None, :], row, np.array([3]), banned, new=new)
        for name in fields:
            np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=1e-5,
                                       atol=1e-6, err_msg=f"{name}, {k} items, new={new}")
    # a repeated item is summed, as a sparse row sums it
    twice = History(np.array([4, 4, 9], np.int32), np.array([1.0, 2.0, 1.0], np.float32))
    once = History(np.array([4, 9], np.int32), np.array([3.0, 1.0], np.float32))
    assert np.array_equal(hybrid.recommend(twice, 20), hybrid.recommend(once, 20))
    assert train.n_items == n_items


def test_save_and_load_answer_the_same_and_serve_without_lightgbm_or_pandas(hybrid, split,
                                                                          tmp_path) -> None:
    train = split[0]
    hybrid.save(tmp_path / "m")
    row = int(np.argmax(np.diff(train.matrix.indptr)))
    lo, hi = train.matrix.indptr[row], train.matrix.indptr[row + 1]
    items, weights = train.matrix.indices[lo:hi].tolist(), train.matrix.data[lo:hi].tolist()
    want = hybrid.recommend(History(np.array(items, np.int32), np.array(weights, np.float32)), 20)
    script = f"""
import json, sys
import numpy as np
from recommender.models.base import History
from recommender.models.hybrid import HybridRecommender
model = HybridRecommender.load({str(tmp_path / "m")!r})
recs = model.recommend(History(np.array({items}, np.int32), np.array({weights}, np.float32)), 20)
heavy = sorted(m for m in ("lightgbm", "pandas", "pyarrow") if m in sys.modules)
print(json.dumps({{"recs": recs.tolist(), "heavy": heavy}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"recs": want.tolist(), "heavy": []}
