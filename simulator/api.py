"""The simulator's user and movie API: the course's read-only service on port 8080.

``GET /user/<ids>`` and ``GET /movie/<ids>`` answer as section 3 of
../shared/mlip-interface.md describes: one id gives a JSON object, up to
``sim_api_max_bulk`` comma-separated ids give a JSON list, in request order, of the
records found (unknown ids are left out; duplicates are answered again); nothing found
is 404 ``{"message": "user not found"}`` (or ``movie``). Answers are rate-limited per
client address (429 with ``Retry-After``), a share of records has dirty field types,
and faults (slow answers, 5xx) can be switched on at ``/admin/faults``; the pure parts
of that live in ``simulator.api_faults``.

Decisions:
- A user id that is not a non-negative integer (ASCII digits, at most 18) is a bad
  request, 400: user ids have a syntax, so the client, not the directory, is wrong.
  Movie ids are opaque strings: any id not in the catalog is 404.
- A comma makes a request bulk (``/user/5,`` answers a one-element list); empty items
  and spaces around ids are ignored; more than ``sim_api_max_bulk`` items is 400.
- A request costs one token, however many ids it carries, so bulk requests pay off.
- Rate limits and faults apply to the data routes only, so ``/health``, ``/metrics``
  and the switch itself keep answering during a drill.

The world behind the API is anything with ``user_record`` / ``movie_record``
(``Directory``). Nothing happens at import time; ``create_app`` builds everything,
metrics included, on a registry of its own.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.serving import make_server as _werkzeug_server
from werkzeug.wrappers import Response as WerkzeugResponse

from movierec.settings import setting
from movierec.wire import MAX_MOVIE_ID, MAX_USER_DIGITS
from simulator.api_faults import (
    MAX_FAULT_DURATION_S,
    MAX_SLOW_MS,
    FaultSwitch,
    RateLimiter,
    dirty,
    parse_faults,
    plan,
)

log = logging.getLogger(__name__)

DATA_ENDPOINTS = frozenset({"user", "movie"})
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     5.0, 10.0, 30.0)


class Directory(Protocol):
    """The world's users and movies, as the API serves them (clean records)."""

    def user_record(self, user_id: int) -> dict | None: ...  # JSON-able dict, None if unknown
    def movie_record(self, movie_id: str) -> dict | None: ...  # JSON-able dict, None if unknown


@dataclass(frozen=True)
class ApiSettings:
    """The user/movie API process."""

    sim_api_host: str = setting("127.0.0.1", "Address the user/movie API binds (0.0.0.0: all)")
    sim_api_port: int = setting(8080, "Port of the user/movie API", min=1, max=65535)
    sim_api_max_bulk: int = setting(200, "Most ids in one bulk request", min=1, max=10_000)
    sim_api_rate_per_s: float = setting(
        200.0, "Requests per second each client address may sustain (0: no limit)",
        min=0, max=1e6)
    sim_api_burst: int = setting(400, "Requests a client may send at once after a pause",
                                 min=1, max=1_000_000)
    sim_api_max_clients: int = setting(10_000, "Client addresses the rate limiter remembers",
                                       min=1, max=10_000_000)
    sim_api_dirty_rate: float = setting(
        0.05, "Share of records served with dirty field types (numbers as strings ...)",
        min=0, max=1)
    sim_api_seed: int = setting(0, "Seed of which records are dirty and of injected faults")
    sim_api_faults_token: str = setting(
        "", "Secret for /admin/faults (X-Admin-Token header); empty: loopback clients only")
    sim_api_slow_ms: int = setting(0, "Delay injected into every answer from the start, ms",
                                   min=0, max=MAX_SLOW_MS)
    sim_api_error_rate: float = setting(
        0.0, "Share of answers failed with 500/503 from the start", min=0, max=1)
    sim_api_faults_duration_s: float = setting(
        0.0, "How long the start-up faults last, seconds (0: until cleared)",
        min=0, max=MAX_FAULT_DURATION_S)


def parse_ids(text: str, kind: str, max_bulk: int) -> tuple[list[Any], bool]:
    """(ids, is_bulk) from the path part of ``/user/<text>`` or ``/movie/<text>``.

    User ids become ints, movie ids stay strings. Raises ``ValueError`` with a message
    for the client (too many ids, none, a malformed one).
    """
    parts = text.split(",", max_bulk)
    if len(parts) > max_bulk:
        raise ValueError(f"at most {max_bulk} ids per request")
    items = [p.strip() for p in parts if p.strip()]
    if not items:
        raise ValueError(f"no {kind} id given")
    if kind == "movie":
        for item in items:
            if len(item) > MAX_MOVIE_ID:
                raise ValueError(f"movie id longer than {MAX_MOVIE_ID} characters")
        return items, len(parts) > 1
    ids = []
    for item in items:
        if not (item.isascii() and item.isdigit() and len(item) <= MAX_USER_DIGITS):
            raise ValueError(f"bad user id {item[:40]!r}: expected a non-negative integer")
        ids.append(int(item))
    return ids, len(parts) > 1


def _message(status: int, text: str) -> Response:
    return Response(json.dumps({"message": text}), status, mimetype="application/json")


