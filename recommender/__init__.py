"""Serving, models, datasets and the model registry (grows with the models and serving issues)."""
