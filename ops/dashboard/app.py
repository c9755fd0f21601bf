"""The dashboard's Flask app: ``/`` the page (``?range=1h&refresh=30s``), ``/provenance``
(``?request_id=...``) the lookup of one served list, ``/health``.

Built by ``create_app(settings)``: one Prometheus client and one HTTP client per process,
made at the first request (after gunicorn forks), each call bounded by
``MOVIEREC_DASHBOARD_TIMEOUT_S``. Nothing a source does makes a 500: a panel says why it
has no data instead.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
from flask import Flask, Response, request

from ops.dashboard import render, sources
from ops.dashboard.page import gather, view_for
from ops.dashboard.prom import Prometheus
from ops.dashboard.settings import DashboardSettings

log = logging.getLogger(__name__)


class _Clients:
    """The process's HTTP clients, made on first use (httpx clients are thread-safe)."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pair: tuple[Prometheus, httpx.Client] | None = None

    def get(self) -> tuple[Prometheus, httpx.Client]:
        with self._lock:
            if self._pair is None:
                timeout = self.settings.dashboard_timeout_s
                self._pair = (Prometheus(self.settings.prometheus_url, timeout_s=timeout),
                              httpx.Client(timeout=timeout))
            return self._pair


def create_app(settings: DashboardSettings) -> Flask:
    app = Flask("movierec-dashboard")
    clients = _Clients(settings)

    @app.get("/")
    def index() -> Response:
        began = time.perf_counter()
        view = view_for(request.args.get("range"), request.args.get("refresh"), settings)
        prom, client = clients.get()
        panels = gather(view, settings, prom, client)
        html = render.page_html(panels, view, elapsed_s=time.perf_counter() - began)
        log.debug("page %s built in %.0f ms", view.range_key, (time.perf_counter() - began) * 1000)
        return Response(html, mimetype="text/html")

    @app.get("/provenance")
    def provenance() -> Response:
        request_id = request.args.get("request_id", "")
        found, error = None, None
        try:
            found = sources.provenance(clients.get()[1], settings.serve_url, request_id)
        except sources.SourceError as exc:
            error = str(exc)
        return Response(render.provenance_html(found, error, request_id), mimetype="text/html",
                        status=200 if found else 404)

    @app.get("/health")
    def health() -> Response:
        return Response("ok\n", mimetype="text/plain")

    return app
