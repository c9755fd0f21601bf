"""GET /recommend/<id> as one function of the WSGI environ, and the middleware that answers
it ahead of Flask's dispatch.

/recommend is nearly all of the service's traffic, and its answer is one short line of
text. Flask's dispatch (request context, URL matching, the Response object, the before-
and after-request hooks) cost about 0.3 ms of a worker's CPU a request in a py-spy
profile under wrk (docs/benchmarks.md), as much as the model's fold-in and scoring. So a
request whose id is valid is answered by ``RecommendRoute``, installed as Flask's
``wsgi_app`` middleware (the documented place for one: every client of the app, the
test client included, goes through it): the per-address limit, the handler, the same
headers and the same request metrics as the Flask route, without the dispatch. Anything
else (another path or method, an id that is not one: a 400 with its reason) passes to
Flask unchanged. The Flask view calls ``recommend_answer`` too, so the rule has one home.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from recommender.serving.client_limit import ClientLimiter, client_address
from recommender.serving.handler import RecommendHandler
from recommender.serving.queue_age import read_queue_age_s
from recommender.serving.serving_metrics import ServingMetrics
from recommender.serving.state import BadRequest

TEXT = "text/plain; charset=utf-8"
PREFIX = "/recommend/"
GUNICORN_SOCKET = "gunicorn.socket"
"""The WSGI environ key under which gunicorn passes the client socket
(``gunicorn.http.wsgi.default_environ``; sync and gthread workers)."""
TOO_MANY = "too many requests from this address; retry after {} s"
REASONS = {200: "200 OK", 429: "429 Too Many Requests"}
QUEUE_S = "movierec.queue_s"
"""Environ key of the request's queue age in seconds, once read (0 when unknown)."""
CHECKED = "movierec.rate_checked"
"""Environ key set once the request took its token (the view must not take another)."""

Headers = list[tuple[str, str]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]


def queue_age(environ: dict, metrics: ServingMetrics) -> float:
    """Seconds the request waited before a worker took it, observed in the queue
    histogram; 0 when unknown: no client socket (a server other than gunicorn, e.g. the
    test client) or one without ``TCP_INFO`` (counted), so nothing is shed blindly."""
    sock = environ.get(GUNICORN_SOCKET)
    if sock is None:
        return 0.0
    return observed_age(read_queue_age_s(sock), metrics)


def observed_age(age: float | None, metrics: ServingMetrics) -> float:
    """``age`` (seconds, from ``read_queue_age_s``) observed in the queue histogram, or
    0 counted as unknown when it is None."""
    if age is None:
        metrics.queue_unknown.inc()
        return 0.0
    metrics.queue.observe(age)
    return age


class RecommendRoute:
    """The answer of /recommend for a parsed user (``recommend_answer``) and the WSGI
    middleware in front of Flask (``__call__``). Shared by a worker's threads: the
    handler and the limiter are thread-safe, the rest is read-only."""

    def __init__(self, handler: RecommendHandler, metrics: ServingMetrics,
                 limiter: ClientLimiter | None, proxies: tuple, app: WSGIApp | None = None,
                 refuse_s: float = 0.0, at_accept: bool = True) -> None:
        """``refuse_s``: the queue age (seconds) from which ``accept_worker`` resets a
        connection unanswered, 0 for never; ``at_accept``: whether ``accept_worker``
        answers every plain /recommend itself (False: only those it sheds)."""
        self.handler, self.metrics, self.limiter, self.proxies = handler, metrics, limiter, proxies
        self.app, self.refuse_s, self.at_accept = app, refuse_s, at_accept
        self._latency = metrics.latency.labels("recommend")  # bound once: a lookup less
        self._response = metrics.response.labels("recommend")
        self._counted = {status: metrics.requests.labels("recommend", str(status))
                         for status in REASONS}

    def limited(self, environ: dict) -> tuple[int, Headers, str] | None:
        """The 429 (status, headers, body) when the request's address is over its limit,
        else None; taken once a request (``CHECKED`` marks the environ), before its id is
        parsed: a client sending bad ids spends its tokens too."""
        if self.limiter is None or environ.get(CHECKED):
            return None
        environ[CHECKED] = True
        forwarded = environ.get("HTTP_X_FORWARDED_FOR") if self.proxies else None
        wait_s = self.limiter.check(client_address(environ.get("REMOTE_ADDR"), forwarded,
                                                   self.proxies))
        if not wait_s:
            return None
        self.metrics.rate_limited.inc()
        return 429, [("Retry-After", str(wait_s))], TOO_MANY.format(wait_s)

    def recommend_answer(self, user: int, environ: dict, started: float) -> tuple[int, Headers, str]:
        """(status, headers, body) of /recommend for ``user``, the handler's 200.
        ``started``: ``time.perf_counter()`` when the worker took the request."""
        queue_s = environ.get(QUEUE_S)
        if queue_s is None:  # not read at accept (accept_worker sets it when it did)
            queue_s = environ[QUEUE_S] = queue_age(environ, self.metrics)
        served = self.handler.answer(user, started, queue_s)
        headers = [("X-Request-Id", served.request_id), ("X-Arm", served.arm),
                   ("X-Model-Version", served.version or "none"), ("X-Answer-Path", served.path)]
        if served.fallback:
            headers.append(("X-Fallback", served.fallback))
        return 200, headers, served.body

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if self.app is None:
            raise RuntimeError("RecommendRoute is a middleware only with the app behind it")
        if environ.get("REQUEST_METHOD") != "GET" or not path.startswith(PREFIX):
            return self.app(environ, start_response)
        started = time.perf_counter()
        answer = self.limited(environ)
        if answer is None:
            try:
                user = self.handler.parse(path[len(PREFIX):])
            except BadRequest:
                return self.app(environ, start_response)  # Flask answers the 400 with its reason
            answer = self.recommend_answer(user, environ, started)
        status, headers, text = answer
        body = text.encode()
        headers += [("Content-Type", TEXT), ("Content-Length", str(len(body)))]
        start_response(REASONS[status], headers)
        self.count(status, started, environ.get(QUEUE_S, 0.0))
        return [body]

    def count(self, status: int, started: float, queue_s: float) -> None:
        """The request metrics Flask's after-request hook keeps for its routes, and the
        response time with the queue age (``movierec_serve_response_seconds``)."""
        elapsed = time.perf_counter() - started
        self._counted[status].inc()
        self._latency.observe(elapsed)
        self._response.observe(elapsed + queue_s)
