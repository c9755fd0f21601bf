"""The two stores every part of the system shares, each with one home.

- The online store (Redis): the key layout (``stores.keys``), what a consumer batch writes
  (``stores.feature_delta``) and the one adapter that writes and reads it
  (``stores.redis_online``).
- The event store (Parquet files with Kafka offsets): ``stores.event_store``, with its
  columns (``stores.event_columns``) and manifests (``stores.event_manifest``).

The consumer writes both; training, serving, evaluation, load tests and benchmarks read
them through these modules only.
"""
