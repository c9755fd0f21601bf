"""Enrichment against the simulator's user/movie API and the real Redis."""

from __future__ import annotations

import threading

import pytest
import redis

from movierec.settings import load
from simulator.api import ApiSettings, make_server
from simulator.world import World, WorldSpec
from stores.keys import Keys
from stores.redis_online import RedisOnlineStore
from stream_consumer.enrich import ApiError, Enricher
from tests.conftest import free_ports
from tests.integration.conftest import LocalStack


def test_profiles_and_metadata_arrive_clean(stack: LocalStack, redis_client: redis.Redis,
                                            unique: str) -> None:
    world = World.build(WorldSpec(seed=6, n_users=500, n_movies=100))
    port = free_ports(1)[0]
    settings = load(ApiSettings, {}, sim_api_port=port, sim_api_dirty_rate=1.0)  # every record dirty
    server = make_server(world, settings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    keys = Keys(unique)
    try:
        enricher = Enricher(RedisOnlineStore(redis_client, keys), f"http://127.0.0.1:{port}")
        users = list(range(0, 450, 3)) + [10_000_000]  # the last is unknown to the API
        movies = world.catalog.ids[:60] + ["not+a+movie+1999"]
        redis_client.sadd(keys.pending_profiles(), *users)
        redis_client.sadd(keys.pending_movies(), *movies)
        while enricher.run_once():
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    for user in users[:-1]:
        want = world.user_record(user)
        got = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.user_profile(user)).items()}
        assert (got["age"], got["gender"], got["occupation"]) == (
            str(want["age"]), want["gender"], want["occupation"])  # clean despite dirty types
        assert got.get("likes") == want.get("likes")
        assert enricher.known_user(user)
    assert redis_client.hget(keys.user_profile(10_000_000), "unknown") == b"1"
    for movie in movies[:-1]:
        assert enricher.runtime_of(movie) == world.movie_record(movie)["runtime"]
    assert enricher.known_movie("not+a+movie+1999") and enricher.runtime_of("not+a+movie+1999") is None
    assert redis_client.scard(keys.pending_profiles()) == 0

    # a restarted worker knows nothing in memory; what is stored is not fetched again
    restarted = Enricher(RedisOnlineStore(redis_client, keys), f"http://127.0.0.1:{port}")
    calls: list[str] = []
    restarted.fetch = lambda path: calls.append(path) or []
    redis_client.sadd(keys.pending_profiles(), *users)
    redis_client.sadd(keys.pending_movies(), *movies)
    while restarted.run_once():
        pass
    assert calls == []
    assert all(restarted.known_user(u) for u in users)
    assert restarted.runtime_of(movies[0]) == world.movie_record(movies[0])["runtime"]
    for key in redis_client.scan_iter(f"{unique}:*"):
        redis_client.delete(key)


def test_a_dead_api_keeps_the_ids_pending(stack: LocalStack, redis_client: redis.Redis,
                                          unique: str) -> None:
    keys = Keys(unique)
    enricher = Enricher(RedisOnlineStore(redis_client, keys), f"http://127.0.0.1:{free_ports(1)[0]}",
                        timeout_s=0.5)
    redis_client.sadd(keys.pending_profiles(), 1, 2, 3)
    with pytest.raises(ApiError):
        enricher.run_once()
    assert redis_client.scard(keys.pending_profiles()) == 3  # put back, to try again later
    redis_client.delete(keys.pending_profiles())
