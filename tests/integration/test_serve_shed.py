"""Load shedding in the real service: gunicorn with ONE worker on the real Redis and a file
registry, requests made to wait in the kernel's queue, then answered.

The worker is held deterministically, not by racing a burst: a client sends an incomplete
request (no blank line ending its headers), the worker takes it and blocks reading the
rest; meanwhile more requests arrive on other connections and wait (sync: in the listen
backlog; gthread: accepted, but with the only thread busy). When the first request is
completed the worker answers it in full (its data just arrived), then finds the others
with a queue age far past ``MOVIEREC_SERVE_SHED_MS``: each must be shed, a 200 with the
minor-safe popular list, counted, and seen in the queue-age histogram.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from load_tests.server import ServiceProcess, staged_env
from load_tests.stage import StageSpec, stage
from simulator.catalog import RATED_R
from simulator.world import World, WorldSpec
from tests.conftest import free_ports
from tests.integration.conftest import LocalStack

ANSWER = re.compile(r"^[^,\s]+(,[^,\s]+){0,19}$")
SPEC = StageSpec(users=300, movies=400, days=3, seed=9)
SHED_MS = 100
WAIT_S = 0.4  # how long the queued requests wait: four times the shed limit
QUEUED = 6
REFUSE_MS = 1000  # past it the sync worker resets a queued connection unanswered


@pytest.fixture(scope="module", params=["sync", "gthread"])
def one_worker(request, stack: LocalStack, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp(f"shed-{request.param}")
    prefix = f"shed{int(time.time() * 1000) % 10**8}"
    staged = stage(SPEC, redis_url=stack.redis_url, prefix=prefix, registry_dir=root / "registry")
    (port,) = free_ports(1)
    env = staged_env(redis_url=stack.redis_url, prefix=prefix, root=root,
                     kafka_bootstrap=stack.bootstrap, served_topic=f"served-{prefix}",
                     MOVIEREC_SERVE_SHED_MS=str(SHED_MS), MOVIEREC_SERVE_REFUSE_MS=str(REFUSE_MS),
                     MOVIEREC_SERVE_WORKER_CLASS=request.param, MOVIEREC_SERVE_THREADS="1")
    service = ServiceProcess(port=port, env=env, log=root / "serve.log", workers=1).start()
    try:
        yield service, staged
    finally:
        service.stop()


def one_worker_class(service: ServiceProcess) -> str:
    return service.env["MOVIEREC_SERVE_WORKER_CLASS"]


def request_bytes(user: int) -> bytes:
    return f"GET /recommend/{user} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()


def hold_and_queue(host: str, port: int, users: list[int],
                   wait_s: float) -> tuple[socket.socket, list[socket.socket]]:
    """Hold the only worker with ``users[0]``'s request, its headers unfinished (the
    worker takes it and blocks reading), queue one complete request per other user
    behind it, wait ``wait_s``, then finish the first: the worker answers it and then
    meets the queued ones, each ``wait_s`` old. Returns the holder and the queued sockets
    (the caller reads and closes them)."""
    holder = socket.create_connection((host, port), timeout=10)
    queued: list[socket.socket] = []
    try:
        holder.sendall(request_bytes(users[0])[:-2])
        time.sleep(0.2)
        for user in users[1:]:
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(request_bytes(user))
            queued.append(sock)
        time.sleep(wait_s)
        holder.sendall(b"\r\n")
    except BaseException:
        for sock in (holder, *queued):
            sock.close()
        raise
    return holder, queued


def read_response(sock: socket.socket) -> tuple[int, str, dict[str, str]]:
    """One answer, then the connection closed at once: a sync worker waits for the
    client's close after answering (``gunicorn.util.close_graceful``)."""
    with sock:
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read().decode(), dict(response.headers)


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))
            out[key] = out.get(key, 0.0) + s.value
    return out


