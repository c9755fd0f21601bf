"""The simulator's user/movie API: lookups, bulk, dirty types, rate limits, faults, metrics."""

from __future__ import annotations

import json
import queue
import random
import threading
import urllib.request
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from movierec.settings import SettingsError, load
from movierec.wire import MOVIE_FIELDS
from simulator.api import ApiSettings, Directory, create_app, parse_ids, serve
from simulator.api_faults import (
    NO_FAULTS,
    Faults,
    FaultSwitch,
    RateLimiter,
    TokenBucket,
    dirty,
    parse_faults,
    plan,
)
from tests.conftest import free_ports

SHAWSHANK = "the+shawshank+redemption+1994"
KILL_BILL = "kill+bill+vol.+1+2003"

USERS: dict[int, dict] = {
    1: {"user_id": 1, "age": 34, "occupation": "scientist", "gender": "F",
        "likes": "slow thrillers", "dislikes": ""},
    2: {"user_id": 2, "age": 17, "occupation": "K-12 student", "gender": "M"},
    3: {"user_id": 3, "age": 61, "occupation": "retired", "gender": "M"},
}


def movie(movie_id: str, title: str, **extra: Any) -> dict:
    record = {
        "id": movie_id, "tmdb_id": 278, "imdb_id": "tt0111161", "title": title,
        "original_title": title, "adult": False, "belongs_to_collection": {},
        "budget": 25_000_000, "genres": [{"id": 18, "name": "Drama"}], "homepage": "",
        "original_language": "en", "overview": "Two imprisoned men bond.", "popularity": 51.645,
        "poster_path": "/q6y0Go1tsGEsmtFryDOJo3dEmqu.jpg",
        "production_companies": [{"id": 97, "name": "Castle Rock Entertainment"}],
        "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
        "release_date": "1994-09-23", "revenue": 28_341_469, "runtime": 142,
        "spoken_languages": [{"iso_639_1": "en", "name": "English"}], "status": "Released",
        "vote_average": 8.5, "vote_count": 8358, "license_cost": 0.012, "content_rating": "R",
    }
    record.update(extra)
    return record


MOVIES: dict[str, dict] = {
    SHAWSHANK: movie(SHAWSHANK, "The Shawshank Redemption"),
    KILL_BILL: movie(KILL_BILL, "Kill Bill: Vol. 1", tmdb_id=24, imdb_id="tt0266697",
                     belongs_to_collection={"id": 2883, "name": "Kill Bill Collection"}),
}



class FakeDirectory:
    """A dict-backed stand-in for the world."""

    def __init__(self, users: dict[int, dict] = USERS, movies: dict[str, dict] = MOVIES) -> None:
        self.users, self.movies = users, movies

    def user_record(self, user_id: int) -> dict | None:
        return self.users.get(user_id)

    def movie_record(self, movie_id: str) -> dict | None:
        return self.movies.get(movie_id)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_app(clock: FakeClock | None = None, sleeps: list[float] | None = None,
             **overrides: Any) -> Flask:
    options = {"sim_api_dirty_rate": 0.0, **overrides}
    settings = load(ApiSettings, {}, **options)
    directory: Directory = FakeDirectory()
    return create_app(directory, settings, clock=clock or FakeClock(),
                      sleep=(sleeps.append if sleeps is not None else lambda s: None))


@pytest.fixture
def client() -> FlaskClient:
    return make_app().test_client()


def tolerant(value: Any, clean: Any) -> Any:
    """What a forgiving consumer would make of a dirty value, given the clean one's type."""
    if value is None:
        return type(clean)()
    if isinstance(clean, bool):
        return value if isinstance(value, bool) else value == "True"
    if isinstance(clean, int):
        return int(value)
    if isinstance(clean, float):
        return float(value)
    return value


# -- lookups -----------------------------------------------------------------------------


