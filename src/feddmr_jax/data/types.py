"""Typed containers that flow from the data pipeline into the engine.

Pipeline: ``load_dataset`` -> :class:`Interactions` -> ``split`` -> :class:`Split`
-> ``build_eval_set`` -> :class:`EvalSet`; the training positives of a split are
also viewed as CSR (:class:`TrainCSR`) for vectorized packing and negative sampling.

All ids are internal, contiguous, 0-based ``int32``; the original ids are kept in
``user_ids`` / ``item_ids`` (index = internal id).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

COLUMNS = ("user", "item", "timestamp", "rating")


def id_text(value: object) -> str:
    """An original id as messages write it: ``'alice'``, ``42`` (not ``np.int64(42)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


@dataclasses.dataclass(frozen=True)
class Interactions:
    """One tidy interaction table.

    Attributes:
      name: dataset name (``ml-100k``, ``synthetic``, ...).
      table: DataFrame with columns ``user`` (int32), ``item`` (int32),
        ``timestamp`` (int64), ``rating`` (float32); one row per (user, item)
        after de-duplication.
      user_ids: ``[num_users]`` original user id of each internal user id.
      item_ids: ``[num_items]`` original item id of each internal item id.
      duplicates_removed: rows dropped as exact (user, item) duplicates.
      has_timestamps: False when the file has no timestamps (Last.fm 2K): the
        ``timestamp`` column then holds the row position and the split holds
        out seeded random interactions instead of the file's last rows.
    """

    name: str
    table: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    duplicates_removed: int = 0
    has_timestamps: bool = True

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


@dataclasses.dataclass(frozen=True)
class Split:
    """A per-user train/validation/test split.

    Users that could not be split are dropped and the remaining users are
    renumbered 0..num_users-1 (``user_ids`` maps back). Items keep their ids
    (``num_items`` is the full catalogue).

    Attributes:
      scheme: ``"loo"`` or ``"ratio"``.
      train, val, test: DataFrames with the columns of :data:`COLUMNS`, each
        in the split's chronological order: by user, then time, equal times in
        the order of ``tie_break``.
      num_users, num_items: sizes of the id spaces.
      user_ids, item_ids: original ids.
      dropped_users: how many users were dropped because they could not be split.
      tie_break: the order used among equal timestamps: ``"row"`` (file row
        order), ``"random"`` (seeded), or ``"untimed"`` (no timestamps: every
        user's interactions in a seeded random order; ``timestamp`` is then
        the position in that order).
    """

    scheme: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    num_users: int
    num_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    dropped_users: int = 0
    tie_break: str = "row"


@dataclasses.dataclass(frozen=True)
class TrainCSR:
    """Training positives of every user in compressed-row form.

    Attributes:
      indptr: ``[num_users + 1]`` int64; user u owns ``items[indptr[u]:indptr[u+1]]``.
      items: ``[nnz]`` int32 item ids, per user in chronological order (oldest first).
      num_items: catalogue size.
    """

    indptr: np.ndarray
    items: np.ndarray
    num_items: int

    @property
    def num_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr).astype(np.int32)

    def lengths_of(self, rows: np.ndarray) -> np.ndarray:
        """``[R]`` int64 lengths of ``rows`` (work ~ R, not the number of users)."""
        rows = np.asarray(rows, np.int64)
        return self.indptr[rows + 1] - self.indptr[rows]


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Candidates to score for every user (sampled or full ranking).

    Attributes:
      candidates: ``[num_users, C]`` int32 item ids.
      labels: ``[num_users, C]`` bool, True for held-out positives.
      mask: ``[num_users, C]`` bool, True for real candidates (False = padding or
        an item excluded from ranking, e.g. a training positive in full ranking).
    """

    candidates: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
