"""The walk guard's Lua script on a real redis-server (started by the project's own stack
code, Redis alone): the same runs as the rule in memory, a walk seen across two workers'
connections, expiry as the gap, NOSCRIPT after a script flush, and a Redis that is down
or silent failing the guard open, fast, behind its breaker. Plus the guard's cost per
request, printed (docs/serving.md quotes it)."""

from __future__ import annotations

import random
import socket
import statistics
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from movierec.settings import load
from ops import stack as stack_mod
from ops.stack.settings import StackSettings
from recommender.serving.breaker import OPEN, CircuitBreaker
from recommender.serving.walks import WalkGuard, WalkTracker, WalkUnavailable
from stores.keys import Keys
from stores.redis_online import RedisOnlineStore
from stores.redis_walks import RedisWalkStore
from tests.conftest import free_ports

pytestmark = pytest.mark.integration

MIN_RUN = 30


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    (port,) = free_ports(1)
    settings = load(StackSettings, var_dir=tmp_path_factory.mktemp("walks"), redis_port=port)
    try:
        stack_mod.up(settings, ["redis"])
        yield settings.local_redis_url
    finally:
        stack_mod.down(settings, ["redis"])


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = "walk-" + uuid.uuid4().hex[:8]
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}:*", count=1000):
        client.delete(key)
    client.close()


def worker_store(url: str, prefix: str, *, gap_s: float = 60.0, timeout_s: float = 0.025) -> RedisWalkStore:
    """A store as one gunicorn worker has it: on the request path's client (its own small
    blocking pool, short timeouts, no retries: ``RedisOnlineStore.connect``)."""
    hot = RedisOnlineStore.connect(url, Keys(prefix), timeout_s=timeout_s, pool_size=3)
    return RedisWalkStore(hot.client, Keys(prefix), gap_s=gap_s)


def test_the_script_makes_the_same_runs_as_the_rule_in_memory(redis_url: str, prefix: str) -> None:
    """Random traffic over a small id range (many neighbours, repeats, both directions)
    with walks up and down planted in it, well within the gap: run for run identical."""
    store, tracker = worker_store(redis_url, prefix), WalkTracker(60.0)
    rng = random.Random(11)
    users = [rng.randrange(300) for _ in range(3000)]
    users[500:500] = list(range(1000, 1045))
    users[2000:2000] = list(range(2100, 2060, -1))
    users[2500:2500] = [7, 8, 7, 8, 9, 10, 9, 11]
    in_redis = [store.step(u) for u in users]
    assert in_redis == [tracker.step(u) for u in users]
    assert max(in_redis) == 45 and sum(n >= MIN_RUN for n in in_redis) == 16 + 11


def test_a_walk_spread_over_two_workers_is_one_walk(redis_url: str, prefix: str) -> None:
    """A crawler's requests land on whichever worker is free: each worker's guard, on its
    own connection, sees the steps the other took."""
    a = WalkGuard(worker_store(redis_url, prefix), min_run=MIN_RUN)
    b = WalkGuard(worker_store(redis_url, prefix), min_run=MIN_RUN)
    rng = random.Random(5)
    walk = list(range(40_000, 40_040))
    decided = [(a if rng.random() < 0.5 else b).is_step(u) for u in walk]
    assert decided == [False] * 29 + [True] * 11
    # the same walk in one worker alone would have been missed by the other: under
    # another prefix (another deployment) nothing is shared
    other = WalkGuard(worker_store(redis_url, prefix + "x"), min_run=MIN_RUN)
    assert not other.is_step(40_040)
    assert a.is_step(40_040)


def test_runs_expire_after_the_gap_and_keys_do_not_outlive_it(redis_url: str, prefix: str) -> None:
    store = worker_store(redis_url, prefix, gap_s=0.3)
    assert [store.step(u) for u in range(10)] == list(range(1, 11))
    time.sleep(0.15)
    assert store.step(10) == 11  # within the gap
    time.sleep(0.35)
    assert store.step(11) == 1  # past it
    client = redis.Redis.from_url(redis_url)
    ttls = [client.pttl(k) for k in client.scan_iter(f"{prefix}:walk:*")]
    client.close()
    assert ttls and all(0 < t <= 300 for t in ttls)
    assert len(ttls) <= 2 * 12


def test_a_flushed_script_cache_is_reloaded(redis_url: str, prefix: str) -> None:
    """After a Redis restart the script cache is empty: EVALSHA answers NOSCRIPT and the
    script is sent again, once."""
    store = worker_store(redis_url, prefix)
    assert [store.step(u) for u in range(5)] == [1, 2, 3, 4, 5]
    redis.Redis.from_url(redis_url).script_flush()
    assert store.step(5) == 6


def test_stray_values_read_as_no_run(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(f"{prefix}:walk:up:99", "junk")
    client.hset(f"{prefix}:walk:dn:101", "a", "1")
    client.close()
    assert worker_store(redis_url, prefix).step(100) == 1


def test_a_redis_that_is_down_fails_the_guard_open_fast() -> None:
    (port,) = free_ports(1)  # nothing listens there
    store = worker_store(f"redis://127.0.0.1:{port}/0", "down")
    guard = WalkGuard(store, min_run=MIN_RUN, breaker=CircuitBreaker(2, 60.0))
    t0 = time.perf_counter()
    for reason in ("redis", "redis", "breaker_open", "breaker_open"):
        with pytest.raises(WalkUnavailable) as failed:
            guard.is_step(1)
        assert failed.value.reason == reason
    assert time.perf_counter() - t0 < 0.2


def test_a_silent_redis_costs_one_timeout_then_nothing() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    port = listener.getsockname()[1]
    breaker = CircuitBreaker(2, 60.0)
    guard = WalkGuard(worker_store(f"redis://127.0.0.1:{port}/0", "silent", timeout_s=0.05),
                      min_run=MIN_RUN, breaker=breaker)
    try:
        for _ in range(2):
            t0 = time.perf_counter()
            with pytest.raises(WalkUnavailable, match="Timeout"):
                guard.is_step(1)
            assert 0.04 <= time.perf_counter() - t0 < 0.2  # one timeout, no retry
        assert breaker.state == OPEN
        t0 = time.perf_counter()
        for _ in range(1000):
            with pytest.raises(WalkUnavailable, match="breaker"):
                guard.is_step(1)
        assert (time.perf_counter() - t0) / 1000 < 100e-6
    finally:
        listener.close()


def test_the_guards_cost_per_request(redis_url: str, prefix: str) -> None:
    """The walk check's latency on the request path's client (one EVALSHA round trip on
    loopback), printed for docs/serving.md; bounded loosely (a shared 2-core box)."""
    guard = WalkGuard(worker_store(redis_url, prefix, timeout_s=1.0), min_run=MIN_RUN)
    rng = random.Random(2)
    users = [rng.randrange(1_000_000) for _ in range(3000)]
    for u in users[:200]:  # warm: connection, script load
        guard.is_step(u)
    times = []
    for u in users[200:]:
        t0 = time.perf_counter()
        guard.is_step(u)
        times.append(time.perf_counter() - t0)
    times.sort()
    p50, p99 = statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6
    print(f"walk check: p50 {p50:.0f} us, p99 {p99:.0f} us per request")
    assert p50 < 2000
