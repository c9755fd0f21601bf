"""Candidate recommenders behind one interface (``base.Recommender``).

``model_class(name)`` imports a candidate by name, so code that needs one model does not
import (and start the thread pools of) all of them.
"""

from __future__ import annotations

from importlib import import_module

from recommender.models.base import ModelError, Recommender

CANDIDATES: dict[str, str] = {
    "als": "recommender.models.als:ALSRecommender",
    "popularity": "recommender.models.popularity:PopularityRecommender",
    "itemknn": "recommender.models.itemknn:ItemKNNRecommender",
    "hybrid": "recommender.models.hybrid:HybridRecommender",
}
"""Model name -> "module:Class"."""


def model_class(name: str) -> type[Recommender]:
    """The class of candidate ``name``; ``ModelError`` naming the choices if unknown."""
    try:
        module, cls = CANDIDATES[name].split(":")
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose from {sorted(CANDIDATES)}") from None
    return getattr(import_module(module), cls)
