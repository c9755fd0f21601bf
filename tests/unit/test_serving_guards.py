"""The two guards of /recommend in the app, with fake adapters: a walk over the user ids is
answered the popular list (fallback scraping) from its 30th step, without the features or
the model, and a failing walk check costs nothing; an address over its rate limit is
answered 429 with Retry-After, loopback never is; control characters in the id are a 400."""

from __future__ import annotations

import random
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from movierec.settings import SettingsError, load
from recommender.serving.app import Services, create_app, openapi_spec
from recommender.serving.breaker import CircuitBreaker
from recommender.serving.core import PATH_POPULAR
from recommender.serving.experiments import ExperimentStore
from recommender.serving.settings import ServeSettings
from recommender.serving.walks import WalkGuard, WalkTracker
from stores.online import OnlineStoreError, UserRead
from tests.unit.test_serving_app import (
    ADULT,
    FakeFeatures,
    FakeModel,
    FakeModels,
    FakeProvenance,
    FakeTelemetry,
    state_digest,
)

STRANGER = {"REMOTE_ADDR": "203.0.113.9"}
PERSONAL = "a+2000,b+2001"
MINOR_SAFE_POPULAR = "safe+2000"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BrokenState:
    """A walk store whose Redis never answers."""

    def __init__(self) -> None:
        self.calls = 0

    def step(self, user: int) -> int:
        self.calls += 1
        raise OnlineStoreError("redis walk step failed: TimeoutError: timed out")


def build(tmp_path, walks: WalkGuard | None = None, **settings):
    telemetry = FakeTelemetry()
    features = FakeFeatures()
    for user in range(100_000, 100_050):
        features.users[user] = ADULT
    model = FakeModel()
    services = Services(features=features, models=FakeModels(model), telemetry=telemetry,
                        provenance=FakeProvenance(telemetry),
                        experiments=ExperimentStore(tmp_path / "experiments.json"),
                        model_meta=lambda v: {}, walks=walks)
    app = create_app(load(ServeSettings, {}, **settings), services=services)
    return app.test_client(), services, model


