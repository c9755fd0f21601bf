"""The worker's answer cache: the pure cache, and the handler reusing an answer only while
the user's state and model view are the ones it was computed for."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from movierec.settings import load
from recommender.serving.answer_cache import AnswerCache
from recommender.serving.app import Services, create_app
from recommender.serving.core import PATH_MODEL, Answer
from recommender.serving.experiments import ExperimentStore
from recommender.serving.settings import ServeSettings
from stores.online import UserState
from tests.unit.test_serving_app import (
    FakeFeatures,
    FakeModel,
    FakeModels,
    FakeProvenance,
    FakeTelemetry,
)

A = Answer(("a+2000", "b+2001"), PATH_MODEL)
B = Answer(("c+2002",), PATH_MODEL)
VIEW = ("als-1", None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_held_for_its_digest_and_view_until_it_expires() -> None:
    clock = Clock()
    cache = AnswerCache(10, ttl_s=5.0, clock=clock)
    assert cache.digest(1) is None and cache.get(1, "d1", VIEW) == (None, "miss")
    cache.put(1, "d1", VIEW, A)
    assert cache.digest(1) == "d1"
    assert cache.get(1, "d1", VIEW) == (A, "hit")
    assert cache.get(1, "d2", VIEW) == (None, "changed")  # the state moved on
    assert cache.get(1, "d1", ("als-1", "calibrated")) == (None, "miss")  # another view
    assert cache.get(1, "d1", ("als-2", None)) == (None, "miss")  # another version
    clock.now += 5.0
    assert cache.get(1, "d1", VIEW) == (None, "expired")
    assert cache.get(1, "d1", VIEW) == (None, "miss")  # dropped when found expired


def test_a_new_digest_drops_the_answers_of_the_old_state() -> None:
    cache = AnswerCache(10, ttl_s=60.0, clock=Clock())
    cache.put(1, "d1", VIEW, A)
    cache.put(1, "d1", ("als-1", "calibrated"), B)
    cache.put(1, "d2", VIEW, B)
    assert cache.digest(1) == "d2"
    assert cache.get(1, "d2", VIEW) == (B, "hit")
    assert cache.get(1, "d2", ("als-1", "calibrated")) == (None, "miss")


def test_the_least_recently_used_user_goes_first() -> None:
    cache = AnswerCache(2, ttl_s=60.0, clock=Clock())
    cache.put(1, "d", VIEW, A)
    cache.put(2, "d", VIEW, A)
    assert cache.get(1, "d", VIEW)[1] == "hit"  # 1 is now the most recent
    cache.put(3, "d", VIEW, A)
    assert len(cache) == 2 and cache.digest(2) is None
    assert cache.digest(1) == "d" and cache.digest(3) == "d"


@pytest.mark.parametrize(("users", "ttl_s"), [(0, 1.0), (5, 0.0), (5, -1.0)])
def test_bad_sizes_are_refused(users: int, ttl_s: float) -> None:
    with pytest.raises(ValueError, match="answer cache"):
        AnswerCache(users, ttl_s)


def _cache_counts(client) -> dict[str, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "movierec_serve_answer_cache_total"}


def _app(tmp_path, **overrides):
    features, model, telemetry = FakeFeatures(), FakeModel(), FakeTelemetry()
    services = Services(features=features, models=FakeModels(model), telemetry=telemetry,
                        provenance=FakeProvenance(telemetry),
                        experiments=ExperimentStore(tmp_path / "experiments.json"),
                        model_meta=lambda v: {})
    app = create_app(load(ServeSettings, {}, **overrides), services=services)
    return app.test_client(), features, model, telemetry


def test_an_unchanged_user_is_answered_again_without_the_model(tmp_path) -> None:
    client, features, model, telemetry = _app(tmp_path)
    first = client.get("/recommend/7")
    second = client.get("/recommend/7")
    assert first.get_data() == second.get_data() and second.headers["X-Answer-Path"] == "model"
    assert model.calls == 1 and features.reads == 2  # the state is still read (its digest)
    assert _cache_counts(client) == {"hit": 1.0, "miss": 1.0, "changed": 0.0, "expired": 0.0}
    assert len(telemetry.records) == 2  # a reused answer is still a served record
    assert telemetry.records[0].request_id != telemetry.records[1].request_id


def test_a_users_new_event_is_ranked_at_once(tmp_path) -> None:
    client, features, model, _ = _app(tmp_path)
    client.get("/recommend/7")
    features.users[7] = UserState(progress={"seen+1999": 30, "new+2003": 5},
                                  profile={"age": "30", "gender": "F"})
    client.get("/recommend/7")
    assert model.calls == 2
    assert _cache_counts(client)["changed"] == 1.0


def test_a_new_model_version_is_not_answered_from_the_old_ones_cache(tmp_path) -> None:
    client, _, model, _ = _app(tmp_path)
    client.get("/recommend/7")
    model.version = "als-20270101T000000-fedcba"
    r = client.get("/recommend/7")
    assert model.calls == 2 and r.headers["X-Model-Version"] == model.version


def test_a_failed_ranking_is_not_held(tmp_path) -> None:
    client, _, model, _ = _app(tmp_path)
    model.fail = RuntimeError("boom")
    r = client.get("/recommend/7")
    assert r.headers["X-Fallback"] == "error"
    model.fail = None
    r = client.get("/recommend/7")
    assert "X-Fallback" not in r.headers and model.calls == 2


def test_without_a_cache_every_request_is_ranked(tmp_path) -> None:
    client, features, model, _ = _app(tmp_path, serve_answer_cache_users=0)
    for _ in range(3):
        client.get("/recommend/7")
    assert model.calls == 3 and features.reads == 3
    assert _cache_counts(client) == {"hit": 0.0, "miss": 0.0, "changed": 0.0, "expired": 0.0}


def test_a_valid_id_is_answered_ahead_of_flasks_dispatch(tmp_path) -> None:
    """``RecommendRoute`` answers a valid id without Flask's request handling (no
    before-request hook runs), with the same headers and request metrics; a bad id goes
    to Flask's view and gets its 400."""
    client, _, _, _ = _app(tmp_path)
    dispatched: list[str] = []
    client.application.before_request(lambda: dispatched.append("flask"))
    ok = client.get("/recommend/7")
    assert ok.status_code == 200 and ok.headers["X-Answer-Path"] == "model"
    assert ok.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert int(ok.headers["Content-Length"]) == len(ok.get_data())
    assert dispatched == []
    bad = client.get("/recommend/abc")
    assert bad.status_code == 400 and dispatched == ["flask"]
    text = client.get("/metrics").get_data(as_text=True)
    counted = {s.labels["status"]: s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "movierec_serve_requests_total"
               and s.labels["endpoint"] == "recommend" and s.value}
    assert counted == {"200": 1.0, "400": 1.0}
