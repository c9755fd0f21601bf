"""From a request to a query: what every candidate does with one user at serving time.

- ``pseudo_history``: a cold-start user's liked titles turned into a ``History``, so the
  history-based scorers (ALS fold-in, item-item sums) serve them unchanged.
- ``never_recommend``: the items no answer may contain (issue #5 item 4): the history,
  the caller's ``exclude``, and the profile's liked and disliked titles. Liked titles are
  banned too: a liked title may be unseen *on this site*, but the user already knows it,
  so recommending it wastes a slot.
- ``hu_confidence`` / ``fold_in``: the exact ALS user solve of Hu, Koren & Volinsky (2008),
  used by the ALS model both to train (through ``implicit``) and to serve new histories.
- ``batch_inputs`` / ``take``: the checks every candidate makes on the inputs of its batch
  path and on the arrays handed to ``restore``, with the same ``ModelError`` messages.

Pure functions over numpy arrays; no state.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommender.models.base import History, ModelError, banned_items
from recommender.models.profiles import Profile


def pseudo_history(items: tuple[int, ...] | np.ndarray, weight: float) -> History:
    """A ``History`` of ``items`` (unique, order kept), each with confidence ``weight``
    (in the units of the training matrix)."""
    arr = np.asarray(items, dtype=np.int64)
    _, first = np.unique(arr, return_index=True)
    unique = arr[np.sort(first)].astype(np.int32)
    return History(unique, np.full(len(unique), weight, dtype=np.float32))


def never_recommend(history: History, exclude: np.ndarray | None,
                    profile: Profile | None) -> np.ndarray:
    """History items, ``exclude`` and the profile's liked and disliked items (int64)."""
    banned = banned_items(history, exclude)
    if profile is None or not (profile.liked or profile.disliked):
        return banned
    return np.concatenate([banned, np.asarray(profile.liked, dtype=np.int64),
                           np.asarray(profile.disliked, dtype=np.int64)])


def hu_confidence(weights: np.ndarray, alpha: float) -> np.ndarray:
    """Hu et al. (2008) eq. (2): c = 1 + alpha * r for an observed r > 0 (float32)."""
    return (1.0 + alpha * np.asarray(weights, dtype=np.float32)).astype(np.float32)


def gram(item_factors: np.ndarray) -> np.ndarray:
    """Y^T Y (float64, factors x factors), the part of every user's system shared by all."""
    y = np.asarray(item_factors, dtype=np.float64)
    return y.T @ y


def fold_in(item_factors: np.ndarray, yty: np.ndarray, history: History, *,
            alpha: float, regularization: float) -> np.ndarray:
    """The least-squares user vector for ``history`` given fixed item factors.

    Hu, Koren & Volinsky (2008), eq. (4):
    x_u = (Y^T Y + Y^T (C_u - I) Y + lambda I)^-1 Y^T C_u p(u),
    with p_ui = 1 and C_ui = 1 + alpha * w_ui on the history items, C_ui = 1 and p_ui = 0
    elsewhere, so only the history rows of Y enter beyond the precomputed ``yty``
    (``gram(item_factors)``). Repeated items have their weights summed first.

    ``item_factors`` (n_items, f) float32; returns float32 (f,). Cost: O(len(history) f^2
    + f^3), independent of the catalog size.
    """
    items, inverse = np.unique(np.asarray(history.items, dtype=np.int64), return_inverse=True)
    weights = np.bincount(inverse, weights=np.asarray(history.weights, dtype=np.float64),
                          minlength=len(items))
    y = np.asarray(item_factors[items], dtype=np.float64)
    extra = alpha * weights                        # C_u - I on the history items
    a = yty + y.T @ (y * extra[:, None])
    a[np.diag_indices_from(a)] += regularization
    b = y.T @ (1.0 + extra)                        # Y^T C_u p(u)
    return np.linalg.solve(a, b).astype(np.float32)


# -- inputs of the batch path and of restore ------------------------------------------------


def batch_inputs(rows: np.ndarray, seen: sp.csr_matrix | None, kept: sp.csr_matrix | None,
                 n_users: int | None, n_items: int, model: str) -> tuple[np.ndarray, sp.csr_matrix]:
    """Checked ``rows`` (int64) and the users x items matrix whose rows hold what each
    training user has seen: ``seen`` when given, else the matrix kept from ``fit``.

    ``n_users`` is the model's own user count when it has one (None otherwise). A loaded
    model keeps no training matrix, so its batch path needs ``seen``: ``ModelError`` then.
    """
    matrix = seen if seen is not None else kept
    if matrix is None:
        raise ModelError(f"{model}: recommend_batch after load needs seen= (the training "
                         "matrix), which is not saved with the model")
    if not isinstance(matrix, sp.csr_matrix):
        matrix = sp.csr_matrix(matrix)
    if matrix.shape[1] != n_items or (n_users is not None and matrix.shape[0] != n_users):
        raise ModelError(f"{model}: seen has shape {matrix.shape}, the model has "
                         f"{n_users if n_users is not None else 'any'} users x {n_items} items")
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if len(rows) and (rows.min() < 0 or rows.max() >= matrix.shape[0]):
        raise ModelError(f"{model}: rows must lie in [0, {matrix.shape[0]})")
    return rows, matrix


def take(arrays: dict[str, np.ndarray], key: str, shape: tuple[int | None, ...],
         model: str) -> np.ndarray:
    """``arrays[key]``, checked against ``shape`` (None = any length on that axis);
    ``ModelError`` if it is missing or has another shape (a corrupt or foreign artifact)."""
    if key not in arrays:
        raise ModelError(f"{model}: the artifact lacks array {key!r}")
    arr = arrays[key]
    if arr.ndim != len(shape) or any(want is not None and got != want
                                     for got, want in zip(arr.shape, shape, strict=True)):
        raise ModelError(f"{model}: array {key!r} has shape {arr.shape}, expected {shape}")
    return arr