def test_single_user_is_its_record(client: FlaskClient) -> None:
    got = client.get("/user/1")
    assert got.status_code == 200 and got.mimetype == "application/json"
    assert got.get_json() == USERS[1]
    assert list(got.get_json()) == list(USERS[1])  # field order kept
    assert client.get("/user/2").get_json() == USERS[2]


def test_single_movie_has_every_documented_field_with_its_type(client: FlaskClient) -> None:
    got = client.get(f"/movie/{KILL_BILL}")
    assert got.status_code == 200 and got.mimetype == "application/json"
    body = got.get_json()
    assert body == MOVIES[KILL_BILL]
    for field, kind in MOVIE_FIELDS.items():
        assert isinstance(body[field], kind), field
    assert not isinstance(body["budget"], bool)


@pytest.mark.parametrize(("path", "message"), [
    ("/user/99", "user not found"), ("/movie/no+such+movie+1999", "movie not found"),
    ("/movie/Not An Id", "movie not found"),
])
def test_unknown_ids_are_404(client: FlaskClient, path: str, message: str) -> None:
    got = client.get(path)
    assert got.status_code == 404 and got.get_json() == {"message": message}


def test_bulk_keeps_request_order_and_leaves_out_unknown_ids(client: FlaskClient) -> None:
    got = client.get("/user/3,99,1,2,1")
    assert got.status_code == 200
    assert [u["user_id"] for u in got.get_json()] == [3, 1, 2, 1]
    got = client.get(f"/movie/nope+2000,{KILL_BILL},{SHAWSHANK}")
    assert [m["id"] for m in got.get_json()] == [KILL_BILL, SHAWSHANK]


def test_a_comma_makes_a_list_and_spaces_and_empty_items_are_ignored(client: FlaskClient) -> None:
    assert client.get("/user/2,").get_json() == [USERS[2]]
    assert client.get("/user/ 1 ,,%202").get_json() == [USERS[1], USERS[2]]


def test_bulk_with_nothing_found_is_404(client: FlaskClient) -> None:
    got = client.get("/movie/a+2000,b+2001")
    assert got.status_code == 404 and got.get_json() == {"message": "movie not found"}


def test_at_most_200_ids(client: FlaskClient) -> None:
    ok = client.get("/user/" + ",".join(["1"] * 200))
    assert ok.status_code == 200 and len(ok.get_json()) == 200
    got = client.get("/user/" + ",".join(["1"] * 201))
    assert got.status_code == 400 and "at most 200" in got.get_json()["message"]


@pytest.mark.parametrize("ids", ["abc", "-1", "1.5", "+1", "0x1f", "%D9%A1", "1,x",
                                 "1" * 19, "%20", ","])
def test_malformed_user_ids_are_bad_requests(client: FlaskClient, ids: str) -> None:
    got = client.get(f"/user/{ids}")
    assert got.status_code == 400 and got.mimetype == "application/json"
    assert got.get_json()["message"]


def test_parse_ids() -> None:
    assert parse_ids("007", "user", 200) == ([7], False)
    assert parse_ids("a+1999, b+2000", "movie", 200) == (["a+1999", "b+2000"], True)
    with pytest.raises(ValueError, match="longer than"):
        parse_ids("x" * 257, "movie", 200)
    with pytest.raises(ValueError, match="at most 2"):
        parse_ids("1,2,3", "user", 2)


def test_other_routes_and_methods_answer_json(client: FlaskClient) -> None:
    assert client.get("/users/1").status_code == 404
    assert client.get("/users/1").mimetype == "application/json"
    got = client.post("/user/1")
    assert got.status_code == 405 and "GET" in got.headers["Allow"]
    assert got.get_json()["message"]
    assert client.get("/health").data == b"ok"


# -- dirty types -------------------------------------------------------------------------


def test_dirty_rate_zero_leaves_every_record_alone() -> None:
    for key, record in [*MOVIES.items(), *((str(k), v) for k, v in USERS.items())]:
        assert dirty(record, key, 0.0) is record


