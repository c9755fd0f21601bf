"""``ServingModel``: real candidates (ALS, popularity, item kNN) trained on a tiny world,
registered in a file registry, loaded as the service loads them, and asked as users ask.

The world is the contract tests' two-block world (``test_models_contract``): items
m0000..m0009 (block A) and m0010..m0019 (block B), watched by disjoint user groups; every
candidate's popularity order is ``GLOBAL_ORDER`` (users per item, worked out by hand
there). The movie metadata marks four items unsafe for minors, each for another reason:
m0000 rated R, m0010 NC-17, m0011 adult, m0019 without metadata.

With ``n = 20`` (the whole catalog) every answer must be exactly the catalog minus what
the user saw, the profile's liked/disliked titles, and (for a possible minor) the unsafe
items: that pins "never a seen movie", "never an unsafe movie for a minor" and "an adult
can get one" at once, whatever the ranking.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recommender.models import model_class
from recommender.models.als import ALSRecommender
from recommender.models.base import History, Recommender, TrainSet, is_mapped, top_n
from recommender.models.profiles import Profile
from recommender.registry import ModelVersion, Registry, artifact_digest
from recommender.serving.core import (
    PATH_COLDSTART_DEMOGRAPHIC,
    PATH_COLDSTART_PROFILE,
    PATH_MODEL,
    PATH_POPULAR,
    history_of,
    profile_of,
)
from recommender.serving.loaded import ServingModel
from recommender.serving.state import ModelUnavailable
from stores.online import UserState
from tests.unit.test_models_contract import (
    CANDIDATES,
    GLOBAL_ORDER,
    N_ITEMS,
    two_blocks,
)

IDS = [f"m{i:04d}+2000" for i in range(N_ITEMS)]
ALL = set(range(N_ITEMS))
UNSAFE = {0, 10, 11, 19}
MODELS = ("als", "popularity", "itemknn-bm25")
DAY_MS = 86_400_000
T0 = 1_740_000_000_000
METADATA = {"code": {"commit": "0" * 40, "dirty": False}, "packages": {},
            "data": {"snapshot_id": "0123456789abcdef", "partitions": {"0": [0, 9, 10]},
                     "rows": 10},
            "training": {"seconds": 0.1, "peak_memory_bytes": 1}}


def movie_meta() -> dict[str, dict[str, str]]:
    movies = {m: {"adult": "0", "content_rating": "PG-13", "runtime": "100"} for m in IDS}
    movies[IDS[0]]["content_rating"] = "R"
    movies[IDS[10]]["content_rating"] = "NC-17"
    movies[IDS[11]] = {"adult": "1", "content_rating": "", "runtime": "100"}
    movies[IDS[5]]["runtime"] = ""
    movies[IDS[6]]["runtime"] = "abc"
    movies[IDS[7]]["runtime"] = "0"
    del movies[IDS[19]]
    return movies


MOVIES = movie_meta()


def metadata(table: dict[str, dict[str, str]]):
    """``ServingModel.load``'s ``movies``: the stored metadata of the asked ids, like
    ``OnlineStore.movies`` (ids without any are left out)."""
    return lambda ids: {m: table[m] for m in ids if m in table}


def fit(key: str) -> Recommender:
    name, params = CANDIDATES[key]
    model = model_class(name)(**params)
    model.fit(two_blocks())
    return model


def register(tmp: Path, model: Recommender) -> tuple[Registry, ModelVersion]:
    """``model`` in a fresh registry under ``tmp``."""
    reg = Registry(tmp / "registry")
    return reg, reg.register(model, metadata=METADATA)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, tuple[Recommender, ServingModel]]:
    """Each candidate, fitted in memory and loaded back through one registry."""
    reg = Registry(tmp_path_factory.mktemp("serving") / "registry")
    out = {}
    for key in MODELS:
        model = fit(key)
        mv = reg.register(model, metadata=METADATA)
        out[key] = (model, ServingModel.load(reg, mv.version, movies=metadata(MOVIES)))
    return out


@pytest.fixture(params=MODELS)
def pair(request, world) -> tuple[Recommender, ServingModel]:
    return world[request.param]


def ids(items) -> list[str]:
    return [IDS[int(i)] for i in items]


def items_of(movies) -> set[int]:
    return {IDS.index(m) for m in movies}


def watched(movies: dict[str, int], at: int, **kw) -> UserState:
    return UserState(progress=movies, recent=dict.fromkeys(movies, at), **kw)


# -- load ---------------------------------------------------------------------------------------


def test_load_derives_the_lookups_from_the_registry_version_and_the_metadata(pair):
    model, served = pair
    assert served.name == model.name and served.version.startswith(f"{model.name}-")
    assert served.meta["version"] == served.version and served.meta["data"]["rows"] == 10
    assert dict(served.index) == {m: i for i, m in enumerate(IDS)}
    # Stored runtimes where a positive integer, the default (90) for "", "abc", "0", none.
    want = [100.0] * N_ITEMS
    for i in (5, 6, 7, 19):
        want[i] = 90.0
    assert served.runtimes.dtype == np.float32 and served.runtimes.tolist() == want
    assert set(np.flatnonzero(served.unsafe).tolist()) == UNSAFE
    assert served.popular_all == tuple(ids(GLOBAL_ORDER))
    assert served.popular_safe == tuple(ids(i for i in GLOBAL_ORDER if i not in UNSAFE))
    assert served.popular(3, minor=False) == tuple(ids(GLOBAL_ORDER[:3]))
    assert served.popular(3, minor=True) == tuple(ids([12, 13, 1]))  # 10, 11, 0 unsafe


def test_factors_are_served_memory_mapped(world):
    loaded = world["als"][1].model
    assert isinstance(loaded, ALSRecommender)
    assert is_mapped(loaded.item_factors)


def test_load_honours_the_default_runtime(tmp_path):
    reg, mv = register(tmp_path, fit("popularity"))
    served = ServingModel.load(reg, mv.version, movies=metadata(MOVIES), default_runtime=45.0)
    assert served.runtimes[5] == 45.0 and served.runtimes[4] == 100.0


# -- every path: never seen, never unsafe for a possible minor ---------------------------------

SEEN = {"m0001+2000": 99, "m0002+2000": 50, "m0012+2000": 20}
CASES = {
    # name: (state, expected path, treated as a possible minor, liked, disliked)
    "history, adult": (
        UserState(progress=SEEN, ratings={"m0003+2000": (T0, 4)}, recent=dict.fromkeys(SEEN, T0),
                  profile={"age": "30", "gender": "M"}), PATH_MODEL, False, set(), set()),
    "history, minor": (
        UserState(progress=SEEN, recent=dict.fromkeys(SEEN, T0), profile={"age": "12"}),
        PATH_MODEL, True, set(), set()),
    "history, no profile yet": (UserState(progress=SEEN), PATH_MODEL, True, set(), set()),
    "rated only": (UserState(ratings={"m0015+2000": (T0, 2)}, profile={"age": "50"}),
                   PATH_MODEL, False, set(), set()),
    "liked titles, adult": (
        UserState(progress={"gone+1990": 5},
                  profile={"age": "40", "likes": "I like m0002, m0013", "dislikes": "m0004"}),
        PATH_COLDSTART_PROFILE, False, {2, 13}, {4}),
    "liked titles, unknown age": (
        UserState(profile={"age": "old", "likes": "m0015 and m0016"}),
        PATH_COLDSTART_PROFILE, True, {15, 16}, set()),
    "age and gender": (UserState(profile={"age": "45", "gender": "F"}),
                       PATH_COLDSTART_DEMOGRAPHIC, False, set(), set()),
    "gender only": (UserState(profile={"gender": "F", "likes": "nothing i know"}),
                    PATH_COLDSTART_DEMOGRAPHIC, True, set(), set()),
    "minor, age only": (UserState(profile={"age": "9"}), PATH_COLDSTART_DEMOGRAPHIC, True,
                        set(), set()),
    "nothing known": (UserState.empty(), PATH_POPULAR, True, set(), set()),
    "unknown movies and an occupation": (
        UserState(progress={"gone+1990": 5}, profile={"occupation": "writer"}),
        PATH_POPULAR, True, set(), set()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_path_gives_the_catalog_minus_seen_titles_and_unsafe_for_minors(pair, case):
    _, served = pair
    state, path, minor, liked, disliked = CASES[case]
    answer = served.recommend(state, n=N_ITEMS, now_ms=T0)
    assert answer.path == path
    seen = items_of(m for m in state.seen() if m in served.index)
    expected = ALL - seen - liked - disliked - (UNSAFE if minor else set())
    assert len(answer.items) == len(set(answer.items)) == len(expected)
    assert items_of(answer.items) == expected
    if not minor:
        assert items_of(answer.items) & UNSAFE   # an adult can get them


@pytest.mark.parametrize("case", sorted(CASES))
def test_short_lists_obey_the_same_bans(pair, case):
    _, served = pair
    state, _, minor, liked, disliked = CASES[case]
    answer = served.recommend(state, n=3, now_ms=T0)
    assert len(answer.items) == 3
    banned = items_of(m for m in state.seen() if m in served.index) | liked | disliked
    assert not items_of(answer.items) & (banned | (UNSAFE if minor else set()))


# -- the fold-in follows the newest events, without retraining -----------------------------------


@pytest.mark.parametrize("key", ["als", "itemknn-bm25"])
@pytest.mark.parametrize(("first", "then"), [(range(0, 10), range(10, 20)),
                                             (range(10, 20), range(0, 10))])
def test_recommendations_follow_the_users_newest_taste(world, key, first, then):
    _, served = world[key]
    old = {IDS[i]: 99 for i in list(first)[1:4]}
    adult = {"age": "30"}
    before = served.recommend(watched(old, T0, profile=adult), n=5, now_ms=T0)
    assert before.path == PATH_MODEL and items_of(before.items) <= set(first)
    later = T0 + 200 * DAY_MS   # the first taste is now old: its confidence is at the floor
    new = {IDS[i]: 99 for i in list(then)[4:7]}
    state = UserState(progress={**old, **new},
                      recent={**dict.fromkeys(old, T0), **dict.fromkeys(new, later)},
                      profile=adult)
    after = served.recommend(state, n=5, now_ms=later)
    assert items_of(after.items) <= set(then)


# -- the loaded model answers as the trained one -------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_loaded_model_answers_as_the_model_in_memory(pair, case):
    in_memory, served = pair
    state = CASES[case][0]
    history = history_of(state, served.index, served.runtimes, now_ms=T0,
                         params=served.confidence, rating_scale=served.rating_scale)
    profile = profile_of(state, served.matcher)
    banned = np.concatenate([history.items,
                             np.array(sorted(UNSAFE) if CASES[case][2] else [], np.int32)])
    if len(history):
        want = in_memory.recommend(history, 5, exclude=banned, profile=profile)
    else:
        want = in_memory.recommend_new(profile, 5, exclude=banned)
    assert served.recommend(state, n=5, now_ms=T0).items == tuple(ids(want))


# -- fallbacks ---------------------------------------------------------------------------------


def test_popular_for_drops_seen_movies_and_unsafe_ones_for_minors(pair):
    _, served = pair
    seen = UserState(progress={"m0012+2000": 3}, ratings={"m0013+2000": (T0, 5)})
    assert served.popular_for(seen, 3) == tuple(ids([1, 14, 2]))   # GLOBAL_ORDER, filtered
    adult = UserState(progress={"m0010+2000": 3}, profile={"age": "21"})
    assert served.popular_for(adult, 3) == tuple(ids([11, 12, 13]))
    assert served.popular_for(UserState.empty(), 0) == ()


def test_model_failures_become_model_unavailable(world, monkeypatch):
    _, served = world["als"]

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(served.model, "recommend", broken)
    with pytest.raises(ModelUnavailable, match=rf"{served.version}.*ValueError: boom"):
        served.recommend(UserState(progress=SEEN), n=5, now_ms=T0)


class Leaky(Recommender):
    """Popularity that ignores ``exclude`` and the history: a broken candidate the
    serving layer must not trust."""

    name = "leaky"

    def fit(self, train: TrainSet) -> None:
        self.item_ids = train.item_ids
        self.scores = np.bincount(train.matrix.indices, minlength=train.n_items).astype(np.float32)

    def recommend(self, history: History, n: int = 20, *, exclude: np.ndarray | None = None,
                  profile: Profile | None = None) -> np.ndarray:
        return top_n(self.scores, n)

    def recommend_new(self, profile: Profile | None, n: int = 20, *,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        return top_n(self.scores, n)

    def recommend_batch(self, rows: np.ndarray, n: int = 20, *, seen=None) -> np.ndarray:
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.scores = arrays["scores"]


def leaky_served(tmp_path) -> ServingModel:
    """A registered ``Leaky`` model, loaded to serve."""
    leaky = Leaky()
    leaky.fit(two_blocks())
    reg = Registry(tmp_path / "registry", resolve=lambda name: {"leaky": Leaky}[name])
    mv = reg.register(leaky, metadata=METADATA)
    return ServingModel.load(reg, mv.version, movies=metadata(MOVIES))


def test_a_model_that_ignores_the_exclusions_cannot_leak_an_unsafe_movie(tmp_path):
    served = leaky_served(tmp_path)
    adult = UserState(profile={"age": "30"})
    assert served.recommend(adult, n=3, now_ms=T0).items == tuple(ids([10, 11, 12]))
    with pytest.raises(ModelUnavailable, match="unsafe for minors"):
        served.recommend(UserState(profile={"age": "12"}), n=3, now_ms=T0)
    with pytest.raises(ModelUnavailable, match="banned item"):
        served.recommend(UserState(progress={"m0011+2000": 5}, profile={"age": "30"}),
                         n=3, now_ms=T0)
    assert not items_of(served.popular_for(UserState(profile={"age": "12"}), 5)) & UNSAFE


# -- broken artifacts ----------------------------------------------------------------------------


def rehash(path: Path) -> None:
    """Record the artifact's current files in meta.json, as if registered so: the
    loader's own checks are then all that stands between the files and serving."""
    meta = json.loads((path / "meta.json").read_text())
    names = sorted(meta["artifact"]["files"])
    meta["artifact"] = {"sha256": artifact_digest(path, names),
                        "files": {n: (path / n).stat().st_size for n in names}}
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def als_version(tmp_path):
    return register(tmp_path, fit("als"))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 16])