def _is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def create_app(directory: Directory, settings: ApiSettings, *,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep,
               registry: CollectorRegistry | None = None) -> Flask:
    """The API as a Flask app. ``clock`` (seconds) drives rate limits and fault expiry,
    ``sleep`` (seconds) makes answers slow; tests pass fakes. Metrics go to ``registry``
    (a new one by default) and are served at ``/metrics``."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the record's field order
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    registry = CollectorRegistry() if registry is None else registry
    requests = Counter("sim_api_requests", "Answers by route and status", ["route", "status"],
                       registry=registry)
    seconds = Histogram("sim_api_request_seconds", "Time to answer, seconds", ["route"],
                        buckets=LATENCY_BUCKETS_S, registry=registry)
    records = Counter("sim_api_records", "Ids looked up, by kind and outcome (clean, dirty, "
                      "missing)", ["kind", "outcome"], registry=registry)
    injected = Counter("sim_api_injected_faults", "Faults suffered by requests (slow, error)",
                       ["fault"], registry=registry)
    limiter = RateLimiter(settings.sim_api_rate_per_s, settings.sim_api_burst, clock,
                          settings.sim_api_max_clients)
    switch = FaultSwitch(clock)
    switch.set(settings.sim_api_slow_ms, settings.sim_api_error_rate,
               settings.sim_api_faults_duration_s or None)
    Gauge("sim_api_injected_delay_seconds", "Delay injected into each answer now, seconds",
          registry=registry).set_function(lambda: switch.current().slow_ms / 1000.0)
    Gauge("sim_api_injected_error_ratio", "Share of answers failed on purpose now",
          registry=registry).set_function(lambda: switch.current().error_rate)
    rng, rng_lock = random.Random(settings.sim_api_seed), threading.Lock()
    salt = str(settings.sim_api_seed)

    def lookup(kind: str, text: str) -> Response:
        try:
            ids, bulk = parse_ids(text, kind, settings.sim_api_max_bulk)
        except ValueError as exc:
            return _message(400, str(exc))
        fetch = directory.user_record if kind == "user" else directory.movie_record
        found = []
        for key in ids:
            record = fetch(key)
            if record is None:
                records.labels(kind, "missing").inc()
                continue
            served = dirty(record, f"{kind}/{key}", settings.sim_api_dirty_rate, salt=salt)
            records.labels(kind, "clean" if served is record else "dirty").inc()
            found.append(served)
        if not found:
            return _message(404, f"{kind} not found")
        return jsonify(found if bulk else found[0])

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.before_request
    def misbehave() -> Response | None:
        if request.endpoint not in DATA_ENDPOINTS:
            return None
        wait = limiter.check(request.remote_addr or "")
        if wait > 0:
            response = _message(429, "rate limit exceeded, slow down")
            response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return response
        with rng_lock:
            delay, status = plan(switch.current(), rng)
        if delay > 0:
            injected.labels("slow").inc()
            sleep(delay)
        if status is not None:
            injected.labels("error").inc()
            return _message(status, "injected fault")
        return None

    @app.after_request
    def count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        requests.labels(route, str(response.status_code)).inc()
        seconds.labels(route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> WerkzeugResponse:
        response = exc.get_response()
        response.set_data(json.dumps({"message": exc.description or exc.name}))
        response.mimetype = "application/json"
        return response

    @app.get("/user/<ids>", endpoint="user")
    def user(ids: str) -> Response:
        return lookup("user", ids)

    @app.get("/movie/<ids>", endpoint="movie")
    def movie(ids: str) -> Response:
        return lookup("movie", ids)

    @app.get("/health")
    def health() -> Response:
        return Response("ok", mimetype="text/plain")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    def denied() -> Response | None:
        token = settings.sim_api_faults_token
        if token:
            given = request.headers.get("X-Admin-Token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _message(403, "missing or wrong X-Admin-Token")
        elif not _is_loopback(request.remote_addr):
            return _message(403, "the fault switch answers loopback clients only")
        return None

    @app.route("/admin/faults", methods=["GET", "POST", "DELETE"])
    def faults() -> Response | dict:
        refusal = denied()
        if refusal is not None:
            return refusal
        if request.method == "DELETE":
            switch.clear()
        elif request.method == "POST":
            raw = request.get_data(cache=False)
            try:
                slow_ms, error_rate, duration_s = parse_faults(json.loads(raw) if raw.strip()
                                                               else {})
            except ValueError as exc:  # json.JSONDecodeError is one
                return _message(400, str(exc))
            switch.set(slow_ms, error_rate, duration_s)
        if request.method != "GET":
            log.info("API faults now %s", switch.describe())
        return switch.describe()

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request (hundreds a second); errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def make_server(directory: Directory, settings: ApiSettings, **app_options: Any
                ) -> BaseWSGIServer:
    """A bound, not yet serving, threaded WSGI server for the API (see ``serve``)."""
    app = create_app(directory, settings, **app_options)
    return _werkzeug_server(settings.sim_api_host, settings.sim_api_port, app, threaded=True,
                            request_handler=_QuietHandler)


def serve(directory: Directory, settings: ApiSettings, *,
          ready: Callable[[BaseWSGIServer], None] | None = None) -> None:
    """Serve the API until ``shutdown()`` is called on the server or Ctrl-C.

    Werkzeug's threaded server, in this process, rather than gunicorn: the directory is
    the simulator's live, growing world in memory, and the rate-limit table and the fault
    switch are state every request must share. Pre-forked gunicorn workers would each
    hold a stale copy of the world, their own buckets and their own faults (a POST would
    reach one worker). One process with a thread per connection does hundreds of
    requests a second on loopback, which is the load the course's API sees from a team.
    ``ready`` gets the bound server (tests use it to stop it).
    """
    server = make_server(directory, settings)
    log.info("user/movie API on http://%s:%d", settings.sim_api_host, server.server_port)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    finally:
        server.server_close()
