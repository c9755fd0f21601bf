"""The contract of ``base.Recommender``, checked on every candidate (in the manner of
implicit's ``RecommenderBaseTestMixin``), plus the popularity model's own arithmetic.

The world: 20 items in two disjoint blocks, A = 0..9 and B = 10..19. 40 group-A users
(age 22, M) watch only block A, 60 group-B users (age 45, F) only block B. Item j of a
block is watched by 10 - j tenths of its group, a run of consecutive users starting at
7 j (mod the group size), so the blocks' items are mixed across users: A counts 40, 36,
..., 4 and B counts 60, 54, ..., 6. The right answers follow from that by hand (see each
test).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.models import model_class
from recommender.models.base import History, ModelError, Recommender, TrainSet
from recommender.models.itemknn import fill_rows, top_positive_rows
from recommender.models.popularity import top_unseen
from recommender.models.profiles import Profile, Profiles

BLOCK_A = np.arange(10)
BLOCK_B = np.arange(10, 20)
N_A, N_B = 40, 60
N_ITEMS = 20
AS_OF = datetime(2025, 3, 1)
PROFILE_A = Profile(age=22, gender="M")
PROFILE_B = Profile(age=45, gender="F")
COUNTS = {**{int(i): 4 * (10 - j) for j, i in enumerate(BLOCK_A)},
          **{int(i): 6 * (10 - j) for j, i in enumerate(BLOCK_B)}}
"""Users per item, from the world's definition (module docstring)."""
GLOBAL_ORDER = sorted(COUNTS, key=lambda i: (-COUNTS[i], i))
"""Global popularity, ties toward the lower index: 10, 11, 12, 13, 0, 1, 14 (1 and 14 tie
at 36), 2, 15, ..."""


def make_train(rows: list[list[int]], *, last_time: list[list[float]] | None = None,
               profiles: list[tuple[int, str]] | None = None, n_items: int = N_ITEMS,
               ) -> TrainSet:
    """A TrainSet of the given per-user item lists (confidence 1), user ids 1000 + row."""
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.concatenate([np.asarray(r, np.int32) for r in rows])
    matrix = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                           shape=(len(rows), n_items))
    matrix.sort_indices()
    times = (np.zeros(matrix.nnz) if last_time is None
             else np.concatenate([np.asarray(t, np.float64) for t in last_time]))
    user_ids = np.arange(1000, 1000 + len(rows), dtype=np.int64)
    records = [{"user_id": int(u), "age": age, "gender": gender, "occupation": "writer"}
               for u, (age, gender) in zip(user_ids, profiles or [], strict=False)]
    return TrainSet(matrix, user_ids,
                    np.array([f"m{i:04d}+2000" for i in range(n_items)], dtype=object),
                    times, AS_OF, Profiles.from_records(records))