def test_dirty_rate_one_changes_every_record_but_values_parse_back() -> None:
    for i in range(300):
        for record in (MOVIES[SHAWSHANK], USERS[1]):
            before = dict(record)
            got = dirty(record, f"k{i}", 1.0, salt="s")
            assert record == before  # input untouched
            assert got != record and list(got) == list(record)
            assert {k: tolerant(v, record[k]) for k, v in got.items()} == record


def test_dirty_forms() -> None:
    got = dirty(MOVIES[SHAWSHANK], "x", 1.0)
    forms = {"budget": "25000000", "runtime": "142", "vote_average": "8.5",
             "popularity": "51.645", "adult": "False", "homepage": None,
             "belongs_to_collection": None, "tmdb_id": "278", "vote_count": "8358",
             "revenue": "28341469", "license_cost": "0.012"}
    changed = {k: v for k, v in got.items() if v != MOVIES[SHAWSHANK][k]}
    assert changed and all(forms[k] == v for k, v in changed.items())


def test_dirtiness_is_deterministic_and_near_its_rate() -> None:
    record = MOVIES[SHAWSHANK]
    first = [dirty(record, f"movie/{i}", 0.05, salt="7") for i in range(20_000)]
    again = [dirty(record, f"movie/{i}", 0.05, salt="7") for i in range(20_000)]
    assert first == again
    share = sum(r is not record for r in first) / len(first)
    assert 0.04 < share < 0.06
    other = [dirty(record, f"movie/{i}", 0.05, salt="8") for i in range(20_000)]
    assert other != first


def test_api_serves_the_same_dirty_record_every_time() -> None:
    client = make_app(sim_api_dirty_rate=1.0).test_client()
    one = client.get(f"/movie/{SHAWSHANK}").get_json()
    assert one != MOVIES[SHAWSHANK]
    assert {k: tolerant(v, MOVIES[SHAWSHANK][k]) for k, v in one.items()} == MOVIES[SHAWSHANK]
    assert client.get(f"/movie/{SHAWSHANK}").get_json() == one
    assert client.get(f"/movie/{KILL_BILL},{SHAWSHANK}").get_json()[1] == one
    assert make_app(sim_api_dirty_rate=1.0).test_client().get(
        f"/movie/{SHAWSHANK}").get_json() == one
    assert client.get("/user/1").get_json() != USERS[1]


# -- rate limiting -----------------------------------------------------------------------


def test_token_bucket_gives_a_burst_then_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)
    clock.now += 0.05
    assert bucket.take() == pytest.approx(0.05)
    clock.now += 0.05
    assert bucket.take() == 0.0
    clock.now += 3600  # refills to the burst, no further
    assert [bucket.take() for _ in range(4)][-1] > 0
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, clock=clock)


def test_rate_limiter_is_per_client_bounded_and_can_be_off() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, max_clients=2)
    assert limiter.check("a") == 0.0 and limiter.check("a") > 0
    assert limiter.check("b") == 0.0
    assert limiter.check("c") == 0.0 and len(limiter) == 2  # "a" forgotten
    assert limiter.check("a") == 0.0  # back with a full bucket
    off = RateLimiter(rate=0, burst=1, clock=clock)
    assert all(off.check("a") == 0.0 for _ in range(100)) and len(off) == 0


