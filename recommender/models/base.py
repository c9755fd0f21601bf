"""The one interface every candidate model implements, and the data it is trained on.

Indices, not ids: a model works on row numbers of its training matrix (users) and column
numbers (items). ``TrainSet`` carries the id maps; ``item_ids`` is saved with every model,
so serving turns indices back into movie ids without the training data.

The interface (the issue's "fit; recommend for a user; recommend for a new user from a
profile; save; load"), with shapes:

- ``fit(train)``: learn from ``train.matrix`` (users x items, float32 confidence).
- ``recommend(history, n, exclude)``: top ``n`` item indices for a user given their
  current history (item indices + confidences). This is the serving path: the history
  comes from the online features at request time, so it may contain events newer than
  the model (fold-in for factor models).
- ``recommend_new(profile, n, exclude)``: cold start for a user with no history, from the
  demographic profile and the titles matched from the self-description.
- ``recommend_batch(rows, n, seen=None)``: top ``n`` for many *training* users at once
  (offline evaluation and batch scoring); already-seen items of ``train.matrix`` (or of
  ``seen``, after load) are filtered.
- ``save(directory)`` / ``load(directory)``: ``.npy`` arrays (loadable with
  ``allow_pickle=False`` and memory-mapped) plus a ``model.json`` of params.

Every method returns int32 item indices, best first, never an item in ``exclude`` or in
``history``; fewer than ``n`` only when the catalog runs out.
"""

from __future__ import annotations

import json
import mmap
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from movierec.errors import MovierecError
from recommender.models.item_meta import ItemMeta
from recommender.models.profiles import Profile, Profiles

MODEL_JSON = "model.json"


class ModelError(MovierecError):
    """A model cannot be built, trained, saved or loaded as asked (bad params, corrupt or
    incompatible artifact, untrained model)."""


