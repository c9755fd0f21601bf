"""The production wiring: real adapters from ``MOVIEREC_*`` settings, one app per worker.

gunicorn calls ``create_from_env()`` inside each worker after it forked (the app is not
preloaded), so every worker owns its Redis connections, its registry watcher thread and
its telemetry thread; model arrays are memory-mapped, so the workers share their pages.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flask import Flask

from movierec.settings import load
from recommender.confidence import ConfidenceParams
from recommender.registry import Registry
from recommender.serving.app import Services, create_app
from recommender.serving.breaker import CircuitBreaker
from recommender.serving.experiments import ExperimentStore
from recommender.serving.loaded import ServingModel
from recommender.serving.online_reads import OnlineFeatures
from recommender.serving.provenance_lookup import ProvenanceLookup
from recommender.serving.serving_metrics import ServingMetrics
from recommender.serving.settings import ServeSettings
from recommender.serving.sinks import KafkaSink, RedisProvenanceSink
from recommender.serving.telemetry import Lanes, Sink, Telemetry
from recommender.serving.walks import WalkGuard
from recommender.serving.watcher import ModelWatcher
from stores.keys import Keys
from stores.redis_online import RedisOnlineStore
from stores.redis_walks import RedisWalkStore

BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Set to 1 for the server: a threaded BLAS under busy request threads stalls (the p99 of
one scoring went from 0.19 ms to 8 ms, recommender/models/als.py)."""

BACKGROUND_TIMEOUT_S = 2.0
"""Redis timeout of the telemetry and model-loading connections (off the request path)."""
PROVENANCE_FLUSH_S = 0.05
"""Most seconds a served record waits before its provenance is written (``/provenance``)."""


def pin_blas() -> None:
    """One BLAS/OpenMP thread in this process, whether or not numpy is loaded yet."""
    for name in BLAS_VARIABLES:
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def model_loader(registry: Registry, background: RedisOnlineStore,
                 settings: ServeSettings) -> Callable[[str], ServingModel]:
    """``version -> ServingModel``, validated (load + smoke prediction); what the watcher
    calls on its own thread. Movie metadata (runtimes, content ratings) comes from the
    online store on the ``background`` connection (its timeout suits a bulk read).
    A version whose metadata cannot be read is refused, not served blind (every movie
    would count as unsafe for minors): the watcher keeps the old set and tries again
    after its retry time."""

    def load_version(version: str) -> ServingModel:
        model = ServingModel.load(registry, version,
                                  movies=background.movies, ranking=background.popular,
                                  confidence=ConfidenceParams(), rating_scale=settings.rating_scale,
                                  list_size=settings.serve_list_size)
        model.smoke_check()
        return model

    return load_version


def build_services(settings: ServeSettings, metrics: ServingMetrics) -> tuple[Services, ModelWatcher]:
    keys = Keys(settings.redis_prefix)
    breaker = CircuitBreaker(settings.serve_breaker_failures, settings.serve_breaker_reset_s,
                             on_change=lambda state: metrics.breaker_open.set(state == "open"))
    threads = settings.serve_threads if settings.serve_worker_class == "gthread" else 1
    hot = RedisOnlineStore.connect(settings.redis_url, keys,
                                   timeout_s=settings.serve_redis_timeout_ms / 1000.0,
                                   pool_size=threads + 2)
    features = OnlineFeatures(hot, breaker)
    # the walk guard shares the feature reads' client (pool, 25 ms timeout, no retries), not
    # their breaker: a failure of the guard alone must not degrade the features (walks.py)
    walks = (WalkGuard(RedisWalkStore(hot.client, keys, gap_s=settings.serve_walk_gap_s),
                       min_run=settings.serve_walk_min_run,
                       breaker=CircuitBreaker(settings.serve_breaker_failures,
                                              settings.serve_breaker_reset_s))
             if settings.serve_walk_min_run else None)
    background = RedisOnlineStore.connect(settings.redis_url, keys, timeout_s=BACKGROUND_TIMEOUT_S,
                                          provenance_ttl_s=settings.provenance_ttl_days * 86400.0)
    registry = Registry(settings.registry_dir)
    store = ExperimentStore(settings.serve_experiments_file)
    watcher = ModelWatcher(registry, store, model_loader(registry, background, settings),
                           alias=settings.serve_alias, poll_s=settings.serve_poll_s,
                           on_event=lambda kind, _version: metrics.swaps.labels(kind).inc())
    def lane(name: str, sink: Sink, flush_s: float) -> Telemetry:
        return Telemetry(sink, capacity=settings.telemetry_buffer, flush_s=flush_s,
                         on_outcome=lambda outcome, n: metrics.telemetry.labels(name, outcome).inc(n))

    # Kafka's lane waits longer: kafka-python's sender spends per batch, not per record
    # (docs/benchmarks.md); /provenance must find a request id within a moment of its answer
    telemetry = Lanes([
        lane("kafka", KafkaSink(settings.kafka_bootstrap, settings.served_topic),
             settings.telemetry_kafka_flush_ms / 1000.0),
        lane("redis", RedisProvenanceSink(background), PROVENANCE_FLUSH_S),
    ])
    services = Services(features=features, models=watcher, telemetry=telemetry,
                        provenance=ProvenanceLookup(background), experiments=store,
                        model_meta=lambda version: registry.get(version).meta, walks=walks)
    return services, watcher


def create_from_env() -> Flask:
    """The app of one gunicorn worker: settings from the environment, first model load
    done before the worker accepts requests, then the watcher polls in the background."""
    pin_blas()
    settings = load(ServeSettings)
    metrics = ServingMetrics.create()
    services, watcher = build_services(settings, metrics)
    watcher.refresh()
    watcher.start()
    return create_app(settings, services=services, metrics=metrics)


def shutdown(app: Flask, timeout_s: float = 5.0) -> None:
    """Stop a worker's background threads: the watcher, and telemetry after flushing what
    it holds, then close the feature store's connections (gunicorn's ``worker_exit`` hook
    calls this on a graceful stop)."""
    services: Services = app.extensions["movierec"]["services"]
    services.models.stop(timeout_s)
    services.telemetry.close(timeout_s)
    for sink in getattr(services.telemetry, "sinks", ()):
        if hasattr(sink, "close"):
            sink.close(timeout_s)
    if hasattr(services.features, "close"):
        services.features.close()
