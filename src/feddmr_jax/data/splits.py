"""Per-user train/validation/test splits and their CSR views.

Both schemes order each user's interactions chronologically by (timestamp, item
id, row order) -- item id and row order only break ties, deterministically --
and are computed with one sort and vectorized counts (no per-user loop).

- ``loo`` (leave one out): latest = test, second latest = validation, rest = train.
- ``ratio``: per user ``n_test = n_val = max(1, floor(0.1 * n + 0.5))`` (10 %,
  rounded half up, at least one) of the latest interactions, test the latest,
  validation just before it, train the rest (>= 1 since n >= 3).

Users with fewer than 3 interactions cannot be split and are dropped (logged
with ``logging.warning`` and counted in ``Split.dropped_users``); the kept users
are renumbered 0..U-1 in the order of their previous ids. Items keep their ids.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from feddmr_jax.data.types import COLUMNS, Interactions, Split, TrainCSR
from feddmr_jax.errors import DataError

logger = logging.getLogger(__name__)

SCHEMES = ("loo", "ratio")
MIN_INTERACTIONS = 3


def _frame(cols: dict[str, np.ndarray], sel: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({c: cols[c][sel] for c in COLUMNS})


def split_interactions(inter: Interactions, scheme: str = "loo") -> Split:
    """Splits every user's interactions into train / validation / test by time.

    Args:
      inter: the tidy interactions.
      scheme: ``"loo"`` or ``"ratio"`` (see the module docstring).

    Returns:
      The :class:`Split`; each part sorted by (user, timestamp, item).

    Raises:
      DataError: unknown scheme, or no user has enough interactions.
    """
    if scheme not in SCHEMES:
        raise DataError(f"unknown split scheme '{scheme}'; known schemes: {', '.join(SCHEMES)}")
    t = inter.table
    user = t["user"].to_numpy()
    item = t["item"].to_numpy()
    ts = t["timestamp"].to_numpy()
    order = np.lexsort((np.arange(len(t)), item, ts, user))
    user, item, ts = user[order], item[order], ts[order]
    rating = t["rating"].to_numpy()[order]
    counts = np.bincount(user, minlength=inter.num_users)
    kept = counts >= MIN_INTERACTIONS
    dropped = int(np.count_nonzero(~kept))
    if dropped:
        logger.warning("%s: dropped %d of %d users with fewer than %d interactions",
                       inter.name, dropped, inter.num_users, MIN_INTERACTIONS)
    if not kept.any():
        raise DataError(f"{inter.name}: no user has at least {MIN_INTERACTIONS} interactions "
                        "to split into train, validation and test")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n = counts[user]
    from_end = n - 1 - (np.arange(len(user)) - starts[user])  # 0 = latest
    if scheme == "loo":
        n_test = np.ones_like(n)
        n_val = np.ones_like(n)
    else:
        n_test = np.maximum(1, np.floor(0.1 * n + 0.5)).astype(n.dtype)
        n_val = n_test
    is_test = from_end < n_test
    is_val = ~is_test & (from_end < n_test + n_val)
    row_kept = kept[user]
    new_id = (np.cumsum(kept) - 1).astype(np.int32)
    cols = {"user": new_id[user], "item": item.astype(np.int32),
            "timestamp": ts.astype(np.int64), "rating": rating.astype(np.float32)}
    return Split(
        scheme=scheme,
        train=_frame(cols, row_kept & ~is_test & ~is_val),
        val=_frame(cols, row_kept & is_val),
        test=_frame(cols, row_kept & is_test),
        num_users=int(kept.sum()), num_items=inter.num_items,
        user_ids=np.asarray(inter.user_ids)[kept], item_ids=np.asarray(inter.item_ids),
        dropped_users=dropped)


def _csr(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> TrainCSR:
    counts = np.bincount(user, minlength=num_users)
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return TrainCSR(indptr=indptr, items=item.astype(np.int32), num_items=num_items)


def train_csr(split: Split) -> TrainCSR:
    """Training positives per user, chronological (oldest first).

    Args:
      split: a split (its train part is sorted by user, timestamp, item).

    Returns:
      :class:`TrainCSR` with one row per user of the split.
    """
    t = split.train
    return _csr(t["user"].to_numpy(), t["item"].to_numpy(), split.num_users, split.num_items)


def positives_csr(split: Split) -> TrainCSR:
    """All known positives (train + val + test) per user, sorted by item id.

    Used to exclude a user's positives when sampling negatives.

    Args:
      split: a split.

    Returns:
      :class:`TrainCSR` whose rows are sorted ascending by item.
    """
    user = np.concatenate([p["user"].to_numpy() for p in (split.train, split.val, split.test)])
    item = np.concatenate([p["item"].to_numpy() for p in (split.train, split.val, split.test)])
    order = np.lexsort((item, user))
    return _csr(user[order], item[order], split.num_users, split.num_items)
