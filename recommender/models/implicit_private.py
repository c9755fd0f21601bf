"""implicit's private functions that the models call, behind one version guard.

Two of ``implicit``'s internals do work its public classes do not expose the way we need:

- ``implicit.cpu._als.least_squares_cg``: one conjugate-gradient half-iteration, so the
  user and item sides can take different numbers of steps (``als_solve``);
- ``implicit._nearest_neighbours.all_pairs_knn``: the item-item neighbours without the COO
  warning its recommender classes' ``fit`` raises (``itemknn``).

Private code may change in any release, so, as ``movierec.kafka_records`` does for
kafka-python, each is used only on a release it was checked against (``KNOWN_VERSIONS``,
with the function present and callable). On any other release the function is ``None``,
a warning says so once, and the callers take implicit's public classes instead: the same
arithmetic (its ``AlternatingLeastSquares.fit`` with one step count for both sides, its
``ItemItemRecommender.fit``), so results stay right, only the split CG steps are lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from importlib import import_module, metadata
from typing import Any

log = logging.getLogger(__name__)

KNOWN_VERSIONS = ("0.7.2", "0.7.3")
"""Releases whose private functions below were read and tested (0.7.3 in CI)."""

PRIVATE = {
    "least_squares_cg": ("implicit.cpu._als", "least_squares_cg"),
    "all_pairs_knn": ("implicit._nearest_neighbours", "all_pairs_knn"),
}
"""Name -> (module, attribute) of each private function movierec calls."""


def implicit_version() -> str:
    try:
        return metadata.version("implicit")
    except metadata.PackageNotFoundError:
        return "unknown"


@cache
def private(name: str) -> Callable[..., Any] | None:
    """implicit's private function ``name`` (a key of ``PRIVATE``) on a known release,
    else None (warned once): the caller then takes the public path."""
    module, attribute = PRIVATE[name]
    version = implicit_version()
    if version not in KNOWN_VERSIONS:
        log.warning("implicit %s is not a release movierec checked (%s): %s.%s is not used, "
                    "the public classes are (same results; ALS's item-side CG steps then equal "
                    "the user side's)", version, ", ".join(KNOWN_VERSIONS), module, attribute)
        return None
    try:
        found = getattr(import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        log.warning("implicit %s has no %s.%s (%s): the public classes are used",
                    version, module, attribute, exc)
        return None
    return found if callable(found) else None