def samples(client, name: str) -> dict[tuple, float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


# -- the walk guard ----------------------------------------------------------------------


def test_a_walk_gets_the_popular_list_from_its_30th_step_without_features_or_model(tmp_path):
    clock = Clock()
    client, services, model = build(tmp_path, WalkGuard(WalkTracker(60.0, clock=clock), min_run=30))
    walk = range(100_000, 100_040)
    answers = []
    for user in walk:
        answers.append(client.get(f"/recommend/{user}"))
        clock.now += 0.25
    assert all(r.status_code == 200 for r in answers)
    assert [r.headers.get("X-Fallback") for r in answers] == [None] * 29 + ["scraping"] * 11
    assert {r.get_data(as_text=True) for r in answers[:29]} == {PERSONAL}
    for r in answers[29:]:  # minor-safe: the age is not read
        assert r.get_data(as_text=True) == MINOR_SAFE_POPULAR
        assert r.headers["X-Answer-Path"] == PATH_POPULAR
    assert services.features.reads == 29 and model.calls == 29
    records = services.telemetry.records
    assert [r.fallback for r in records] == [None] * 29 + ["scraping"] * 11
    assert [r.user_id for r in records] == list(walk)
    assert samples(client, "movierec_serve_walk_steps_total") == {(): 11.0}
    fallbacks = samples(client, "movierec_serve_fallbacks_total")
    assert fallbacks[(("reason", "scraping"),)] == 11.0
    assert sum(fallbacks.values()) == 11.0
    walk_stage = samples(client, "movierec_serve_stage_seconds_count")
    assert walk_stage[(("stage", "walk"),)] == 40.0


def test_random_users_are_never_taken_for_a_walk(tmp_path):
    clock = Clock()
    client, services, model = build(tmp_path, WalkGuard(WalkTracker(60.0, clock=clock), min_run=30))
    rng = random.Random(1)
    asked = [rng.randrange(2000) for _ in range(300)]
    for user in asked:
        r = client.get(f"/recommend/{user}")
        assert r.status_code == 200 and "X-Fallback" not in r.headers
        clock.now += 0.05
    # every user ranked once: a user asked again (unchanged) gets the held answer
    assert model.calls == len(set(asked)) < len(asked)
    assert samples(client, "movierec_serve_walk_steps_total") == {(): 0.0}


def test_a_shed_request_is_not_looked_at_by_the_walk_guard(tmp_path):
    """Shedding comes first: no Redis at all for a request that queued too long."""
    state = BrokenState()
    client, services, _ = build(tmp_path, WalkGuard(state, min_run=30))
    handler = client.application.extensions["movierec"]["handler"]
    assert handler.answer(100_000, 0.0, queue_s=1.0).fallback == "shed" and state.calls == 0


def test_a_failing_walk_check_fails_open_and_is_counted(tmp_path):
    state = BrokenState()
    guard = WalkGuard(state, min_run=30, breaker=CircuitBreaker(3, 60.0))
    client, services, model = build(tmp_path, guard)
    for user in range(100_000, 100_040):  # a walk, unseen: nothing personal is lost
        r = client.get(f"/recommend/{user}")
        assert r.status_code == 200 and "X-Fallback" not in r.headers
        assert r.get_data(as_text=True) == PERSONAL
    assert state.calls == 3  # then the guard's breaker spared Redis
    failures = samples(client, "movierec_serve_walk_check_failures_total")
    assert failures == {(("reason", "redis"),): 3.0, (("reason", "breaker_open"),): 37.0,
                        (("reason", "error"),): 0.0}
    assert services.features.reads == 40  # the features' own reads were never refused


def test_a_bug_in_the_walk_guard_fails_open_too(tmp_path):
    class Buggy:
        def step(self, user: int) -> int:
            raise KeyError("bug")

    client, _, _ = build(tmp_path, WalkGuard(Buggy(), min_run=30))
    r = client.get("/recommend/100000")
    assert r.status_code == 200 and r.get_data(as_text=True) == PERSONAL
    assert samples(client, "movierec_serve_walk_check_failures_total")[(("reason", "error"),)] == 1.0


def test_scraping_and_the_walk_failures_show_at_zero_from_the_start(tmp_path):
    client, _, _ = build(tmp_path)
    assert samples(client, "movierec_serve_fallbacks_total")[(("reason", "scraping"),)] == 0.0
    assert set(samples(client, "movierec_serve_walk_check_failures_total")) == {
        (("reason", r),) for r in ("redis", "breaker_open", "error")}


# -- the per-address rate limit ------------------------------------------------------------


def test_an_address_over_its_limit_gets_a_429_with_retry_after(tmp_path):
    client, services, _ = build(tmp_path, serve_client_rate_per_s=0.001, serve_client_burst=3,
                                serve_workers=1)
    answers = [client.get("/recommend/7", environ_base=STRANGER) for _ in range(5)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
    refused = answers[-1]
    assert refused.mimetype == "text/plain" and refused.headers["Retry-After"] == "1000"
    assert "too many requests" in refused.get_data(as_text=True)
    spec = openapi_spec()  # as described: a 429 of /recommend with its Retry-After
    assert "429" in spec["paths"]["/recommend/{userid}"]["get"]["responses"]
    header = spec["components"]["headers"]["Retry-After"]["schema"]["pattern"]
    assert re.fullmatch(header, refused.headers["Retry-After"])
    assert "X-Request-Id" not in refused.headers
    assert len(services.telemetry.records) == 3  # a refusal is no served list
    other = client.get("/recommend/7", environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert other.status_code == 200
    assert client.get("/recommend/abc", environ_base=STRANGER).status_code == 429  # before parsing
    assert samples(client, "movierec_serve_rate_limited_total") == {(): 3.0}
    requests = samples(client, "movierec_serve_requests_total")
    assert requests[(("endpoint", "recommend"), ("status", "429"))] == 3.0


def test_loopback_is_exempt_by_default_and_the_limit_is_per_worker(tmp_path):
    client, _, _ = build(tmp_path, serve_client_rate_per_s=0.001, serve_client_burst=4,
                         serve_workers=2)
    assert all(client.get("/recommend/7").status_code == 200 for _ in range(50))  # 127.0.0.1
    ipv6 = {"REMOTE_ADDR": "::1"}
    assert all(client.get("/recommend/7", environ_base=ipv6).status_code == 200 for _ in range(50))
    # a burst of 4 over 2 workers: 2 in this worker
    assert [client.get("/recommend/7", environ_base=STRANGER).status_code
            for _ in range(3)] == [200, 200, 429]
    assert client.application.extensions["movierec"]["limiter"].burst == 2.0


def test_exempt_networks_are_a_setting(tmp_path):
    client, _, _ = build(tmp_path, serve_client_rate_per_s=0.001, serve_client_burst=1,
                         serve_workers=1, serve_client_limit_exempt="203.0.113.0/24")
    assert all(client.get("/recommend/7", environ_base=STRANGER).status_code == 200
               for _ in range(20))
    statuses = [client.get("/recommend/7").status_code for _ in range(2)]  # loopback, now not exempt
    assert statuses == [200, 429]


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path):
    proxy = {"REMOTE_ADDR": "10.0.0.5"}
    a, b = {"X-Forwarded-For": "198.51.100.4"}, {"X-Forwarded-For": "198.51.100.5"}
    trusting, _, _ = build(tmp_path, serve_client_rate_per_s=0.001, serve_client_burst=1,
                           serve_workers=1, serve_trusted_proxies="10.0.0.0/8")
    assert trusting.get("/recommend/7", environ_base=proxy, headers=a).status_code == 200
    assert trusting.get("/recommend/7", environ_base=proxy, headers=b).status_code == 200
    assert trusting.get("/recommend/7", environ_base=proxy, headers=a).status_code == 429
    forged = {"X-Forwarded-For": "198.51.100.6"}  # a client naming someone else directly
    assert trusting.get("/recommend/7", environ_base=STRANGER, headers=forged).status_code == 200
    assert trusting.get("/recommend/7", environ_base=STRANGER, headers=a).status_code == 429

    plain, _, _ = build(tmp_path, serve_client_rate_per_s=0.001, serve_client_burst=1,
                        serve_workers=1)
    assert plain.get("/recommend/7", environ_base=proxy, headers=a).status_code == 200
    assert plain.get("/recommend/7", environ_base=proxy, headers=b).status_code == 429  # one peer


def test_a_rate_of_zero_disables_the_limit(tmp_path):
    client, _, _ = build(tmp_path, serve_client_rate_per_s=0, serve_client_burst=1, serve_workers=1)
    assert client.application.extensions["movierec"]["limiter"] is None
    assert all(client.get("/recommend/7", environ_base=STRANGER).status_code == 200
               for _ in range(20))


def test_the_defaults_let_a_whole_site_through(tmp_path):
    """1,000 requests/s and a burst of 2,000 per address (over 2 workers): 900 requests at
    once from one grader's address all pass; other endpoints are never limited."""
    client, _, _ = build(tmp_path)
    assert all(client.get(f"/recommend/{u}", environ_base=STRANGER).status_code == 200
               for u in range(900))


# -- settings and odd paths ----------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value"), [
    ("MOVIEREC_SERVE_WALK_MIN_RUN", "1"), ("MOVIEREC_SERVE_WALK_MIN_RUN", "-1"),
    ("MOVIEREC_SERVE_WALK_GAP_S", "0"), ("MOVIEREC_SERVE_CLIENT_RATE_PER_S", "-5"),
    ("MOVIEREC_SERVE_CLIENT_BURST", "0"), ("MOVIEREC_SERVE_CLIENT_LIMIT_EXEMPT", "127.0.0.1/99"),
    ("MOVIEREC_SERVE_TRUSTED_PROXIES", "proxy.example"),
])
def test_bad_guard_settings_fail_at_start_naming_the_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        load(ServeSettings, {variable: value})