def test_requests_that_queued_past_the_limit_are_shed_with_the_popular_list(one_worker):
    service, staged = one_worker
    host, port = "127.0.0.1", service.port
    before = metrics(service.url)
    users = staged.known_users[:QUEUED + 1]
    holder, queued = hold_and_queue(host, port, users, WAIT_S)
    try:
        first = read_response(holder)
        answers = [read_response(sock) for sock in queued]
    finally:
        for sock in (holder, *queued):
            sock.close()
    after = metrics(service.url)

    status, body, headers = first  # taken at once when complete: the full path
    assert status == 200 and ANSWER.match(body)
    assert "X-Fallback" not in headers and headers["X-Answer-Path"] == "model"

    assert all(status == 200 for status, _, _ in answers)
    shed = [(body, headers) for _, body, headers in answers if headers.get("X-Fallback") == "shed"]
    assert len(shed) == QUEUED  # every one waited four times the limit
    bodies = {body for body, _ in shed}
    assert len(bodies) == 1 and ANSWER.match(bodies.pop()) is not None  # the same list for all
    assert all(h["X-Answer-Path"] == "popular" for _, h in shed)
    if one_worker_class(service) == "sync":  # shed at accept, before gunicorn parsed them
        assert all("Server" not in h and h["Connection"] == "close" for _, h in shed)
        assert headers.get("Server", "").startswith("gunicorn")  # the full path: gunicorn's

    world = World.build(WorldSpec(seed=SPEC.seed, n_users=SPEC.users, n_movies=SPEC.movies,
                                  describe_share=SPEC.describe_share))
    unsafe = {m for m, adult, rating in zip(world.catalog.ids, world.catalog.adult,
                                            world.catalog.content_rating, strict=True)
              if adult or rating >= RATED_R}
    assert not set(shed[0][0].split(",")) & unsafe  # minor-safe: nobody's age was read

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("movierec_serve_fallbacks_total|reason=shed") == QUEUED
    assert delta("movierec_serve_queue_seconds_count") >= QUEUED + 1
    assert delta("movierec_serve_queue_seconds_sum") >= QUEUED * (WAIT_S - 0.05)
    assert delta("movierec_serve_queue_seconds_bucket|le=0.2") <= delta(
        "movierec_serve_queue_seconds_count") - QUEUED
    assert delta("movierec_serve_queue_age_unreadable_total") == 0


def test_without_a_queue_nothing_is_shed(one_worker):
    service, staged = one_worker
    for user in staged.known_users[:20]:
        with urllib.request.urlopen(f"{service.url}/recommend/{user}", timeout=5) as r:
            assert r.status == 200 and "X-Fallback" not in r.headers


def test_requests_queued_past_the_refuse_limit_are_reset_at_once_by_sync_workers(one_worker):
    """Held 1.5 s, past REFUSE_MS: a sync worker resets each queued connection unread (the
    client sees the reset at once, no late answer); gthread has no accept-time check and
    sheds them instead."""
    service, staged = one_worker
    host, port = "127.0.0.1", service.port
    before = metrics(service.url)
    users = staged.known_users[:QUEUED + 1]
    holder, queued = hold_and_queue(host, port, users, REFUSE_MS / 1000 + 0.5)
    outcomes: list[str] = []
    try:
        assert read_response(holder)[0] == 200
        for sock in queued:
            try:
                status, _, headers = read_response(sock)
                outcomes.append(headers.get("X-Fallback") or str(status))
            except (ConnectionResetError, http.client.RemoteDisconnected):
                outcomes.append("reset")
    finally:
        for sock in (holder, *queued):
            sock.close()
    refused = metrics(service.url).get("movierec_serve_refused_total", 0.0) - before.get(
        "movierec_serve_refused_total", 0.0)
    if one_worker_class(service) == "sync":
        assert outcomes == ["reset"] * QUEUED and refused == QUEUED
    else:
        assert outcomes == ["shed"] * QUEUED and refused == 0


def test_a_plain_request_is_answered_at_accept_like_the_ordinary_path(one_worker):
    """The sync worker answers a plain GET /recommend/<id> itself (no gunicorn ``Server``
    header: its HTTP layer never ran); one with a query string takes gunicorn's path. Both
    carry the same headers and count in the same request metrics. gthread workers answer
    both through gunicorn."""
    service, staged = one_worker
    user = staged.known_users[0]
    before = metrics(service.url)
    answers = []
    for target in (f"/recommend/{user}", f"/recommend/{user}?from=test"):
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
        try:
            conn.request("GET", target)
            response = conn.getresponse()
            answers.append((response.status, response.read().decode(), dict(response.headers)))
        finally:
            conn.close()
    after = metrics(service.url)
    (plain_status, plain_body, plain), (other_status, other_body, other) = answers
    assert plain_status == other_status == 200
    assert plain_body == other_body and ANSWER.match(plain_body)  # the same user, unchanged
    ours = {"X-Request-Id", "X-Arm", "X-Model-Version", "X-Answer-Path", "Content-Type",
            "Content-Length", "Date"}
    assert ours <= set(plain) and ours <= set(other)
    assert plain["X-Request-Id"] != other["X-Request-Id"]
    assert plain["X-Answer-Path"] == other["X-Answer-Path"] == "model"
    assert other.get("Server", "").startswith("gunicorn")
    if one_worker_class(service) == "sync":
        assert "Server" not in plain and plain["Connection"] == "close"
    else:
        assert plain.get("Server", "").startswith("gunicorn")
    key = "movierec_serve_requests_total|endpoint=recommend|status=200"
    assert after[key] - before.get(key, 0.0) == 2
    key = "movierec_serve_response_seconds_count|endpoint=recommend"
    assert after[key] - before.get(key, 0.0) == 2