def test_api_answers_429_after_the_burst_and_recovers() -> None:
    clock = FakeClock()
    client = make_app(clock, sim_api_rate_per_s=2.0, sim_api_burst=5).test_client()
    assert [client.get("/user/1").status_code for _ in range(5)] == [200] * 5
    got = client.get("/user/1,2")
    assert got.status_code == 429 and got.headers["Retry-After"] == "1"
    assert got.get_json()["message"]
    assert client.get("/health").status_code == 200  # not limited
    assert client.get("/user/1", environ_overrides={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200
    clock.now += 0.5
    assert client.get("/movie/x+2000").status_code == 404  # one token back
    assert client.get("/user/1").status_code == 429
    clock.now += 10
    assert [client.get("/user/1").status_code for _ in range(5)] == [200] * 5


# -- faults ------------------------------------------------------------------------------


def test_parse_faults() -> None:
    assert parse_faults({}) == (0, 0.0, None)
    assert parse_faults({"slow_ms": 800, "error_rate": 0.3, "duration_s": 60}) == (800, 0.3, 60)
    for bad in ([], {"slow_ms": -1}, {"slow_ms": 30_001}, {"error_rate": 1.5},
                {"error_rate": "0.3"}, {"slow_ms": True}, {"duration_s": 0}, {"boom": 1}):
        with pytest.raises(ValueError):
            parse_faults(bad)


def test_fault_switch_expires_and_plan_draws() -> None:
    clock = FakeClock()
    switch = FaultSwitch(clock)
    assert switch.current() is NO_FAULTS
    switch.set(slow_ms=800, error_rate=1.0, duration_s=60)
    assert switch.describe() == {"active": True, "slow_ms": 800, "error_rate": 1.0,
                                 "remaining_s": 60.0}
    rng = random.Random(1)
    assert all(plan(switch.current(), rng)[1] in (500, 503) for _ in range(50))
    assert plan(switch.current(), rng)[0] == 0.8
    clock.now += 60
    assert switch.current() is NO_FAULTS and not switch.describe()["active"]
    assert plan(Faults(error_rate=0.0), rng) == (0.0, None)
    assert switch.set() is NO_FAULTS


def admin(client: FlaskClient, method: str, body: Any = None, **kw: Any) -> Any:
    data = None if body is None else json.dumps(body)
    return client.open("/admin/faults", method=method, data=data, **kw)


def test_slow_answers_sleep_the_injected_delay() -> None:
    sleeps: list[float] = []
    client = make_app(sleeps=sleeps).test_client()
    got = admin(client, "POST", {"slow_ms": 800})
    assert got.status_code == 200 and got.get_json()["slow_ms"] == 800
    assert client.get("/user/1").status_code == 200
    assert client.get("/health").status_code == 200
    assert sleeps == [0.8]
    assert admin(client, "GET").get_json() == {"active": True, "slow_ms": 800,
                                               "error_rate": 0.0, "remaining_s": None}
    assert admin(client, "DELETE").get_json()["active"] is False
    client.get("/user/1")
    assert sleeps == [0.8]


def test_error_rate_one_fails_every_data_request_until_it_expires() -> None:
    clock = FakeClock()
    client = make_app(clock).test_client()
    admin(client, "POST", {"error_rate": 1.0, "duration_s": 30})
    statuses = {client.get(f"/user/{i % 3 + 1}").status_code for i in range(40)}
    assert statuses <= {500, 503} and len(statuses) == 2
    assert client.get("/health").status_code == 200
    assert admin(client, "GET").get_json()["remaining_s"] == 30.0
    clock.now += 30
    assert client.get("/user/1").status_code == 200


def test_empty_body_clears_and_bad_bodies_are_refused() -> None:
    client = make_app().test_client()
    admin(client, "POST", {"error_rate": 1.0})
    assert client.get("/user/1").status_code >= 500
    assert admin(client, "POST", {}).get_json()["active"] is False
    admin(client, "POST", {"error_rate": 1.0})
    assert admin(client, "POST").get_json()["active"] is False  # no body at all
    assert client.get("/user/1").status_code == 200
    for bad in ("{", "[1]", '{"slow_ms": 99999}'):
        got = client.post("/admin/faults", data=bad)
        assert got.status_code == 400 and got.get_json()["message"]


def test_start_up_faults_come_from_settings() -> None:
    clock, sleeps = FakeClock(), []
    client = make_app(clock, sleeps, sim_api_slow_ms=250, sim_api_error_rate=1.0,
                      sim_api_faults_duration_s=5).test_client()
    assert client.get("/user/1").status_code >= 500 and sleeps == [0.25]
    clock.now += 5
    assert client.get("/user/1").status_code == 200


def test_the_switch_needs_the_token_when_one_is_set() -> None:
    client = make_app(sim_api_faults_token="s3cret").test_client()
    assert admin(client, "POST", {"error_rate": 1.0}).status_code == 403
    assert admin(client, "GET", headers={"X-Admin-Token": "wrong"}).status_code == 403
    got = admin(client, "POST", {"error_rate": 1.0}, headers={"X-Admin-Token": "s3cret"})
    assert got.status_code == 200 and client.get("/user/1").status_code >= 500
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert admin(client, "DELETE", headers={"X-Admin-Token": "s3cret"},
                 environ_overrides=remote).status_code == 200


def test_without_a_token_the_switch_answers_loopback_only() -> None:
    client = make_app().test_client()
    for addr in ("10.1.2.3", "::ffff:10.1.2.3", "garbage"):
        got = admin(client, "POST", {"error_rate": 1.0}, environ_overrides={"REMOTE_ADDR": addr})
        assert got.status_code == 403
    for addr in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert admin(client, "GET", environ_overrides={"REMOTE_ADDR": addr}).status_code == 200
    assert client.get("/user/1").status_code == 200


# -- metrics, settings, serving ----------------------------------------------------------


def test_metrics_count_requests_by_route_and_status() -> None:
    client = make_app(sim_api_dirty_rate=1.0).test_client()
    client.get("/user/1")
    client.get("/user/1,99")
    client.get("/user/99")
    client.get("/user/x")
    text = client.get("/metrics").data.decode()
    assert 'sim_api_requests_total{route="/user/<ids>",status="200"} 2.0' in text
    assert 'sim_api_requests_total{route="/user/<ids>",status="404"} 1.0' in text
    assert 'sim_api_requests_total{route="/user/<ids>",status="400"} 1.0' in text
    assert 'sim_api_records_total{kind="user",outcome="dirty"} 2.0' in text
    assert 'sim_api_records_total{kind="user",outcome="missing"} 2.0' in text
    assert 'sim_api_request_seconds_count{route="/user/<ids>"} 4.0' in text
    assert "sim_api_injected_error_ratio 0.0" in text


def test_settings_come_from_movierec_sim_api_variables() -> None:
    got = load(ApiSettings, {"MOVIEREC_SIM_API_PORT": "18080", "MOVIEREC_SIM_API_RATE_PER_S": "0",
                             "MOVIEREC_SIM_API_FAULTS_TOKEN": "t"})
    assert (got.sim_api_port, got.sim_api_rate_per_s, got.sim_api_faults_token) == (18080, 0, "t")
    assert got.sim_api_max_bulk == 200 and got.sim_api_host == "127.0.0.1"
    with pytest.raises(SettingsError, match="MOVIEREC_SIM_API_DIRTY_RATE"):
        load(ApiSettings, {"MOVIEREC_SIM_API_DIRTY_RATE": "1.5"})


def test_serve_answers_over_a_socket() -> None:
    (port,) = free_ports(1)
    settings = load(ApiSettings, {}, sim_api_port=port, sim_api_dirty_rate=0.0)
    servers: queue.Queue = queue.Queue()
    thread = threading.Thread(target=serve, args=(FakeDirectory(), settings),
                              kwargs={"ready": servers.put})
    thread.start()
    server = servers.get(timeout=10)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/user/1,2", timeout=10) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"] == "application/json"
            assert json.loads(answer.read()) == [USERS[1], USERS[2]]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/movie/nope+1999", timeout=10)
        assert err.value.code == 404
        err.value.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
    assert not thread.is_alive()
