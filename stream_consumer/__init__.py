"""Kafka consumption, validation, online features in Redis and the event store."""
