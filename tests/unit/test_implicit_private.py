"""The guard on implicit's private functions: used on a checked release, replaced by the
public classes (with the same results) on any other."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.models import implicit_private
from recommender.models.als_solve import alternate
from recommender.models.implicit_private import KNOWN_VERSIONS, implicit_version, private
from recommender.models.itemknn import item_neighbours, weighted_matrix


def matrix(seed: int = 3, users: int = 300, items: int = 120) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < 0.05) * rng.random((users, items)) * 3
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.fixture
def unknown_release(monkeypatch):
    """implicit reporting a release the guard has not checked."""
    private.cache_clear()
    monkeypatch.setattr(implicit_private, "implicit_version", lambda: "9.9.9")
    yield
    private.cache_clear()


def test_the_installed_release_is_a_checked_one_and_its_private_functions_are_used() -> None:
    private.cache_clear()
    assert implicit_version() in KNOWN_VERSIONS
    assert callable(private("least_squares_cg")) and callable(private("all_pairs_knn"))


def test_an_unknown_release_falls_back_to_the_public_fit_with_the_same_factors(
        unknown_release, caplog) -> None:
    cui = matrix()
    with caplog.at_level(logging.WARNING, logger="recommender.models.implicit_private"):
        users, items = alternate(cui, factors=8, iterations=4, regularization=0.1,
                                 user_cg_steps=3, item_cg_steps=3, num_threads=1)
    assert "9.9.9 is not a release movierec checked" in caplog.text
    private.cache_clear()
    implicit_private.implicit_version = lambda: KNOWN_VERSIONS[-1]  # undone by monkeypatch
    ref_users, ref_items = alternate(cui, factors=8, iterations=4, regularization=0.1,
                                     user_cg_steps=3, item_cg_steps=3, num_threads=1)
    np.testing.assert_allclose(users, ref_users, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items, ref_items, rtol=1e-5, atol=1e-6)


def test_an_unknown_release_gets_the_same_item_neighbours_from_the_public_class(
        unknown_release) -> None:
    weighted = weighted_matrix(matrix(seed=4), "bm25", 1.2, 0.75)
    public = item_neighbours(weighted, 10, 1)
    private.cache_clear()
    implicit_private.implicit_version = lambda: KNOWN_VERSIONS[-1]
    checked = item_neighbours(weighted, 10, 1)
    assert public.shape == checked.shape == (120, 120)
    np.testing.assert_allclose(public.toarray(), checked.toarray(), rtol=1e-6)
    assert (np.diff(checked.indptr) <= 10).all() and checked.nnz > 0


def test_a_missing_private_function_is_none_not_an_error(monkeypatch) -> None:
    private.cache_clear()
    monkeypatch.setitem(implicit_private.PRIVATE, "least_squares_cg",
                        ("implicit.cpu._als", "no_such_function"))
    try:
        assert private("least_squares_cg") is None
    finally:
        private.cache_clear()
