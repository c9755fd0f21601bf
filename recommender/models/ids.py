"""Positions of ids in an ascending id array: how user ids find their rows (training
matrix, profiles, test truth) without building a dict of a million entries."""

from __future__ import annotations

import numpy as np


def positions(sorted_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """int64, one per ``wanted`` id: its index in the ascending, unique ``sorted_ids``,
    -1 where absent. O(len(wanted) log len(sorted_ids)), by binary search."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == wanted, pos, -1).astype(np.int64)
