"""The real service (gunicorn, 2 workers) on the real Redis, Kafka and a file registry.

One staged world (``load_tests.stage``: features written by the consumer's own store,
ALS as champion, popularity as baseline) and one running service for the module; the
tests call it over HTTP like the course's client does.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from load_tests.server import ServiceProcess, staged_env
from load_tests.stage import StageSpec, stage
from movierec.wire import LineParser
from recommender.registry import Registry
from recommender.serving.telemetry import decode_served
from simulator.catalog import CONTENT_RATINGS, RATED_R
from simulator.world import World, WorldSpec
from stores.feature_delta import FeatureDelta
from stores.keys import Keys
from stores.redis_online import RedisOnlineStore
from tests.conftest import free_ports
from tests.integration.conftest import LocalStack

ANSWER = re.compile(r"^([^,\s]+(,[^,\s]+){0,19})?$")
SPEC = StageSpec(users=2000, movies=1500, days=7, seed=5, describe_share=0.5)
TOKEN = "it-token"
DEADLINE_S = 0.6


def get(url: str, timeout: float = 2.0, **headers: str) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


@pytest.fixture(scope="module")
def served(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serving")
    prefix = f"sv{int(time.time() * 1000) % 10**8}"
    staged = stage(SPEC, redis_url=stack.redis_url, prefix=prefix, registry_dir=root / "registry")
    (port,) = free_ports(1)
    env = staged_env(redis_url=stack.redis_url, prefix=prefix, root=root,
                     kafka_bootstrap=stack.bootstrap, served_topic=f"served-{prefix}",
                     MOVIEREC_SERVE_ADMIN_TOKEN=TOKEN, MOVIEREC_SERVE_POLL_S="0.2")
    service = ServiceProcess(port=port, env=env, log=root / "serve.log", workers=2).start()
    try:
        yield service, staged, prefix, root
    finally:
        service.stop()


def cache_hits(url: str) -> float:
    """/recommend answers served from the workers' answer caches so far."""
    _, text, _ = get(f"{url}/metrics")
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "movierec_serve_answer_cache_total" and s.labels["outcome"] == "hit")


def state_of(stack: LocalStack, prefix: str, user: int) -> dict:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        return RedisOnlineStore(client, Keys(prefix)).user_state(user)
    finally:
        client.close()