def test_a_truncated_npy_is_unavailable_by_hash_and_by_the_loader(als_version):
    reg, mv = als_version
    truncate(mv.path / "item_factors.npy")
    with pytest.raises(ModelUnavailable, match=rf"{mv.version}.*sha256 mismatch"):
        ServingModel.load(reg, mv.version, movies=metadata(MOVIES))
    rehash(mv.path)
    with pytest.raises(ModelUnavailable,
                       match=rf"{mv.version}.*ModelError.*greater than file size"):
        ServingModel.load(reg, mv.version, movies=metadata(MOVIES))


def test_factors_of_the_wrong_shape_are_unavailable(als_version):
    reg, mv = als_version
    np.save(mv.path / "item_factors.npy", np.ones((N_ITEMS, 3), np.float32))
    rehash(mv.path)
    with pytest.raises(ModelUnavailable, match=r"ModelError.*item_factors.*shape"):
        ServingModel.load(reg, mv.version, movies=metadata(MOVIES))


def test_an_unknown_model_name_is_unavailable(als_version):
    reg, mv = als_version
    model_json = mv.path / "model.json"
    model_json.write_text(model_json.read_text().replace('"als"', '"nonexistent"'))
    rehash(mv.path)
    with pytest.raises(ModelUnavailable, match="'nonexistent' model"):
        ServingModel.load(reg, mv.version, movies=metadata(MOVIES))
    meta = json.loads((mv.path / "meta.json").read_text())
    (mv.path / "meta.json").write_text(json.dumps({**meta, "name": "nonexistent"}))
    with pytest.raises(ModelUnavailable, match="unknown model 'nonexistent'"):
        ServingModel.load(reg, mv.version, movies=metadata(MOVIES))


