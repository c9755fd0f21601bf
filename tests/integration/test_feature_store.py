"""The Redis feature store: order, duplicates and redelivery leave the same state."""

from __future__ import annotations

import random
from datetime import datetime

import pytest
import redis

from movierec.wire import LineParser
from simulator.history import HistoryGenerator
from simulator.world import World, WorldSpec
from stores.feature_delta import FeatureDelta, epoch_ms
from stores.keys import Keys
from stores.online import OnlineStoreError
from stores.redis_online import RedisOnlineStore
from tests.integration.conftest import LocalStack


def dump(client: redis.Redis, prefix: str) -> dict:
    """Every key of a prefix with a comparable value (HLLs by their count)."""
    state = {}
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        kind = client.type(key)
        if kind == b"hash":
            state[key] = client.hgetall(key)
        elif kind == b"zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            state[key] = sorted(client.smembers(key))
        elif kind == b"string":  # a HyperLogLog
            state[key] = client.pfcount(key)
    return state


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    world = World.build(WorldSpec(seed=4, n_users=1000, n_movies=200, new_share=0.3, horizon_days=1))
    generator = HistoryGenerator(world, start=datetime(2025, 3, 1), days=1.0, seed=4)
    return [line for line, _ in generator.lines()]


def _apply(store: RedisOnlineStore, lines: list[bytes], batch: int) -> None:
    parser = LineParser()
    for i in range(0, len(lines), batch):
        delta = FeatureDelta()
        for raw in lines[i:i + batch]:
            delta.add(parser.parse(raw), raw)
        store.write(delta)


def test_same_state_whatever_the_order_duplicates_or_redelivery(
        stack: LocalStack, redis_client: redis.Redis, unique: str, lines: list[bytes]) -> None:
    rnd = random.Random(1)
    messy = lines + rnd.sample(lines, len(lines) // 10)  # 10% duplicated
    for i in range(0, len(messy) - 20, 7):  # locally reordered
        j = i + rnd.randrange(20)
        messy[i], messy[j] = messy[j], messy[i]
    redelivered = lines[:3000] + lines[1000:]  # a crash after 3000 lines, resumed at 1000

    states = []
    for name, stream, batch in (("clean", lines, 500), ("messy", messy, 337),
                                ("redelivered", redelivered, 1000), ("small-batches", lines, 7)):
        keys = Keys(f"{unique}-{name}")
        store = RedisOnlineStore(redis_client, keys, recent_history=5)
        _apply(store, stream, batch)
        states.append({k.decode().split(":", 1)[1]: v for k, v in dump(redis_client, keys.prefix).items()})
        for key in redis_client.scan_iter(f"{keys.prefix}:*"):
            redis_client.delete(key)
    assert len(states[0]) > 100 and len(lines) > 3000
    assert states[1] == states[0] and states[2] == states[0] and states[3] == states[0]


def test_features_match_a_recomputation(stack: LocalStack, redis_client: redis.Redis,
                                        unique: str, lines: list[bytes]) -> None:
    keys = Keys(unique)
    store = RedisOnlineStore(redis_client, keys, recent_history=1000)
    _apply(store, lines, 800)
    parser = LineParser()
    events = [parser.parse(raw) for raw in lines]
    user = max({e.user_id for e in events}, key=lambda u: sum(e.user_id == u for e in events))
    mine = [e for e in events if e.user_id == user]
    state = store.user_state(user)
    progress: dict[str, int] = {}
    for e in mine:
        if e.kind == "watch":
            progress[e.movie_id] = max(progress.get(e.movie_id, -1), e.minute)
    assert state["progress"] == progress
    assert state["activity"] == {"first": epoch_ms(mine[0].time), "last": epoch_ms(mine[-1].time)}
    assert set(state["recent"]) == {e.movie_id for e in mine if e.kind in ("watch", "rate")}
    watch_day = {(e.movie_id, e.time.strftime("%Y%m%d")) for e in events if e.kind == "watch"}
    movie, day = sorted(watch_day)[0]
    viewers = {e.user_id for e in events if e.kind == "watch" and e.movie_id == movie}
    assert {int(u) for u in redis_client.smembers(keys.movie_viewers(movie, day))} == viewers
    assert store.refresh_popularity([day]) == len({m for m, d in watch_day if d == day})
    top = redis_client.zrevrange(keys.popularity("window"), 0, 0, withscores=True)
    counts: dict[str, set[int]] = {}
    for e in events:
        if e.kind == "watch":
            counts.setdefault(e.movie_id, set()).add(e.user_id)
    assert top[0][1] == max(len(v) for v in counts.values())
    for key in redis_client.scan_iter(f"{unique}:*"):
        redis_client.delete(key)


def test_a_dead_redis_is_a_clear_error(tmp_path) -> None:
    store = RedisOnlineStore.connect("redis://127.0.0.1:1/0", Keys("x"), timeout_s=0.2)
    delta = FeatureDelta()
    delta.add(LineParser().parse("2025-03-01T10:00:00,1,GET /create_account"), b"x")
    with pytest.raises(OnlineStoreError, match="redis write failed"):
        store.write(delta)
