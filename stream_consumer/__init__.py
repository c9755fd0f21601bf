"""The consumer: Kafka lines in, validation and dead letters, enrichment and drift; it
writes the shared stores (``stores``) and nothing reads from it."""
