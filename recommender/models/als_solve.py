"""The ALS alternation, driving ``implicit``'s native conjugate-gradient solver one
half-iteration at a time, so the user and the item sides can take different numbers of
CG steps.

``implicit.cpu.als.AlternatingLeastSquares.fit`` runs the same loop with one
``cg_steps`` for both sides (implicit 0.7.3, ``cpu/als.py``: random factors times 0.01,
users first, then per iteration ``least_squares_cg(Cui, X, Y)`` and
``least_squares_cg(Ciu, Y, X)``). With equal steps this function reproduces it exactly
(a unit test compares the factors). Why split the steps: at full scale the item side
dominates the time. Each item's CG step walks its users' factors, a 256 MB table (1M x
64 float32) read in random order, so it is bound by cache misses (item side 8.5 s, user
side 4.1 s per iteration at 3 steps, 34M interactions, docs/models.md). Each half-
iteration warm-starts from the previous factors, and Takács, Pilászy & Tikk (2011),
"Applications of the conjugate gradient method for implicit feedback collaborative
filtering", RecSys, report that one to two warm-started steps are enough.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.utils import check_random_state

from recommender.models.implicit_private import private


def alternate(cui: sp.csr_matrix, *, factors: int, iterations: int, regularization: float,
              user_cg_steps: int, item_cg_steps: int, num_threads: int = 0,
              random_state: int | None = 0,
              item_init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit user (float32, n_users x factors) and item (float32, n_items x factors)
    factors to the confidences ``cui`` (float32 CSR, users x items; zero entries are
    c = 1, p = 0, as in implicit). ``num_threads`` 0: all cores.

    ``item_init`` (float32, n_items x factors) warm-starts the fit from known item factors
    (``ALSRecommender.warm_from``) instead of random ones; the first half-iteration then
    solves every user against them, so fewer iterations reach the cold fit's quality."""
    cui = sp.csr_matrix(cui, dtype=np.float32)
    solve = private("least_squares_cg")
    if solve is None and item_init is None:  # an implicit we did not check: its public fit
        return _public_fit(cui, factors=factors, iterations=iterations,
                           regularization=regularization, cg_steps=user_cg_steps,
                           num_threads=num_threads, random_state=random_state)
    if solve is None:
        raise RuntimeError("warm-started ALS needs implicit's least_squares_cg "
                           "(recommender/models/implicit_private.py)")
    ciu = cui.T.tocsr()
    rng = check_random_state(random_state)
    users, items = cui.shape
    user_factors = rng.random((users, factors), dtype=np.float32) * 0.01
    item_factors = rng.random((items, factors), dtype=np.float32) * 0.01
    if item_init is not None:
        if item_init.shape != (items, factors):
            raise ValueError(f"item_init {item_init.shape} does not match {(items, factors)}")
        item_factors = np.array(item_init, dtype=np.float32, order="C")
    for _ in range(iterations):
        solve(cui, user_factors, item_factors, regularization,
              num_threads=num_threads, cg_steps=user_cg_steps)
        solve(ciu, item_factors, user_factors, regularization,
              num_threads=num_threads, cg_steps=item_cg_steps)
    return user_factors, item_factors


def _public_fit(cui: sp.csr_matrix, *, factors: int, iterations: int, regularization: float,
                cg_steps: int, num_threads: int,
                random_state: int | None) -> tuple[np.ndarray, np.ndarray]:
    """implicit's own ``AlternatingLeastSquares.fit`` (alpha 1: ``cui`` holds the
    confidences already), the same loop as ``alternate`` with equal steps."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit warns (an error in tests) otherwise
        model = AlternatingLeastSquares(factors=factors, regularization=regularization,
                                        alpha=1.0, iterations=iterations, use_cg=True,
                                        calculate_training_loss=False, num_threads=num_threads,
                                        random_state=random_state)
        model.cg_steps = cg_steps  # an attribute, not a constructor argument, in 0.7
        model.fit(cui, show_progress=False)
    return model.user_factors, model.item_factors
