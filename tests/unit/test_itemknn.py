"""Item-kNN's similarity comes from who watched what, not from the confidences."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.models.base import ModelError, TrainSet
from recommender.models.itemknn import ItemKNNRecommender


def trainset(values: np.ndarray, pattern: sp.csr_matrix) -> TrainSet:
    matrix = sp.csr_matrix((values.astype(np.float32), pattern.indices, pattern.indptr),
                           shape=pattern.shape)
    return TrainSet(matrix, np.arange(matrix.shape[0], dtype=np.int64),
                    np.array([f"m+{i}+2000" for i in range(matrix.shape[1])], dtype=object),
                    np.zeros(matrix.nnz), datetime(2025, 3, 1))


@pytest.fixture
def pattern() -> sp.csr_matrix:
    rng = np.random.default_rng(5)
    return sp.csr_matrix(rng.random((400, 60)) < 0.08)


@pytest.mark.parametrize("kind", ["cosine", "bm25"])
def test_binary_input_makes_the_similarity_independent_of_the_confidences(pattern, kind) -> None:
    """Recency and watched fractions change the confidences, not who co-watched what:
    the binary similarity is the same under any positive confidences; fed confidences,
    it is not."""
    rng = np.random.default_rng(6)
    ones, skewed = np.ones(pattern.nnz), rng.uniform(0.05, 1.75, pattern.nnz)
    sims = {}
    for source in ("binary", "confidence"):
        for name, values in (("ones", ones), ("skewed", skewed)):
            model = ItemKNNRecommender(kind=kind, k=20, similarity_input=source, num_threads=1)
            model.fit(trainset(values, pattern))
            sims[source, name] = model.similarity.toarray()
    np.testing.assert_allclose(sims["binary", "skewed"], sims["binary", "ones"], rtol=1e-6)
    np.testing.assert_allclose(sims["confidence", "ones"], sims["binary", "ones"], rtol=1e-6)
    assert not np.allclose(sims["confidence", "skewed"], sims["binary", "skewed"])


def test_the_history_still_weighs_by_confidence(pattern) -> None:
    """At scoring time the user's confidences weigh the neighbours: the same items with
    other weights can give another order."""
    model = ItemKNNRecommender(k=20, num_threads=1)
    model.fit(trainset(np.ones(pattern.nnz), pattern))
    from recommender.models.base import History

    items = np.array([1, 2, 3], dtype=np.int64)
    lists = {tuple(model.recommend(History(items, np.array(w, np.float32)), 10).tolist())
             for w in ([1.0, 1.0, 1.0], [1.7, 0.05, 0.05], [0.05, 0.05, 1.7])}
    assert len(lists) > 1


def test_an_unknown_input_is_refused() -> None:
    with pytest.raises(ModelError, match="similarity_input"):
        ItemKNNRecommender(similarity_input="tf-idf")