def test_missing_versions_files_and_bad_settings_are_unavailable(als_version):
    reg, mv = als_version
    with pytest.raises(ModelUnavailable, match="no version or alias 'champion'"):
        ServingModel.load(reg, "champion", movies=metadata(MOVIES))
    with pytest.raises(ModelUnavailable, match="default_runtime=0"):
        ServingModel.load(reg, mv.version, movies=metadata(MOVIES), default_runtime=0)
    (mv.path / "item_ids.txt").unlink()
    with pytest.raises(ModelUnavailable, match="incomplete"):
        ServingModel.load(reg, mv.version, movies=metadata(MOVIES))


# -- smoke check -------------------------------------------------------------------------------


def test_smoke_check_passes_on_every_good_model(pair):
    pair[1].smoke_check()


def test_smoke_check_fails_on_nan_factors(tmp_path):
    model = fit("als")
    assert isinstance(model, ALSRecommender)
    model.item_factors = np.full_like(model.item_factors, np.nan)
    reg, mv = register(tmp_path, model)
    served = ServingModel.load(reg, mv.version, movies=metadata(MOVIES))   # popularity still loads
    with pytest.raises(ModelUnavailable, match=rf"{mv.version}.*smoke check"):
        served.smoke_check()


def test_smoke_check_fails_on_a_model_that_returns_banned_items(tmp_path):
    served = leaky_served(tmp_path)
    with pytest.raises(ModelUnavailable, match="smoke check.*banned item came back"):
        served.smoke_check()


def test_smoke_check_refuses_a_version_loaded_without_movie_metadata(tmp_path):
    reg, mv = register(tmp_path, fit("popularity"))
    served = ServingModel.load(reg, mv.version, movies=metadata({}))  # Redis was down at load
    assert served.popular_safe == ()
    with pytest.raises(ModelUnavailable, match="safe for minors"):
        served.smoke_check()
    ServingModel.load(reg, mv.version, movies=metadata(MOVIES)).smoke_check()
