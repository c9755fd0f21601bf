"""The Flask app: routes, the admin token, and the one place errors become answers.

``create_app(settings, *, services)`` takes every adapter from outside (``Services``), so
unit tests pass fakes and integration tests and ``wsgi.create_from_env`` pass real ones.
Every answer is plain text except the JSON of /provenance, /admin and /openapi.json;
``ServingError`` subclasses become short plain-text answers in ``_on_error``; /recommend
never answers a 5xx (``handler.RecommendHandler`` degrades instead).

A /recommend request with a valid id is answered by ``recommend_route.RecommendRoute``,
Flask's ``wsgi_app`` middleware, ahead of the dispatch (its docstring says why); the view
below answers the rest (an id that is not one) by the same rule. Each /recommend
request's queue age (how long it waited before a worker took it) is read from the kernel
(``recommend_route.queue_age``), observed in ``movierec_serve_queue_seconds``, and handed
to the handler, which sheds past ``MOVIEREC_SERVE_SHED_MS``. Other endpoints skip it.

Before anything else a /recommend request passes the per-address rate limit
(``client_limit``, per worker, in memory): a client over it is answered 429 with
``Retry-After`` and a short text, at once. The walk guard (a crawler's walk over the user
ids) is the handler's, because its answer is a list.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from recommender.serving.answer_cache import AnswerCache
from recommender.serving.client_limit import ClientLimiter, in_networks, parse_address
from recommender.serving.experiments import Experiment, ExperimentStore
from recommender.serving.handler import (
    FALLBACK_REASONS,
    Features,
    Models,
    RecommendHandler,
    Sink,
)
from recommender.serving.recommend_route import QUEUE_S, RecommendRoute
from recommender.serving.serving_metrics import ServingMetrics, exposition_registry
from recommender.serving.settings import ServeSettings
from recommender.serving.state import (
    BadRequest,
    FeaturesUnavailable,
    ModelUnavailable,
    ServingError,
)
from recommender.serving.walks import WalkGuard

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
RECOMMEND_PREFIX = "/recommend/"


class Forbidden(ServingError):
    """An admin call while admin is disabled (no token configured): 403."""


class Unauthorized(ServingError):
    """An admin call without the right token: 401 with a Bearer challenge (RFC 6750)."""


class StoppableModels(Models, Protocol):
    """``Models`` that ``wsgi.shutdown`` stops when a worker exits (``ModelWatcher``)."""

    def stop(self, timeout: float = 5.0) -> object: ...


class ClosableSink(Sink, Protocol):
    """A ``Sink`` that ``wsgi.shutdown`` flushes and closes (``telemetry.Lanes``)."""

    def close(self, timeout: float = 5.0) -> None: ...


@dataclass
class Services:
    """The adapters the app talks to (real ones in production, fakes in unit tests).

    - ``features``: ``OnlineFeatures``-like (read, popular, ping)
    - ``models``: ``ModelWatcher``-like (current, wake, stop)
    - ``telemetry``: ``Telemetry``-like (submit, close)
    - ``provenance``: ``ProvenanceLookup``-like (get, by_user)
    - ``experiments``: the ``ExperimentStore`` the watcher reads
    - ``model_meta``: version -> the registry's meta.json of that version
    - ``walks``: the walk guard (``walks.WalkGuard`` on ``stores.redis_walks``), or None
      for none (``MOVIEREC_SERVE_WALK_MIN_RUN=0``, and unit tests that do not need one)
    """

    features: Features
    models: StoppableModels
    telemetry: ClosableSink
    provenance: Any
    experiments: ExperimentStore
    model_meta: Callable[[str], dict]
    walks: WalkGuard | None = None


def _text(body: str, status: int = 200, **headers: str) -> Response:
    return Response(body, status, headers or None, content_type=TEXT)


def _json(obj: object, status: int = 200) -> Response:
    return Response(json.dumps(obj, sort_keys=True), status, content_type=JSON)


def openapi_spec() -> dict:
    """The OpenAPI description shipped with the package (``openapi.json``)."""
    return json.loads(resources.files(__package__).joinpath("openapi.json").read_text("utf-8"))


def create_app(settings: ServeSettings, *, services: Services,
               metrics: ServingMetrics | None = None) -> Flask:
    app = Flask(__name__)
    metrics = metrics or ServingMetrics.create()
    handler = RecommendHandler(
        features=services.features, models=services.models, telemetry=services.telemetry,
        metrics=metrics, list_size=settings.serve_list_size,
        budget_s=settings.serve_budget_ms / 1000.0, max_user_id=settings.serve_max_user_id,
        shed_s=settings.serve_shed_ms / 1000.0, walks=services.walks,
        cache=(AnswerCache(settings.serve_answer_cache_users, settings.serve_answer_cache_ttl_s)
               if settings.serve_answer_cache_users else None))
    limiter = client_limiter(settings)
    route = RecommendRoute(handler, metrics, limiter, settings.networks("proxies"), app.wsgi_app,
                           refuse_s=settings.serve_refuse_ms / 1000.0,
                           at_accept=settings.serve_answer_at_accept)
    app.wsgi_app = route  # type: ignore[method-assign]  # Flask's middleware slot
    app.extensions["movierec"] = {"services": services, "metrics": metrics, "handler": handler,
                                  "limiter": limiter, "route": route}
    for reason in FALLBACK_REASONS:  # every reason shows on dashboards from the start, at 0
        metrics.fallbacks.labels(reason)

    def admin() -> None:
        token = settings.serve_admin_token
        if not token:
            raise Forbidden("admin endpoints are disabled (set MOVIEREC_SERVE_ADMIN_TOKEN)")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("missing or wrong admin token")

    metrics_from, private_from = settings.networks("metrics"), settings.networks("private")

    def _client_in(networks: tuple) -> bool:
        return in_networks(parse_address(request.remote_addr or ""), networks)

    def _has_token() -> bool:
        token = settings.serve_admin_token
        given = request.headers.get("Authorization", "")
        return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def private(networks: tuple, variable: str) -> None:
        """Only clients of ``networks`` or holders of the admin token (docs/security.md);
        the client is the TCP peer, never a header a client could forge."""
        if not (_client_in(networks) or _has_token()):
            raise Unauthorized(f"{request.path} answers clients of {variable} or the admin "
                               f"token only")

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.get("/recommend/<path:raw>")
    @app.get("/recommend", defaults={"raw": ""}, strict_slashes=False)  # and "/recommend/"
    def recommend(raw: str) -> Response:
        """What ``route`` passes on (an id that is not one: 400; HEAD), answered by the
        same rule."""
        answer = route.limited(request.environ)
        if answer is None:
            answer = route.recommend_answer(handler.parse(raw), request.environ, g.started)
        status, headers, body = answer
        return _text(body, status, **dict(headers))

    @app.get("/health")
    def health() -> Response:
        return _text("ok")

    @app.get("/ready")
    def ready() -> Response:
        current = services.models.current()
        if current.default_version is None:
            return _text("not ready: no model loaded", 503)
        redis_state = "ok" if services.features.ping() else "down (answers degrade)"
        return _text(f"ready: serving {current.default_version}; redis {redis_state}")

    @app.get("/metrics", endpoint="metrics")
    def prometheus() -> Response:
        private(metrics_from, "MOVIEREC_SERVE_METRICS_NETWORKS")
        return Response(generate_latest(exposition_registry(metrics)), content_type=CONTENT_TYPE_LATEST)

    @app.get("/provenance/<request_id>")
    def provenance(request_id: str) -> Response:
        record = services.provenance.get(request_id)
        if record is None:
            return _text(f"no served record {request_id}", 404)
        return _json(_explain(record, services.model_meta))

    @app.get("/provenance")
    def provenance_by_user() -> Response:
        private(private_from, "MOVIEREC_SERVE_PRIVATE_NETWORKS")
        user = handler.parse(request.args.get("user", ""))
        at_ms = _time_ms(request.args.get("at"))
        record = services.provenance.by_user(user, at_ms)
        if record is None:
            return _text(f"nothing served to user {user} at or before {at_ms}", 404)
        return _json(_explain(record, services.model_meta))

    @app.get("/admin/experiment")
    def experiment_show() -> Response:
        admin()
        generation, experiment = services.experiments.read()
        return _json({"generation": generation,
                      "experiment": experiment.to_dict() if experiment else None})

    @app.put("/admin/experiment")
    def experiment_set() -> Response:
        admin()
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "experiment" not in body:
            raise BadRequest('send JSON {"experiment": {...} or null, "reason": "..."}')
        reason = body.get("reason", "admin")
        if not isinstance(reason, str):
            raise BadRequest('"reason" must be a string')
        spec = body["experiment"]
        experiment = None if spec is None else Experiment.from_dict(spec)
        generation = services.experiments.write(experiment, reason=reason)
        services.models.wake()  # the watcher loads the arms' models on its own thread
        return _json({"generation": generation,
                      "experiment": experiment.to_dict() if experiment else None})

    @app.post("/admin/reload")
    def reload() -> Response:
        """Ask this worker's watcher to poll now (202): loading a model takes a while and
        must not hold a request thread; the answer shows what serves at this moment."""
        admin()
        services.models.wake()
        current = services.models.current()
        return _json({"requested": True, "default_version": current.default_version,
                      "arms": dict(current.arm_versions)}, 202)

    @app.get("/openapi.json")
    def openapi() -> Response:
        return _json(openapi_spec())

    @app.errorhandler(Exception)
    def _on_error(exc: Exception) -> Response:
        if isinstance(exc, BadRequest):
            return _text(str(exc), 400)
        if isinstance(exc, Forbidden):
            return _text(str(exc), 403)
        if isinstance(exc, Unauthorized):
            return _text(str(exc), 401, **{"WWW-Authenticate": 'Bearer realm="movierec admin"'})
        if isinstance(exc, (FeaturesUnavailable, ModelUnavailable)):
            return _text(f"unavailable: {exc}", 503)
        if isinstance(exc, ServingError):
            return _text(str(exc), 500)
        if isinstance(exc, HTTPException):
            if exc.code == 404 and request.path.startswith(RECOMMEND_PREFIX):
                # /recommend/<a segment the router cannot take: control characters>: the
                # same 400 as any other id that is not one (core.parse_user_id)
                return _text("user id must be a non-negative integer", 400)
            answer = _text(f"{exc.code} {exc.name}", exc.code or 500)
            # the exception's own headers, e.g. 405's Allow (RFC 9110 sec. 15.5.6 requires it)
            for name, value in exc.get_headers():
                if name.lower() != "content-type":
                    answer.headers[name] = value
            return answer
        app.logger.exception("unhandled error on %s", request.path)
        return _text("internal error", 500)

    @app.after_request
    def _count(response: Response) -> Response:
        endpoint = request.endpoint or "unmatched"
        elapsed = time.perf_counter() - g.started
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(elapsed)
        if endpoint == "recommend":  # what the route counts for the answers it gives itself
            metrics.response.labels(endpoint).observe(elapsed + request.environ.get(QUEUE_S, 0.0))
        return response

    return app


def client_limiter(settings: ServeSettings) -> ClientLimiter | None:
    """This worker's share of the per-address rate limit (``client_limit``), None when
    ``MOVIEREC_SERVE_CLIENT_RATE_PER_S`` is 0."""
    if not settings.serve_client_rate_per_s:
        return None
    # a worker's threads share its buckets: only the processes divide the rate
    return ClientLimiter.per_worker(settings.serve_client_rate_per_s, settings.serve_client_burst,
                                    settings.serve_workers, exempt=settings.networks("exempt"))


def _time_ms(text: str | None) -> int:
    """``at`` of /provenance: epoch milliseconds or ISO-8601 (UTC when zone-less); now if
    missing."""
    if text is None:
        return int(time.time() * 1000)
    if text.isascii() and text.isdigit() and len(text) <= 15:
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest("at must be epoch milliseconds or an ISO-8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _explain(record: Any, model_meta: Callable[[str], dict]) -> dict:
    """A served record joined with the registry's provenance of the model that made it."""
    out: dict = {"served": json.loads(record.to_json())}
    if record.model_version:
        try:
            meta = model_meta(record.model_version)
        except Exception as exc:  # the record stays useful even if the version was deleted
            out["model"] = {"version": record.model_version, "error": str(exc)}
        else:
            out["model"] = {
                "version": record.model_version,
                "name": meta.get("name"),
                "created": meta.get("created"),
                "code": meta.get("code"),
                "packages": meta.get("packages"),
                "hyperparameters": meta.get("hyperparameters"),
                "data": meta.get("data"),
                "training": meta.get("training"),
                "metrics": meta.get("metrics"),
                "gate": meta.get("gate"),
            }
    return out
