"""A re-ranking experiment arm, end to end in the serving process's pure parts: the arm's
``rerank`` in the experiment file, the model set's re-ranked view for that arm only, and
``ServingModel.with_rerank`` answering calibrated lists under the same bans."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pytest

from recommender import rerank
from recommender.serving.experiments import Arm, Experiment, ExperimentStore, bucket
from recommender.serving.state import BadRequest
from recommender.serving.watcher import ModelSet
from stores.online import UserState
from tests.unit.test_serving_model import (  # noqa: F401  (world is a fixture)
    CASES,
    IDS,
    N_ITEMS,
    T0,
    UNSAFE,
    world,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def fair_experiment(**kw) -> Experiment:
    return Experiment("fair", (Arm("control", "champion", 0.5),
                               Arm("calibrated", "champion", 0.5, rerank="calibrated")), **kw)


def test_the_rerank_of_an_arm_round_trips_and_arms_without_it_read_as_before(tmp_path):
    store = ExperimentStore(tmp_path / "experiment.json")
    store.write(fair_experiment(), reason="fairness mitigation")
    _, back = store.read()
    assert back == fair_experiment()
    arms = fair_experiment().to_dict()["arms"]
    assert "rerank" not in arms[0] and arms[1]["rerank"] == "calibrated"


@pytest.mark.parametrize("bad", ["diverse", "", 3, "calibrated:1.5", "calibrated:x",
                                 "calibrated:nan", "calibrated:"])
def test_an_unknown_policy_is_refused_with_its_reason(bad):
    doc = fair_experiment().to_dict()
    doc["arms"][1]["rerank"] = bad
    with pytest.raises(BadRequest, match="rerank"):
        Experiment.from_dict(doc)


@dataclass(frozen=True)
class Fake:
    version: str
    rerank: str | None = None

    def with_rerank(self, policy: str | None) -> Fake:
        return replace(self, rerank=policy)


def test_only_the_reranking_arm_gets_the_reranked_view_and_telemetry_keeps_the_arm():
    models = {"v1": Fake("v1")}
    experiment = fair_experiment()
    s = ModelSet(models, "v1", experiment, {"control": "v1", "calibrated": "v1"}, 1)
    seen = {}
    for user in range(200):
        arm, model = s.route(user, AT)
        seen.setdefault(arm, set()).add(model.rerank)
        want = "control" if bucket(user, "fair") < 0.5 else "calibrated"
        assert arm == want
    assert seen == {"control": {None}, "calibrated": {"calibrated"}}
    # the view is built once per model set, not per request
    assert s.route(next(u for u in range(200) if bucket(u, "fair") >= 0.5), AT)[1] is \
        s.route(next(u for u in range(200, 400) if bucket(u, "fair") >= 0.5), AT)[1]


def test_with_rerank_refuses_unknown_policies_and_shares_the_arrays(world):  # noqa: F811
    _, served = world["als"]
    view = served.with_rerank("calibrated")
    assert view.rerank == "calibrated" and view.version == served.version
    assert view.rerank_lambda == rerank.LAMBDA
    assert served.with_rerank("calibrated:0.8").rerank_lambda == 0.8
    assert view.flags is served.flags and view.model is served.model
    with pytest.raises(ValueError):
        served.with_rerank("diverse")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_calibrated_view_obeys_every_ban_of_the_plain_one(world, case):  # noqa: F811
    _, served = world["als"]
    view = served.with_rerank("calibrated")
    state = CASES[case][0]
    plain = served.recommend(state, n=N_ITEMS, now_ms=T0)
    calibrated = view.recommend(state, n=N_ITEMS, now_ms=T0)
    # the whole catalog asked: the same films (every ban holds), perhaps another order
    assert calibrated.path == plain.path and set(calibrated.items) == set(plain.items)
    short = view.recommend(state, n=3, now_ms=T0)
    assert len(short.items) == 3 and set(short.items) <= set(plain.items)


@pytest.mark.parametrize("watched", [
    [12, 14, 15, 16, 17, 3],   # mostly tail (12 is head): the plain list is mostly head
    [12, 1, 2, 3],             # three quarters tail: the plain list is all tail
])
def test_the_calibrated_list_comes_closer_to_the_historys_mix(world, watched):  # noqa: F811
    _, served = world["als"]
    history = {IDS[i]: 60 for i in watched}
    state = UserState(progress=history, recent=dict.fromkeys(history, T0),
                      profile={"age": "30"})
    target = sum(served.flags[i, rerank.TAIL] for i in watched) / len(watched)  # equal weights

    def gap(answer) -> float:
        items = np.array([IDS.index(m) for m in answer.items])
        return abs(rerank.list_shares(items, served.flags)[rerank.TAIL] - target)

    plain = served.recommend(state, n=5, now_ms=T0)
    calibrated = served.with_rerank("calibrated").recommend(state, n=5, now_ms=T0)
    assert gap(calibrated) < gap(plain) - 0.1


def test_the_long_tail_is_marked_by_the_sites_ranking_when_it_has_one(tmp_path):
    from recommender.registry import Registry
    from recommender.serving.loaded import ServingModel
    from tests.unit.test_serving_model import METADATA, MOVIES, fit, metadata

    reg = Registry(tmp_path / "registry")
    version = reg.register(fit("als"), metadata=METADATA).version
    # the site plays 5 films most and knows one the model does not: the head is the
    # first ceil(0.2 * 11) = 3 of its ranking, whatever the model's popularity says
    site = [IDS[5], "unknown+1999", IDS[7], *[IDS[i] for i in (0, 1, 2, 3, 4, 6, 8, 9)]]
    served = ServingModel.load(reg, version, movies=metadata(MOVIES), ranking=lambda n: site[:n])
    assert sorted(np.flatnonzero(~served.flags[:, rerank.TAIL]).tolist()) == [5, 7]
    # no ranking, an empty one, or one that fails: the model's own popularity decides
    own = ServingModel.load(reg, version, movies=metadata(MOVIES))
    for ranking in (lambda n: [], lambda n: 1 / 0):
        other = ServingModel.load(reg, version, movies=metadata(MOVIES), ranking=ranking)
        assert (other.flags == own.flags).all()
    assert (~own.flags[:, rerank.TAIL]).sum() == 4   # ceil(0.2 * 20) of the model's ranking


@pytest.mark.parametrize("text", ["calibrated", "calibrated:0.8", "calibrated:1", "calibrated:1.00",
                                  "calibrated:.5", "calibrated:0.", "calibrated:1.5",
                                  "calibrated:", "calibrated:1e-1", "calibrated: 0.5",
                                  "calibrated:nan", "diverse"])
def test_the_api_description_accepts_exactly_the_policies_the_service_does(text):
    import re

    from recommender.serving.app import openapi_spec

    experiment = openapi_spec()["components"]["schemas"]["Experiment"]
    pattern = experiment["properties"]["arms"]["items"]["properties"]["rerank"]["pattern"]
    try:
        rerank.parse_policy(text)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(re.search(pattern, text)) == accepted