@dataclass(frozen=True)
class TrainSet:
    """Training data: the implicit-feedback matrix and everything aligned with it.

    - ``matrix``: CSR float32, shape (n_users, n_items); entry = confidence (> 0) of the
      user's interest in the item; indices sorted within each row.
    - ``user_ids``: int64 (n_users,), the external user id of each row, ascending.
    - ``item_ids``: str object array (n_items,), the movie id of each column.
    - ``last_time``: float64 array aligned with ``matrix.data``: seconds between the
      interaction's latest event and ``as_of`` (>= 0), for time-decayed models.
    - ``as_of``: the cut time; no event at or after it is in this set.
    - ``profiles``: demographics of (some of) the users, by user id.
    - ``item_meta``: what the movie API says of each item (genres, vote average,
      popularity), when training had it; None otherwise.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    last_time: np.ndarray
    as_of: datetime
    profiles: Profiles = field(default_factory=Profiles.empty)
    item_meta: ItemMeta | None = None

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    def user_segments(self) -> np.ndarray:
        """Demographic segment code of every row (int16, n_users)."""
        return self.profiles.segments_of(self.user_ids)


@dataclass(frozen=True)
class History:
    """One user's history at request time: item indices and their confidences (float32,
    same length). Items unknown to the model are dropped before this is built."""

    items: np.ndarray
    weights: np.ndarray

    @classmethod
    def empty(cls) -> History:
        return cls(np.zeros(0, np.int32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.items)


class Recommender(ABC):
    """Base class of every candidate. Subclasses set ``name`` and implement the methods."""

    name: ClassVar[str] = ""
    absent_params: ClassVar[dict[str, Any]] = {}
    """Params added after versions were registered without them, with the value that
    reproduces how those versions behaved (re-evaluating a stored configuration must
    evaluate the model that was promoted, not today's default)."""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.item_ids: np.ndarray = np.zeros(0, dtype=object)
        # what the last fit decided that its params do not say (plain JSON; the registry
        # keeps it in the version's metadata under "training")
        self.fit_facts: dict[str, Any] = {}

    # -- learning -------------------------------------------------------------------------

    @abstractmethod
    def fit(self, train: TrainSet) -> None:
        """Learn from ``train``; afterwards ``item_ids`` is ``train.item_ids``."""

    # -- answering --------------------------------------------------------------------------

    @abstractmethod
    def recommend(self, history: History, n: int = 20, *,
                  exclude: np.ndarray | None = None, profile: Profile | None = None) -> np.ndarray:
        """Top ``n`` for a user with this history; an empty history means cold start
        (``recommend_new`` with ``profile``)."""

    @abstractmethod
    def recommend_new(self, profile: Profile | None, n: int = 20, *,
                      exclude: np.ndarray | None = None) -> np.ndarray:
        """Top ``n`` for a user with no history."""

    @abstractmethod
    def recommend_batch(self, rows: np.ndarray, n: int = 20, *,
                        seen: sp.csr_matrix | None = None) -> np.ndarray:
        """Top ``n`` for the training users ``rows``: int32 (len(rows), n), -1 padded,
        never an item of the user's row in ``seen`` (users x items; default: the matrix
        the model was fitted on, which is not saved, so a loaded model needs it)."""

    # -- persistence ------------------------------------------------------------------------

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The learned arrays to save (numeric dtypes only; ``item_ids`` is saved apart)."""

    @abstractmethod
    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back what ``arrays()`` returned (possibly memory-mapped, read-only)."""

    def memory_bytes(self) -> int:
        """Bytes of the learned arrays (``arrays()``): what a serving process holds per
        model, not counting Python object overhead or the item-id strings."""
        return int(sum(a.nbytes for a in self.arrays().values()))

    def save(self, directory: Path | str) -> list[Path]:
        """Write the model into ``directory`` (created); returns the files written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for key, arr in self.arrays().items():
            if arr.dtype == object:
                raise ModelError(f"{self.name}: array {key!r} has dtype object; save numbers")
            path = directory / f"{key}.npy"
            np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
            written.append(path)
        ids = directory / "item_ids.txt"
        ids.write_text("\n".join(map(str, self.item_ids)) + "\n", encoding="utf-8")
        meta = directory / MODEL_JSON
        meta.write_text(json.dumps({"name": self.name, "params": self.params,
                                    "arrays": sorted(self.arrays())}, indent=2, sort_keys=True))
        return [*written, ids, meta]

    @classmethod
    def load(cls, directory: Path | str, *, mmap: bool = True) -> Recommender:
        """Read a model written by ``save``; ``ModelError`` if it is missing or corrupt."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / MODEL_JSON).read_text())
            if cls.name and meta.get("name") != cls.name:
                raise ModelError(f"{directory} holds a {meta.get('name')!r} model, not {cls.name!r}")
            model = cls(**meta["params"])
            # np.asarray drops the memmap subclass but keeps the mapping: every slice of a
            # memmap runs Python-level __array_finalize__ (about 0.1 ms a hybrid request)
            arrays = {key: np.asarray(np.load(directory / f"{key}.npy", allow_pickle=False,
                                              mmap_mode="r" if mmap else None))
                      for key in meta["arrays"]}
            text = (directory / "item_ids.txt").read_text(encoding="utf-8")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot load a model from {directory}: {exc}") from exc
        model.item_ids = np.array(text.splitlines(), dtype=object)
        model.restore(arrays)
        return model

    # -- helpers for subclasses -------------------------------------------------------------

    def _require_fitted(self) -> None:
        if len(self.item_ids) == 0:
            raise ModelError(f"{self.name}: not trained")


def is_mapped(array: np.ndarray) -> bool:
    """True when ``array`` reads a memory-mapped file (itself or through the views it was
    taken from): what lets every serving worker share one copy of a model's arrays."""
    seen: object = array
    while isinstance(seen, np.ndarray):
        if isinstance(seen, np.memmap):
            return True
        seen = seen.base
    return isinstance(seen, mmap.mmap)


def top_n(scores: np.ndarray, n: int, banned: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``n`` highest ``scores`` (1-d), best first, skipping ``banned``
    indices and non-finite scores. Ties break toward the lower index, so results are
    deterministic. Returns int32, length <= n."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if banned is not None and len(banned):
        scores[np.asarray(banned, dtype=np.int64)] = -np.inf
    finite = np.isfinite(scores)
    k = min(n, int(finite.sum()))
    if k <= 0:
        return np.zeros(0, np.int32)
    if k < len(scores):
        # Everything at least as good as the k-th best, so a tie at the k-th place keeps all
        # its members and the lexsort below picks the lower index (argpartition would not).
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(len(scores))
    order = np.lexsort((part, -scores[part]))
    return part[order][:k].astype(np.int32)


def banned_items(history: History, exclude: np.ndarray | None) -> np.ndarray:
    """History items plus ``exclude``, as one int64 index array."""
    parts = [np.asarray(history.items, dtype=np.int64)]
    if exclude is not None:
        parts.append(np.asarray(exclude, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
