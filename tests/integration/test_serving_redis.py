"""Serving's adapters against the real stack: features the consumer wrote, read back on
the request path; a Redis that does not answer, behind the circuit breaker; served
records through the real Kafka and Redis sinks, read back from the topic and through
the provenance lookup."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import redis
from kafka import KafkaConsumer

from movierec.kafka_admin import ensure_topic
from movierec.wire import LineParser
from recommender.serving.breaker import CLOSED, OPEN, CircuitBreaker
from recommender.serving.online_reads import OnlineFeatures
from recommender.serving.provenance_lookup import ProvenanceLookup
from recommender.serving.sinks import KafkaSink, RedisProvenanceSink
from recommender.serving.state import BadRequest, FeaturesUnavailable
from recommender.serving.telemetry import Lanes, ServedRecord, Telemetry, decode_served, new_request_id
from stores.feature_delta import FeatureDelta, epoch_ms
from stores.keys import Keys
from stores.online import UserState
from stores.redis_online import RedisOnlineStore
from stores.redis_walks import RedisWalkStore
from tests.conftest import free_ports
from tests.integration.conftest import LocalStack

T = datetime(2025, 3, 1, 12, 0)


def at(minutes: float) -> str:
    return (T + timedelta(minutes=minutes)).isoformat()


LINES = [  # user 7: three minutes of one film, two ratings of it, a minute of another
    f"{at(0)},7,GET /create_account",
    f"{at(1)},7,GET /data/m/the+matrix+1999/0.mpg",
    f"{at(2)},7,GET /data/m/the+matrix+1999/1.mpg",
    f"{at(3)},7,GET /data/m/the+matrix+1999/2.mpg",
    f"{at(5)},7,GET /rate/the+matrix+1999=3",
    f"{at(6)},7,GET /rate/the+matrix+1999=5",
    f"{at(8)},7,GET /data/m/up+2009/0.mpg",
    f"{at(9)},8,GET /data/m/up+2009/0.mpg",
]
PROFILE = {"age": "34", "gender": "F", "occupation": "writer",
           "likes": "Up,\tthe Matrix; Amélie", "fetched_at": "1740830400"}


def apply_lines(store: RedisOnlineStore, lines: list[str]) -> None:
    parser, delta = LineParser(), FeatureDelta()
    for line in lines:
        raw = line.encode()
        delta.add(parser.parse(raw), raw)
    store.write(delta)


@pytest.fixture
def keys(redis_client: redis.Redis, unique: str) -> Iterator[Keys]:
    yield Keys(unique)
    for key in redis_client.scan_iter(f"{unique}:*", count=1000):
        redis_client.delete(key)


def online(stack: LocalStack, keys: Keys, breaker: CircuitBreaker | None = None) -> OnlineFeatures:
    return OnlineFeatures(RedisOnlineStore.connect(stack.redis_url, keys, timeout_s=1.0, pool_size=8),
                          breaker or CircuitBreaker(3, 1.0))


# -- features ----------------------------------------------------------------------------


def test_features_written_by_the_consumer_read_back(stack: LocalStack, redis_client: redis.Redis,
                                                     keys: Keys) -> None:
    store = RedisOnlineStore(redis_client, keys, recent_history=50)
    apply_lines(store, LINES)
    redis_client.hset(keys.user_profile(7), mapping=PROFILE)
    features = online(stack, keys)

    state = features.read(7)
    # what the lines say, worked out by hand
    assert state.progress == {"the+matrix+1999": 2, "up+2009": 0}
    assert state.ratings == {"the+matrix+1999": (epoch_ms(T + timedelta(minutes=6)), 5)}
    assert state.recent == {"the+matrix+1999": epoch_ms(T + timedelta(minutes=6)),
                            "up+2009": epoch_ms(T + timedelta(minutes=8))}
    assert state.profile == PROFILE  # free text with a tab and non-ASCII survives
    # and the consumer's own reader agrees
    ref = store.user_state(7)
    assert (state.progress, state.ratings, state.recent, state.profile) == (
        ref["progress"], ref["ratings"], ref["recent"], ref["profile"])
    assert features.read(8).progress == {"up+2009": 0} and not features.read(8).profile
    assert features.read(123_456) == UserState.empty()
    assert features.breaker.state == CLOSED


def test_a_digest_read_sends_the_state_only_when_it_changed(
        stack: LocalStack, redis_client: redis.Redis, keys: Keys) -> None:
    store = RedisOnlineStore(redis_client, keys, recent_history=50)
    apply_lines(store, LINES)
    redis_client.hset(keys.user_profile(7), mapping=PROFILE)
    features = online(stack, keys)

    first = features.read_if_changed(7, None)
    assert first.state == features.read(7) and len(first.digest) == 40
    assert first.walk_run is None and first.walk_error is None
    again = features.read_if_changed(7, first.digest)
    assert again.digest == first.digest and again.state is None  # unchanged: no state sent
    assert features.read_if_changed(7, "0" * 40).state == first.state  # a stale digest

    apply_lines(store, [f"{at(20)},7,GET /data/m/heat+1995/0.mpg"])  # the user's new event
    after = features.read_if_changed(7, first.digest)
    assert after.digest != first.digest and after.state is not None
    assert "heat+1995" in after.state.progress
    redis_client.hset(keys.user_profile(7), "age", "35")  # a profile write changes it too
    assert features.read_if_changed(7, after.digest).state is not None
    unknown = features.read_if_changed(123_456, None)
    assert unknown.state == UserState.empty()
    assert features.read_if_changed(123_456, unknown.digest).state is None


def test_a_walk_step_rides_the_read_and_its_failure_spares_the_features(
        stack: LocalStack, redis_client: redis.Redis, keys: Keys) -> None:
    store = RedisOnlineStore(redis_client, keys, recent_history=50)
    apply_lines(store, LINES)
    walks = RedisWalkStore(redis_client, keys, gap_s=60.0)
    features = online(stack, keys)
    runs = [features.read_if_changed(u, None, walk_keys=walks.keys_of(u), walk_gap_ms=60_000).walk_run
            for u in (5, 6, 7, 8)]
    assert runs == [1, 2, 3, 4]  # the same rule as RedisWalkStore.step (stores.redis_walks)
    assert walks.step(9) == 5  # and the same keys
    read = features.read_if_changed(7, None, walk_keys=walks.keys_of(7), walk_gap_ms=60_000)
    # 7 again: the upward run through it moved on to 9; the downward one from 8 grows
    assert read.state == features.read(7) and read.walk_run == 2

    # A step Redis refuses (here an expiry it rejects) fails alone: the state still comes.
    script = store._read_if_changed
    k = [keys.user_progress(7), keys.user_ratings(7), keys.user_recent(7), keys.user_profile(7)]
    reply = script(keys=[*k, *walks.keys_of(40)], args=["", "-5"])
    assert isinstance(reply[1], bytes) and reply[1].startswith(b"ERR")
    assert len(reply) == 6 and reply[2]  # the progress came anyway


def test_a_long_history_reads_back_whole_and_recent_stays_bounded(
        stack: LocalStack, redis_client: redis.Redis, keys: Keys) -> None:
    store = RedisOnlineStore(redis_client, keys, recent_history=50)
    films = [f"film+{i}+{1950 + i % 70}" for i in range(100)]
    apply_lines(store, [f"{at(i)},9,GET /data/m/{m}/{i % 7}.mpg" for i, m in enumerate(films)])
    state = online(stack, keys).read(9)
    assert state.progress == {m: i % 7 for i, m in enumerate(films)}
    assert state.recent == {m: epoch_ms(T + timedelta(minutes=i)) for i, m in enumerate(films)
                            if i >= 50}


def test_junk_values_are_skipped_not_raised(stack: LocalStack, redis_client: redis.Redis,
                                            keys: Keys) -> None:
    redis_client.hset(keys.user_progress(5), mapping={
        "ok+2000": "5", "bad+2000": "five", "neg+2000": "-3", "tab\t+2000": "4", "": "1",
        "sup+2000": "²"})
    redis_client.hset(keys.user_progress(5), b"\xff+2000", "2")
    redis_client.hset(keys.user_ratings(5), mapping={
        "ok+2000": "1740830400000:4", "bad+2000": "soon", "half+2000": "1740830400000:",
        "tabbed+2000": "17\t:4"})
    redis_client.zadd(keys.user_recent(5), {"ok+2000": 1740830400000, "frac+2000": 1.5,
                                            "past+2000": -10, "far+2000": float("inf")})
    redis_client.hset(keys.user_profile(5), mapping={"age": "30", "bin": b"\xff\xfe"})
    redis_client.set(keys.user_progress(6), "a string where a hash belongs")  # WRONGTYPE
    redis_client.hset(keys.user_ratings(6), "ok+2000", "1740830400000:4")
    features = online(stack, keys)

    state = features.read(5)
    assert state.progress == {"ok+2000": 5}
    assert state.ratings == {"ok+2000": (1740830400000, 4)}
    assert state.recent == {"ok+2000": 1740830400000}
    assert state.profile == {"age": "30"}
    other = features.read(6)
    assert other.progress == {} and other.ratings == {"ok+2000": (1740830400000, 4)}
    assert features.breaker.state == CLOSED  # junk is not a failure of Redis


def test_popular_movies_and_metadata(stack: LocalStack, redis_client: redis.Redis,
                                     keys: Keys) -> None:
    redis_client.zadd(keys.popularity("decayed"), {"a+2000": 3.5, "b+2000": 9.0, "c+2000": 1.0})
    redis_client.hset(keys.movie_meta("a+2000"), mapping={"runtime": "90", "adult": "0"})
    features = online(stack, keys)
    assert features.popular(2) == ["b+2000", "a+2000"]
    assert features.popular(10) == ["b+2000", "a+2000", "c+2000"]
    assert features.popular(0) == []
    assert RedisOnlineStore(redis_client, keys).movies(["a+2000", "nothing+1999"]) == {  # the loader's read
        "a+2000": {"runtime": "90", "adult": "0"}}
    assert features.ping()


# -- a Redis that does not answer ---------------------------------------------------------


def accepted(listener: socket.socket) -> int:
    """Connections the kernel completed on ``listener`` since the last call (they wait in
    its backlog: nothing ever answers them)."""
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def test_a_silent_redis_times_out_opens_the_breaker_then_fails_fast() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    timeout = 0.2
    breaker = CircuitBreaker(3, 60.0)
    features = OnlineFeatures(RedisOnlineStore.connect(f"redis://127.0.0.1:{port}/0", Keys("x"),
                                                       timeout_s=timeout, pool_size=8), breaker)
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            with pytest.raises(FeaturesUnavailable, match="Timeout"):
                features.read(1)
            elapsed = time.perf_counter() - t0
            # one timeout, no retry (a retry would take 2 x timeout)
            assert timeout * 0.9 <= elapsed < timeout + 0.15
        assert breaker.state == OPEN
        assert accepted(listener) >= 1  # the failed reads did reach the socket

        t0 = time.perf_counter()
        for _ in range(1000):
            with pytest.raises(FeaturesUnavailable, match="breaker is open"):
                features.read(1)
            with pytest.raises(FeaturesUnavailable, match="breaker is open"):
                features.popular(20)
        per_call = (time.perf_counter() - t0) / 2000
        assert per_call < 100e-6  # microseconds, not the 200 ms timeout
        assert accepted(listener) == 0  # and the open breaker never touched the socket
        assert not features.ping()
    finally:
        features.close()
        listener.close()


def test_a_refused_connection_is_a_failure_too() -> None:
    (port,) = free_ports(1)  # nothing listens there
    breaker = CircuitBreaker(1, 60.0)
    features = OnlineFeatures(RedisOnlineStore.connect(f"redis://127.0.0.1:{port}/0", Keys("x"),
                                                       timeout_s=1.0, pool_size=8), breaker)
    t0 = time.perf_counter()
    with pytest.raises(FeaturesUnavailable, match="ConnectionError"):
        features.read(1)
    assert time.perf_counter() - t0 < 0.5 and breaker.state == OPEN


def test_a_trial_after_the_reset_closes_the_breaker_when_redis_is_back(
        stack: LocalStack, redis_client: redis.Redis, keys: Keys) -> None:
    store = RedisOnlineStore(redis_client, keys)
    apply_lines(store, LINES)
    breaker = CircuitBreaker(2, 0.3)
    features = online(stack, keys, breaker)
    breaker.failure()
    breaker.failure()  # as after two timeouts
    with pytest.raises(FeaturesUnavailable):
        features.read(7)
    time.sleep(0.35)
    assert features.read(7).progress == {"the+matrix+1999": 2, "up+2009": 0}
    assert breaker.state == CLOSED


# -- telemetry and provenance ----------------------------------------------------------------


def served(i: int, user: int, time_ms: int) -> ServedRecord:
    return ServedRecord(request_id=new_request_id(), time_ms=time_ms, user_id=user, arm="b",
                        model_version=f"als-{i % 3}", items=(f"film+{i}+2001", "up+2009"),
                        path="model", fallback=None if i % 5 else "budget",
                        latency_ms=0.5 + i / 100, status=200)


class Outcomes(Counter):
    def __call__(self, outcome: str, n: int) -> None:
        self[outcome] += n


def test_served_records_reach_the_topic_and_the_provenance_lookup(
        stack: LocalStack, redis_client: redis.Redis, keys: Keys, unique: str) -> None:
    topic = f"served-{unique}"
    ensure_topic(stack.bootstrap, topic, 2)
    start = 1_740_830_400_000
    heavy = [served(i, 1, start + 10 * i) for i in range(250)]  # more than the 200 kept
    light = [served(i, 2, start + 10 * i + 5) for i in range(30)]
    records = [r for pair in zip(heavy, light, strict=False) for r in pair] + heavy[30:]
    to_kafka, to_redis = Outcomes(), Outcomes()
    kafka = KafkaSink(stack.bootstrap, topic)
    telemetry = Lanes([
        Telemetry(kafka, capacity=10_000, batch_size=100, flush_s=0.02, on_outcome=to_kafka),
        Telemetry(RedisProvenanceSink(RedisOnlineStore(redis_client, keys, provenance_ttl_s=60)),
                  capacity=10_000, batch_size=100, flush_s=0.02, on_outcome=to_redis)])
    for r in records:
        assert telemetry.submit(r)
    telemetry.close(timeout=30)
    kafka.close()
    assert to_kafka == to_redis == {"published": len(records)}

    consumer = KafkaConsumer(topic, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)
    try:
        got: list[tuple[int, ServedRecord]] = []
        messages = 0
        for message in consumer:
            messages += 1
            decoded, bad = decode_served(message.value)
            assert bad == 0
            got += [(message.partition, r) for r in decoded]
            if len(got) == len(records):
                break
    finally:
        consumer.close()
    assert sorted(r.request_id for _, r in got) == sorted(r.request_id for r in records)
    assert {r.request_id: r for _, r in got} == {r.request_id: r for r in records}
    assert messages < len(records)  # many records a message: the batches of the lanes
    partition_of: dict[int, set[int]] = {}
    for partition, r in got:  # a user's records all in one partition, in their order
        partition_of.setdefault(r.user_id, set()).add(partition)
    assert all(len(p) == 1 for p in partition_of.values())
    for user in (1, 2):
        assert [r for _, r in got if r.user_id == user] == [r for r in records if r.user_id == user]

    lookup = ProvenanceLookup(RedisOnlineStore(redis_client, keys))
    assert all(lookup.get(r.request_id) == r for r in records)
    assert lookup.get(new_request_id()) is None
    assert 0 < redis_client.pttl(keys.served(light[0].request_id)) <= 60_000
    assert 0 < redis_client.pttl(keys.served_by_user(2)) <= 60_000
    # by user and time: the latest at or before the instant
    assert lookup.by_user(2, light[10].time_ms) == light[10]
    assert lookup.by_user(2, light[10].time_ms + 9) == light[10]
    assert lookup.by_user(2, light[10].time_ms - 1) == light[9]
    assert lookup.by_user(2, light[0].time_ms - 1) is None
    assert lookup.by_user(2, start + 10**9) == light[-1]
    assert lookup.by_user(3, start + 10**9) is None
    # only the newest 200 are indexed per user: the 50 oldest fell out of the index
    assert redis_client.zcard(keys.served_by_user(1)) == 200
    assert lookup.by_user(1, heavy[49].time_ms) is None
    assert lookup.by_user(1, heavy[50].time_ms) == heavy[50]
    assert lookup.get(heavy[0].request_id) == heavy[0]  # still there by id until it expires


@pytest.mark.parametrize("request_id", ["xyz", "A" * 32, "0" * 31, "0" * 33, "g" * 32])
def test_provenance_rejects_malformed_request_ids_before_any_io(request_id: str) -> None:
    (port,) = free_ports(1)  # nothing listens: a lookup that reached Redis would fail otherwise
    with pytest.raises(BadRequest):
        ProvenanceLookup(RedisOnlineStore(redis.Redis(port=port), Keys("x"))).get(request_id)


def test_provenance_without_redis_is_unavailable_not_a_crash() -> None:
    (port,) = free_ports(1)
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    lookup = ProvenanceLookup(RedisOnlineStore(client, Keys("x")))
    with pytest.raises(FeaturesUnavailable):
        lookup.get(new_request_id())
    with pytest.raises(FeaturesUnavailable):
        lookup.by_user(1, 0)


def test_a_dead_broker_fails_the_kafka_sink_not_the_provenance(
        redis_client: redis.Redis, keys: Keys) -> None:
    (port,) = free_ports(1)
    to_kafka, to_redis = Outcomes(), Outcomes()
    telemetry = Lanes([
        Telemetry(KafkaSink(f"127.0.0.1:{port}", "served"), capacity=1000, batch_size=10,
                  flush_s=0.01, on_outcome=to_kafka),
        Telemetry(RedisProvenanceSink(RedisOnlineStore(redis_client, keys, provenance_ttl_s=60)),
                  capacity=1000, batch_size=10, flush_s=0.01, on_outcome=to_redis)])
    records = [served(i, 4, 1_740_830_400_000 + i) for i in range(40)]
    for r in records:
        telemetry.submit(r)
    telemetry.close(timeout=10)
    assert to_kafka == {"failed": 40} and to_redis == {"published": 40}
    lookup = ProvenanceLookup(RedisOnlineStore(redis_client, keys))
    assert lookup.by_user(4, 1_740_830_400_000 + 39) == records[-1]
