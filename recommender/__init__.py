"""The recommender: models and their data, the model registry, serving and training.

Its own modules (datasets from the event store, the confidence formula, runtimes, cold
start, the registry) sit above ``recommender.models``; ``recommender.serving`` and
``recommender.training`` sit above both (docs/architecture.md, the dependency rule).
"""
