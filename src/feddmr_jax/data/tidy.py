"""Turn raw id/rating/time columns into one tidy :class:`Interactions` table.

Steps: drop exact duplicate (user, item) rows keeping the latest one (largest
timestamp, ties: the later line of the file), optionally keep the k-core, then
encode users and items as contiguous 0-based int32 ids in order of their
original id (the original ids are kept in ``user_ids`` / ``item_ids``).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from feddmr_jax.data.types import Interactions
from feddmr_jax.errors import DataError

logger = logging.getLogger(__name__)


def _encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (codes int64, sorted unique originals) of ``values``."""
    codes, uniques = pd.factorize(pd.Series(values), sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def dedupe_latest(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Returns the row indices to keep after removing duplicate (user, item) pairs.

    Args:
      user, item: ``[n]`` non-negative integer codes.
      timestamp: ``[n]`` int64.

    Returns:
      ``[m]`` sorted row indices: per (user, item) the row with the largest
      timestamp, ties broken by the later row.
    """
    n = len(user)
    key = user.astype(np.int64) * (int(item.max()) + 1 if n else 1) + item
    order = np.lexsort((np.arange(n), timestamp, key))
    skey = key[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = skey[1:] != skey[:-1]
    return np.sort(order[last])


def kcore_mask(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Iteratively drops rows until every remaining user and item has >= k rows.

    Args:
      user, item: ``[n]`` non-negative integer codes.
      k: the core size.

    Returns:
      ``[n]`` bool mask of the rows in the k-core.
    """
    keep = np.ones(len(user), dtype=bool)
    while True:
        uc = np.bincount(user[keep], minlength=int(user.max()) + 1 if len(user) else 0)
        ic = np.bincount(item[keep], minlength=int(item.max()) + 1 if len(item) else 0)
        new = keep & (uc[user] >= k) & (ic[item] >= k)
        if new.sum() == keep.sum():
            return new
        keep = new


def build_interactions(name: str, user: np.ndarray, item: np.ndarray,
                       rating: np.ndarray | None = None, timestamp: np.ndarray | None = None,
                       *, kcore: int | None = None, source: str = "") -> Interactions:
    """Builds the tidy table from raw columns.

    Args:
      name: dataset name.
      user, item: ``[n]`` original ids (ints or strings).
      rating: ``[n]`` numbers, default 1.0 (implicit feedback).
      timestamp: ``[n]`` ints; None: the data has no timestamps (the column
        then holds the row position in the file, 0, 1, ..., and
        ``has_timestamps`` is False, so the split orders by a seeded permutation).
      kcore: keep only the k-core (every user and item with >= kcore rows), or None.
      source: file name used in log and error messages.

    Returns:
      :class:`Interactions` with rows in file order (minus removed rows).
    """
    n = len(user)
    if n == 0:
        raise DataError(f"{source or name}: no interactions")
    has_timestamps = timestamp is not None
    rating = np.ones(n, np.float32) if rating is None else np.asarray(rating, np.float32)
    timestamp = np.arange(n, dtype=np.int64) if timestamp is None else np.asarray(timestamp, np.int64)
    u, _ = _encode(user)
    i, _ = _encode(item)
    keep = dedupe_latest(u, i, timestamp)
    dups = n - len(keep)
    if dups:
        logger.warning("%s: removed %d duplicate (user, item) rows, keeping the latest of each",
                       source or name, dups)
    user, item, rating, timestamp = user[keep], item[keep], rating[keep], timestamp[keep]
    if kcore is not None:
        if int(kcore) < 1:
            raise DataError(f"{name}: option kcore must be a positive integer, got {kcore!r}")
        mask = kcore_mask(u[keep], i[keep], int(kcore))
        if not mask.any():
            raise DataError(f"{source or name}: no interactions left after the {kcore}-core filter")
        user, item, rating, timestamp = user[mask], item[mask], rating[mask], timestamp[mask]
    u, user_ids = _encode(user)
    i, item_ids = _encode(item)
    table = pd.DataFrame({
        "user": u.astype(np.int32), "item": i.astype(np.int32),
        "timestamp": timestamp, "rating": rating})
    return Interactions(name=name, table=table, user_ids=user_ids, item_ids=item_ids,
                        duplicates_removed=int(dups), has_timestamps=has_timestamps)
