"""The serving app: ``GET /recommend/<userid>`` and the parts behind it.

Pure core (``state``, ``core``, ``experiments``, ``breaker``) and thin adapters (Redis
features, the registry watcher, Kafka/Redis telemetry) wired together by ``app.create_app``.
"""