@pytest.mark.parametrize("raw", ["%0A", "1%0A", "1%0D%0A2", "%0D", "7%0A/8", "%09"])
def test_control_characters_in_the_id_are_a_400_not_a_404(tmp_path, raw):
    client, services, _ = build(tmp_path)
    r = client.get(f"/recommend/{raw}")
    assert r.status_code == 400 and r.mimetype == "text/plain"
    assert r.get_data(as_text=True) == "user id must be a non-negative integer"
    assert services.telemetry.records == []
    assert "404" not in openapi_spec()["paths"]["/recommend/{userid}"]["get"]["responses"]
    for elsewhere in ("/recommendations/1%0A", "/%0A", "/provenance/%0A"):
        assert client.get(elsewhere).status_code == 404


class RidingWalks:
    """A walk state that rides the feature read (what ``RedisWalkStore`` is: ``keys_of``
    and ``gap_ms``); the runs themselves come from ``RidingFeatures``' tracker."""

    gap_ms = "60000"

    def keys_of(self, user: int) -> list[str]:
        return [f"up:{user - 1}", f"up:{user}", f"dn:{user + 1}", f"dn:{user}"]

    def step(self, user: int) -> int:
        raise AssertionError("a riding guard makes no call of its own")


class RidingFeatures(FakeFeatures):
    """Features whose read makes the walk step it is asked for, as the Redis script does;
    ``walk_error`` makes the step fail alone, ``down`` the whole read."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.tracker = WalkTracker(60.0, clock=clock)
        self.walk_error: str | None = None
        self.walk_asks = 0

    def read_if_changed(self, user, digest, *, walk_keys=(), walk_gap_ms=0):
        state = self.read(user)
        read = UserRead(state_digest(state), state)
        if not walk_keys:
            return read
        self.walk_asks += 1
        assert walk_keys == RidingWalks().keys_of(user) and walk_gap_ms == 60_000
        if self.walk_error:
            return UserRead(read.digest, state, None, self.walk_error)
        return UserRead(read.digest, state, self.tracker.step(user))


def build_riding(tmp_path):
    clock = Clock()
    features, model, telemetry = RidingFeatures(clock), FakeModel(), FakeTelemetry()
    for user in range(100_000, 100_050):
        features.users[user] = ADULT
    walks = WalkGuard(RidingWalks(), min_run=30, breaker=CircuitBreaker(2, 60.0))
    services = Services(features=features, models=FakeModels(model), telemetry=telemetry,
                        provenance=FakeProvenance(telemetry),
                        experiments=ExperimentStore(tmp_path / "experiments.json"),
                        model_meta=lambda v: {}, walks=walks)
    app = create_app(load(ServeSettings, {}, serve_answer_cache_users=0), services=services)
    return app.test_client(), features, model, walks


def test_a_walk_step_riding_the_read_is_answered_the_popular_list(tmp_path):
    client, features, model, _ = build_riding(tmp_path)
    answers = [client.get(f"/recommend/{100_000 + i}") for i in range(40)]
    assert [r.headers.get("X-Fallback") for r in answers] == [None] * 29 + ["scraping"] * 11
    assert features.walk_asks == 40 and model.calls == 29  # one read each, the walk in it
    assert samples(client, "movierec_serve_walk_steps_total") == {(): 11.0}


def test_a_failed_ridden_step_fails_open_and_opens_only_the_guards_breaker(tmp_path):
    client, features, model, walks = build_riding(tmp_path)
    features.walk_error = "ERR READONLY You can't write against a read only replica."
    for i in range(4):
        r = client.get(f"/recommend/{100_000 + i}")
        assert r.status_code == 200 and "X-Fallback" not in r.headers  # features still used
    assert model.calls == 4
    failures = samples(client, "movierec_serve_walk_check_failures_total")
    # two failures open the guard's breaker; then the step is not even asked for
    assert failures[(("reason", "redis"),)] == 2.0
    assert failures[(("reason", "breaker_open"),)] == 2.0 and features.walk_asks == 2
    assert walks.breaker is not None and walks.breaker.state == "open"


def test_a_failed_read_counts_as_the_ridden_steps_failure_too(tmp_path):
    client, features, _, _ = build_riding(tmp_path)
    features.down = True
    r = client.get("/recommend/100001")
    assert r.headers["X-Fallback"] == "redis"
    assert samples(client, "movierec_serve_walk_check_failures_total")[(("reason", "redis"),)] == 1.0
