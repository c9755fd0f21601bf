"""How the real parts (Kafka, Redis, Prometheus) are fetched, configured and started."""