def test_known_users_get_model_lists_without_anything_they_watched(stack, served):
    service, staged, prefix, _ = served
    users = list(staged.known_users[:: max(1, len(staged.known_users) // 60)])
    random.Random(3).shuffle(users)  # in no order, as users come (ids in a row are a crawler's walk)
    for user in users:
        status, body, headers = get(f"{service.url}/recommend/{user}")
        assert status == 200 and ANSWER.match(body), (user, body)
        items = body.split(",")
        assert 1 <= len(items) <= 20 and len(set(items)) == len(items)
        state = state_of(stack, prefix, user)
        assert not set(items) & (set(state["progress"]) | set(state["ratings"]))
        assert headers["X-Model-Version"] == staged.versions["als"]
        assert headers["X-Answer-Path"] == "model" and "X-Fallback" not in headers


def test_minors_and_unknown_ages_never_get_adult_or_r_rated_movies(stack, served):
    service, staged, prefix, _ = served
    world = World.build(WorldSpec(seed=SPEC.seed, n_users=SPEC.users, n_movies=SPEC.movies,
                                  describe_share=SPEC.describe_share))
    unsafe = {m for m, adult, rating in zip(world.catalog.ids, world.catalog.adult,
                                            world.catalog.content_rating, strict=True)
              if adult or rating >= RATED_R}
    assert unsafe and CONTENT_RATINGS[RATED_R] == "R"
    minors = [u for u in staged.known_users if (world.user_record(u) or {}).get("age", 99) < 18]
    assert len(minors) >= 20
    for user in minors[:40] + [staged.first_unknown_user + 3]:
        status, body, _ = get(f"{service.url}/recommend/{user}")
        assert status == 200 and body and not set(body.split(",")) & unsafe, user
    adults = [u for u in staged.known_users if (world.user_record(u) or {}).get("age", 0) >= 25][:200]
    served_to_adults = set()
    for user in adults:
        served_to_adults |= set(get(f"{service.url}/recommend/{user}")[1].split(","))
    assert served_to_adults & unsafe  # the filter is for minors, not for everyone


def test_new_events_change_the_list_within_two_seconds(stack, served):
    service, staged, prefix, _ = served
    light = [u for u in staged.known_users[:400] if len(state_of(stack, prefix, u)["progress"]) <= 2]
    user = light[0]
    hits = cache_hits(service.url)
    answers = {get(f"{service.url}/recommend/{user}")[1] for _ in range(6)}  # both workers, twice
    assert len(answers) == 1 and cache_hits(service.url) > hits  # the answer cache holds it
    before = answers.pop()
    watched = before.split(",")[:5]
    client = redis.Redis.from_url(stack.redis_url)
    store, parser, delta = RedisOnlineStore(client, Keys(prefix)), LineParser(), FeatureDelta()
    for movie in watched:
        line = f"2025-03-08T12:00:00,{user},GET /data/m/{movie}/80.mpg".encode()
        delta.add(parser.parse(line), line)
    store.write(delta)
    client.close()
    started = time.monotonic()
    while True:
        _, after, _ = get(f"{service.url}/recommend/{user}")
        if not set(after.split(",")) & set(watched):
            break
        assert time.monotonic() - started < 2.0, "the answer did not follow the new events"
        time.sleep(0.05)
    # Not just the same ranking minus the watched movies: the new history re-ranked it.
    assert after.split(",")[:15] != before.split(",")[5:20]


@pytest.mark.parametrize("raw", ["abc", "-5", "1.0", "99999999999999999999999", "%E2%80%8B1"])
def test_malformed_ids_get_400_and_unknown_numeric_ids_a_cold_start(served, raw):
    service, staged, _, _ = served
    status, body, headers = get(f"{service.url}/recommend/{raw}")
    assert status == 400 and headers["Content-Type"].startswith("text/plain") and body
    status, body, headers = get(f"{service.url}/recommend/{staged.first_unknown_user}")
    assert status == 200 and ANSWER.match(body) and headers["X-Answer-Path"] != "model"


def test_served_lists_are_traceable_through_provenance_and_kafka(stack, served):
    service, staged, prefix, _ = served
    user = staged.known_users[7]
    _, body, headers = get(f"{service.url}/recommend/{user}")
    rid = headers["X-Request-Id"]
    deadline = time.monotonic() + 10
    while (answer := get(f"{service.url}/provenance/{rid}"))[0] == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, text, _ = answer
    assert status == 200
    explained = json.loads(text)
    assert explained["served"]["items"] == body.split(",") and explained["served"]["user_id"] == user
    model = explained["model"]
    assert model["version"] == staged.versions["als"]
    assert model["code"]["commit"] and model["data"]["snapshot_id"].startswith("stage-")
    status, text, _ = get(f"{service.url}/provenance?user={user}")
    assert status == 200 and json.loads(text)["served"]["request_id"] == rid
    consumer = KafkaConsumer(f"served-{prefix}", bootstrap_servers=stack.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        ids = {r.request_id for m in consumer for r in decode_served(m.value)[0]}
    finally:
        consumer.close()
    assert rid in ids


def _counter(url: str, name: str, **labels: str) -> float:
    _, text, _ = get(url + "/metrics")
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_metrics_count_every_request_across_both_workers(served):
    service, staged, _, _ = served
    name = "movierec_serve_requests_total"
    before = _counter(service.url, name, endpoint="recommend", status="200")
    for user in staged.known_users[:200]:
        get(f"{service.url}/recommend/{user}")
    after = _counter(service.url, name, endpoint="recommend", status="200")
    assert after - before == 200


def test_an_experiment_splits_users_stably_without_a_restart(served):
    service, staged, _, root = served
    spec = {"id": "it-ab", "arms": [{"name": "als", "model": "champion", "share": 0.5},
                                    {"name": "pop", "model": "baseline", "share": 0.5}]}
    req = urllib.request.Request(f"{service.url}/admin/experiment", method="PUT",
                                 data=json.dumps({"experiment": spec, "reason": "it"}).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
    time.sleep(1.0)  # every worker polls the file every 0.2 s
    users = staged.known_users[:300]
    arms = {}
    for user in users:
        _, _, headers = get(f"{service.url}/recommend/{user}")
        arms[user] = (headers["X-Arm"], headers["X-Model-Version"])
    counts = Counter(arm for arm, _ in arms.values())
    assert 100 < counts["als"] < 200 and counts["als"] + counts["pop"] == 300
    assert all(version == staged.versions["als" if arm == "als" else "popularity"]
               for arm, version in arms.values())
    try:
        for user in users[:50]:  # stable: the same arm on every call, whichever worker answers
            assert get(f"{service.url}/recommend/{user}")[2]["X-Arm"] == arms[user][0]
    finally:
        req = urllib.request.Request(f"{service.url}/admin/experiment", method="PUT",
                                     data=json.dumps({"experiment": None}).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5):
            pass
        time.sleep(1.0)


def test_ten_swaps_under_load_lose_no_request_and_a_corrupt_version_never_serves(served):
    service, staged, _, root = served
    registry = Registry(root / "registry")
    stop = threading.Event()
    results: list[tuple[int, float, str]] = []

    def load() -> None:
        users = staged.known_users
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status, _, headers = get(f"{service.url}/recommend/{users[i % len(users)]}", timeout=5)
                version = headers.get("X-Model-Version", "")
            except OSError:
                status, version = -1, ""
            results.append((status, time.perf_counter() - started, version))
            i += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        order = [staged.versions["popularity"], staged.versions["als"]] * 5
        for version in order:
            registry.promote(version, alias="champion", reason="swap test")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if get(f"{service.url}/recommend/{staged.known_users[0]}")[2]["X-Model-Version"] == version:
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"{version} never served")
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [r for r in results if r[0] != 200 or r[1] > DEADLINE_S]
    assert len(results) > 200 and failed == []
    assert {v for _, _, v in results} >= {staged.versions["als"], staged.versions["popularity"]}


def test_a_corrupt_version_is_rejected_and_the_old_one_keeps_serving(served):
    service, staged, _, root = served
    registry = Registry(root / "registry")
    serving = registry.aliases()["champion"]
    # An earlier test's last swap may not have reached every worker yet: wait until 20
    # answers in a row come from the champion (both workers, in all likelihood).
    deadline, in_a_row = time.monotonic() + 15, 0
    while in_a_row < 20:
        assert time.monotonic() < deadline, f"the workers never all served {serving}"
        version = get(f"{service.url}/recommend/{staged.known_users[0]}")[2]["X-Model-Version"]
        in_a_row = in_a_row + 1 if version == serving else 0
    source = registry.get(staged.versions["popularity"])
    time.sleep(1.1)  # a new version id (its time has a one-second resolution)
    fresh = registry.register(registry.load(source.version), metadata=source.meta)
    npy = next(fresh.path.glob("*.npy"))
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    rejected = _counter(service.url, "movierec_serve_model_swaps_total", result="rejected")
    registry.promote(fresh.version, alias="champion", reason="corrupt on purpose")
    deadline = time.monotonic() + 15  # each worker polls every 0.2 s; slack for a loaded box
    while _counter(service.url, "movierec_serve_model_swaps_total", result="rejected") < rejected + 2:
        assert time.monotonic() < deadline, "both workers should reject the corrupt version"
        time.sleep(0.1)
    for user in staged.known_users[:50]:
        status, body, headers = get(f"{service.url}/recommend/{user}")
        assert status == 200 and ANSWER.match(body) and headers["X-Model-Version"] == serving
    registry.rollback("champion", reason="undo the corrupt promotion")


def test_redis_down_still_answers_200_within_the_deadline(stack, served):
    from ops.stack.redis_server import RedisServer

    service, staged, _, _ = served
    part = RedisServer(stack.settings)
    part.down()
    try:
        for user in staged.known_users[:30]:
            started = time.perf_counter()
            status, body, headers = get(f"{service.url}/recommend/{user}")
            assert status == 200 and ANSWER.match(body)
            assert headers["X-Fallback"] == "redis" and time.perf_counter() - started < 0.2
        assert _counter(service.url, "movierec_serve_fallbacks_total", reason="redis") >= 30
    finally:
        part.up()
    deadline = time.monotonic() + 15  # the breaker closes again after its reset time
    while "X-Fallback" in get(f"{service.url}/recommend/{staged.known_users[0]}")[2]:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _group_processes(pgid: int) -> list[int]:
    """Pids of the live processes of process group ``pgid`` (the service's session)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields[2]: pgrp; [0]: state
            pids.append(int(stat.parent.name))
    return pids


def _mapped_libraries(pid: int) -> set[str]:
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {line.split()[-1] for line in lines if line.rstrip().endswith(".so") or ".so." in line}


def test_serving_workers_load_neither_pandas_nor_pyarrow(served):
    """Serving imports numpy, scipy and the model code, never the training stack: a worker
    that has answered requests maps no shared library of pandas or pyarrow (their C
    extensions would be mapped the moment either is imported), while numpy's are."""
    service, staged, _, _ = served
    for user in staged.known_users[:20]:
        assert get(f"{service.url}/recommend/{user}")[0] == 200
    libraries = {pid: _mapped_libraries(pid) for pid in _group_processes(service.proc.pid)}
    workers = [pid for pid, libs in libraries.items() if any("/numpy/" in lib for lib in libs)]
    assert len(workers) >= 2, libraries.keys()  # the two workers (and perhaps the arbiter)
    for pid in workers:
        heavy = sorted(lib for lib in libraries[pid] if "/pandas/" in lib or "/pyarrow/" in lib)
        assert heavy == [], (pid, heavy[:3])


def test_worker_log_lines_reach_the_service_log(served):
    """gunicorn's forked workers log at MOVIEREC_LOG_LEVEL (INFO here): each worker's model
    watcher says what it serves (before, a worker had no handler and these were lost)."""
    service, staged, _, _ = served
    deadline, lines = time.monotonic() + 15, []
    while len(lines) < 2:  # the service is ready once one worker answers; the other follows
        assert time.monotonic() < deadline, lines
        text = service.log.read_text(errors="replace")
        lines = [line for line in text.splitlines() if "recommender.serving.watcher: serving" in line]
        time.sleep(0.1)
    assert all(" INFO " in line for line in lines)