def block_rows(block: np.ndarray, users: int) -> list[list[int]]:
    """Item j of ``block`` is watched by users 7j, 7j + 1, ... (mod ``users``), 10 - j
    tenths of them; user 0..users-1 get their lists."""
    rows: list[list[int]] = [[] for _ in range(users)]
    for j, item in enumerate(block):
        for t in range(users * (10 - j) // 10):
            rows[(7 * j + t) % users].append(int(item))
    return rows


def two_blocks() -> TrainSet:
    rows = block_rows(BLOCK_A, N_A) + block_rows(BLOCK_B, N_B)
    return make_train(rows, profiles=[(22, "M")] * N_A + [(45, "F")] * N_B)


CANDIDATES: dict[str, tuple[str, dict]] = {
    # Two factors, the true rank of a two-block world: one factor per block.
    "als": ("als", {"factors": 2, "iterations": 15, "regularization": 0.1, "alpha": 10.0,
                    "num_threads": 1, "random_state": 3, "min_segment_users": 10}),
    "popularity": ("popularity", {}),
    "popularity-segment": ("popularity", {"by_segment": True, "shrinkage": 10.0}),
    "itemknn-bm25": ("itemknn", {"kind": "bm25", "k": 10, "num_threads": 1}),
    "itemknn-cosine": ("itemknn", {"kind": "cosine", "k": 10, "num_threads": 1}),
    # No time spread in this world: the hybrid orders by rank fusion (its ranker's own
    # path is tests/unit/test_hybrid.py's)
    "hybrid": ("hybrid", {"factors": 2, "iterations": 15, "regularization": 0.1, "alpha": 10.0,
                          "num_threads": 1, "knn_k": 10, "n_als": 10, "n_knn": 5, "n_seg": 5,
                          "n_recent": 3}),
}
PERSONAL = ["als", "itemknn-bm25", "itemknn-cosine"]
"""Candidates that rank by what the user watched or liked (popularity does not)."""
IMPERSONAL = ["popularity", "popularity-segment"]
EXACT_BATCH = ["itemknn-bm25", "itemknn-cosine", "popularity", "popularity-segment"]
"""Candidates whose batch path equals ``recommend`` on the training history (ALS's batch
uses the trained factors, ``recommend`` a fresh fold-in)."""


@pytest.fixture(scope="module")
def train() -> TrainSet:
    return two_blocks()


@pytest.fixture(scope="module")
def fitted(train) -> dict[str, Recommender]:
    """Each candidate, trained once on ``train``."""
    out = {}
    for key, (name, params) in CANDIDATES.items():
        out[key] = model_class(name)(**params)
        out[key].fit(train)
    return out


@pytest.fixture(params=sorted(CANDIDATES))
def model(request, fitted) -> Recommender:
    return fitted[request.param]


@pytest.fixture(params=PERSONAL)
def personal(request, fitted) -> Recommender:
    return fitted[request.param]


def history_of(train: TrainSet, row: int) -> History:
    lo, hi = train.matrix.indptr[row], train.matrix.indptr[row + 1]
    return History(train.matrix.indices[lo:hi].astype(np.int32), train.matrix.data[lo:hi])


def check_list(recs: np.ndarray, n: int, banned: set[int]) -> None:
    assert recs.dtype == np.int32
    assert len(recs) <= n
    assert len(set(recs.tolist())) == len(recs)
    assert not banned & set(recs.tolist())
    assert np.all((recs >= 0) & (recs < N_ITEMS))


# -- recommend -------------------------------------------------------------------------------


def test_recommend_is_unique_int32_and_never_returns_history_or_exclude(model):
    history = History(np.array([0, 1, 2], np.int32), np.ones(3, np.float32))
    exclude = np.array([3, 10])
    for n in (1, 5, 20):
        recs = model.recommend(history, n, exclude=exclude)
        check_list(recs, n, {0, 1, 2, 3, 10})
    # The catalog runs out: every other item comes back, and nothing more.
    assert set(model.recommend(history, 50, exclude=exclude).tolist()) == \
        set(range(N_ITEMS)) - {0, 1, 2, 3, 10}


def test_recommend_bans_the_profiles_liked_and_disliked_titles(model):
    history = History(np.array([0], np.int32), np.ones(1, np.float32))
    profile = Profile(age=22, gender="M", liked=(1, 2), disliked=(3,))
    recs = model.recommend(history, N_ITEMS, profile=profile)
    check_list(recs, N_ITEMS, {0, 1, 2, 3})
    assert len(recs) == N_ITEMS - 4


def test_a_partial_block_a_history_gets_the_rest_of_block_a_first(personal):
    history = History(np.array([0, 1, 2], np.int32), np.ones(3, np.float32))
    recs = personal.recommend(history, 7)
    assert set(recs.tolist()) == set(range(3, 10))


@pytest.mark.parametrize("key", IMPERSONAL)
def test_popularity_ranks_any_history_by_popularity(fitted, key):
    history = History(np.array([10, 0], np.int32), np.ones(2, np.float32))
    assert fitted[key].recommend(history, 5).tolist() == \
        [i for i in GLOBAL_ORDER if i not in (10, 0)][:5]


def test_an_empty_history_is_a_cold_start(model):
    for profile in (None, PROFILE_A, Profile(liked=(12,))):
        assert np.array_equal(model.recommend(History.empty(), 8, profile=profile),
                              model.recommend_new(profile, 8))


# -- recommend_new ---------------------------------------------------------------------------


def test_cold_start_without_a_profile_returns_the_most_popular_unseen(model):
    assert model.recommend_new(None, 7).tolist() == GLOBAL_ORDER[:7]
    assert model.recommend_new(None, 7, exclude=np.array([11, 14])).tolist() == \
        [i for i in GLOBAL_ORDER if i not in (11, 14)][:7]


def test_cold_start_from_liked_block_b_titles_returns_block_b(personal):
    recs = personal.recommend_new(Profile(liked=(10, 11), disliked=(12,)), 7)
    # The remaining block-B items, even the least popular (B19, 6 users) over A0 (40).
    check_list(recs, 7, {10, 11, 12})
    assert set(recs.tolist()) == set(range(13, 20))


@pytest.mark.parametrize("key", IMPERSONAL)
def test_popularity_cold_start_only_bans_liked_and_disliked(fitted, key):
    # No demographics: the unknown segment, which has no training users, so global.
    recs = fitted[key].recommend_new(Profile(liked=(10, 11), disliked=(12,)), 7)
    assert recs.tolist() == [i for i in GLOBAL_ORDER if i not in (10, 11, 12)][:7]


# -- recommend_batch -------------------------------------------------------------------------


def test_batch_shape_pads_with_minus_one_and_never_returns_seen(model, train):
    rows = np.array([0, 9, 39, 40, 99, 9])
    batch = model.recommend_batch(rows, 25)
    assert batch.shape == (len(rows), 25) and batch.dtype == np.int32
    for row, recs in zip(rows, batch, strict=True):
        seen = set(history_of(train, row).items.tolist())
        valid = recs[recs >= 0]
        # The catalog runs out before 25: every unseen item, then only padding.
        assert set(valid.tolist()) == set(range(N_ITEMS)) - seen
        assert len(valid) == len(set(valid.tolist()))
        assert np.all(recs[len(valid):] == -1)
    assert model.recommend_batch(np.zeros(0, np.int64), 5).shape == (0, 5)


@pytest.mark.parametrize("key", EXACT_BATCH)
def test_batch_rows_agree_with_recommend_on_the_training_history(fitted, key, train):
    model = fitted[key]
    rows = np.arange(train.n_users)
    batch = model.recommend_batch(rows, 6)
    for row in rows:
        profile = train.profiles.profile(int(train.user_ids[row]))
        single = model.recommend(history_of(train, row), 6, profile=profile)
        assert batch[row].tolist() == single.tolist() + [-1] * (6 - len(single))


def test_batch_rejects_rows_outside_the_training_matrix(model, train):
    with pytest.raises(ModelError):
        model.recommend_batch(np.array([train.n_users]), 5)
    with pytest.raises(ModelError):
        model.recommend_batch(np.array([-1]), 5)


# -- persistence -----------------------------------------------------------------------------


def test_save_and_load_give_identical_answers(model, train, tmp_path):
    model.save(tmp_path)
    loaded = type(model).load(tmp_path)
    assert loaded.params == model.params
    assert np.array_equal(loaded.item_ids, train.item_ids)
    histories = [history_of(train, r) for r in (3, 45)] + [
        History(np.array([0, 12], np.int32), np.array([1.0, 0.5], np.float32))]
    for h in histories:
        assert np.array_equal(loaded.recommend(h, 8), model.recommend(h, 8))
    for profile in (None, PROFILE_A, PROFILE_B, Profile(liked=(14, 2), disliked=(5,))):
        assert np.array_equal(loaded.recommend_new(profile, 8), model.recommend_new(profile, 8))
    rows = np.arange(0, train.n_users, 7)
    assert np.array_equal(loaded.recommend_batch(rows, 8, seen=train.matrix),
                          model.recommend_batch(rows, 8))


def test_a_loaded_model_needs_seen_for_its_batch_path(model, train, tmp_path):
    model.save(tmp_path)
    loaded = type(model).load(tmp_path)
    with pytest.raises(ModelError, match="seen"):
        loaded.recommend_batch(np.array([0]), 5)
    with pytest.raises(ModelError, match="shape"):
        loaded.recommend_batch(np.array([0]), 5, seen=train.matrix[:, :5])


def test_save_writes_plain_numeric_arrays(model, train, tmp_path):
    written = model.save(tmp_path)
    arrays = [p for p in written if p.suffix == ".npy"]
    assert arrays
    for path in arrays:
        arr = np.load(path, allow_pickle=False)
        assert arr.dtype.kind in "biuf", path.name
    assert (tmp_path / "item_ids.txt").read_text().splitlines() == list(train.item_ids)


def corrupt_first_array(directory: Path, how: str) -> None:
    path = sorted(directory.glob("*.npy"))[0]
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        np.save(path, np.zeros((3, 2, 1), np.float32), allow_pickle=False)


@pytest.mark.parametrize("how", ["missing", "truncated", "wrong shape"])
def test_loading_a_corrupt_artifact_raises_model_error(model, tmp_path, how):
    model.save(tmp_path)
    corrupt_first_array(tmp_path, how)
    with pytest.raises(ModelError):
        type(model).load(tmp_path)


def test_loading_nothing_raises_model_error(model, tmp_path):
    with pytest.raises(ModelError):
        type(model).load(tmp_path / "absent")


def test_an_untrained_model_refuses_everything(model, tmp_path):
    fresh = type(model)(**model.params)
    with pytest.raises(ModelError):
        fresh.recommend(History(np.array([0], np.int32), np.ones(1, np.float32)))
    with pytest.raises(ModelError):
        fresh.recommend_new(None)
    with pytest.raises(ModelError):
        fresh.recommend_batch(np.array([0]), seen=sp.csr_matrix((1, N_ITEMS)))
    with pytest.raises(ModelError):
        fresh.save(tmp_path)


def test_an_empty_training_set_is_refused(model):
    empty = TrainSet(sp.csr_matrix((0, 0), dtype=np.float32), np.zeros(0, np.int64),
                     np.zeros(0, dtype=object), np.zeros(0), AS_OF)
    with pytest.raises(ModelError):
        type(model)(**model.params).fit(empty)


# -- popularity's own arithmetic -------------------------------------------------------------

DAY = 86_400.0


def test_popularity_decays_with_a_half_life():
    # Item 0: 4 users, 30 days ago; item 1: 2 users, today. Half-life 7 days: item 0 is
    # worth 4 * 0.5**(30/7) = 0.20 < 2; half-life 1,000 days: 4 * 0.98 = 3.92 > 2.
    rows = [[0]] * 4 + [[1]] * 2
    ages = [[30 * DAY]] * 4 + [[0.0]] * 2
    train = make_train(rows, last_time=ages, n_items=2)
    short = model_class("popularity")(half_life_days=7)
    short.fit(train)
    long = model_class("popularity")(half_life_days=1000)
    long.fit(train)
    assert short.recommend_new(None, 2).tolist() == [1, 0]
    assert long.recommend_new(None, 2).tolist() == [0, 1]
    assert short.arrays()["scores"][0] == pytest.approx(4 * 0.5 ** (30 / 7), rel=1e-6)


def test_popularity_per_segment_shrinks_small_segments_toward_global(train):
    # Score (seg + k * global / N) / (n_s + k) with k = 10, N = 100. Segment A (40 users):
    # A0 (40 + 10 * 0.40) / 50 = 0.88 ... A8 (8 + 0.8) / 50 = 0.176, then B10
    # (0 + 6) / 50 = 0.12 beats A9 (4 + 0.4) / 50 = 0.088. Segment B (60 users): B19
    # (6 + 0.6) / 70 = 0.094 still beats A0 (0 + 4) / 70 = 0.057.
    seg = model_class("popularity")(by_segment=True, shrinkage=10)
    seg.fit(train)
    assert seg.recommend_new(PROFILE_A, 10).tolist() == list(range(9)) + [10]
    assert seg.recommend_new(PROFILE_B, 11).tolist() == list(range(10, 20)) + [0]
    assert seg.arrays()["segment_scores"][PROFILE_A.segment, 0] == pytest.approx(0.88)
    # One 70-year-old who watched only B19 (the least popular): a lone user barely moves a
    # strongly shrunk segment off the global order, but leads an unshrunk one.
    rows = [list(r) for r in train.matrix.tolil().rows] + [[19]]
    people = [(22, "M")] * N_A + [(45, "F")] * N_B + [(70, "F")]
    small = make_train(rows, profiles=people)
    old = Profile(age=70, gender="F")
    strong = model_class("popularity")(by_segment=True, shrinkage=1000)
    strong.fit(small)
    none = model_class("popularity")(by_segment=True, shrinkage=0)
    none.fit(small)
    assert strong.recommend_new(old, 5).tolist() == GLOBAL_ORDER[:5]
    assert none.recommend_new(old, 1).tolist() == [19]


def test_bad_params_are_refused():
    for name, params in [("popularity", {"half_life_days": 0}),
                         ("popularity", {"shrinkage": -1}),
                         ("itemknn", {"kind": "jaccard"}), ("itemknn", {"k": 0}),
                         ("als", {"factors": 0}), ("als", {"regularization": -1.0})]:
        with pytest.raises(ModelError):
            model_class(name)(**params)


def test_ties_at_the_last_place_go_to_the_lower_index(model):
    # Without B11, A1 and B14 (36 users each) compete for the fifth place: A1 wins.
    assert model.recommend_new(None, 5, exclude=np.array([11])).tolist() == [10, 12, 13, 0, 1]


# -- the batch paths' ranking helpers, against their definitions ------------------------------


def test_top_positive_rows_orders_by_score_then_lower_index():
    scores = np.array([[0.0, 2.0, 1.0, 1.0, 1.0, 0.0],     # three-way tie for places 2-4
                       [0.0, 0.0, 0.5, 0.0, 0.0, 0.0],     # one positive entry only
                       [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    assert top_positive_rows(scores, 3).tolist() == [[1, 2, 3], [2, -1, -1], [-1, -1, -1]]
    assert top_positive_rows(scores[:, ::-1], 2).tolist() == [[4, 1], [3, -1], [-1, -1]]


def test_top_unseen_skips_banned_items_and_pads():
    order = np.array([4, 0, 3, 1, 2])
    banned = np.zeros((3, 5), bool)
    banned[0, [4, 3]] = True
    banned[1, :4] = True
    assert top_unseen(order, banned, 3).tolist() == [[0, 1, 2], [4, -1, -1], [4, 0, 3]]


def test_fill_rows_completes_short_rows_in_order():
    picks = np.array([[7, 8, -1, -1], [-1, -1, -1, -1], [1, 2, 3, 4]], np.int32)
    fill = np.array([[5, 6, 0, -1], [9, -1, -1, -1], [0, 0, 0, 0]], np.int32)
    assert fill_rows(picks, fill).tolist() == [[7, 8, 5, 6], [9, -1, -1, -1], [1, 2, 3, 4]]
