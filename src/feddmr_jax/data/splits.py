"""Per-user train/validation/test splits and their CSR views.

Both schemes order each user's interactions chronologically and are computed
with one sort and vectorized counts (no per-user loop). Equal timestamps are
common (44 % of ml-100k users have several ratings at their latest one), so
the order among them is a protocol choice, ``tie_break``:

- ``row`` (default): among equal timestamps the later row of the file is the
  later interaction (the loaders keep file row order);
- ``random``: the rows are permuted by ``seed`` before a stable time sort.

Item ids never break ties: that would hold out the highest item id among tied
ratings, which on MovieLens is a less popular film (docs/protocol.md).
Interactions without timestamps (``Interactions.has_timestamps`` False, e.g.
Last.fm 2K, whose file is sorted by artist id) are ordered by a seeded random
permutation whatever ``tie_break`` says, so the held-out items are seeded
random interactions, not the file's last rows.

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
TIE_BREAKS = ("row", "random")
UNTIMED = "untimed"
MIN_INTERACTIONS = 3


def _frame(cols: dict[str, np.ndarray], sel: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({c: cols[c][sel] for c in COLUMNS}, copy=False)  # own the new arrays


def chronological_order(user: np.ndarray, timestamp: np.ndarray, *, tie_break: str = "row",
                        seed: int = 0, has_timestamps: bool = True) -> np.ndarray:
    """Row indices sorted by user, then time, equal times by ``tie_break``.

    Args:
      user: ``[n]`` user ids.
      timestamp: ``[n]`` timestamps (ignored when ``has_timestamps`` is False).
      tie_break: ``"row"`` (row order) or ``"random"`` (a permutation seeded by ``seed``).
      seed: seed of the permutation (``random``, or data without timestamps).
      has_timestamps: False: order every user's rows by the seeded permutation.

    Returns:
      ``[n]`` int64 row indices.
    """
    if tie_break not in TIE_BREAKS:
        raise DataError(f"unknown tie_break {tie_break!r}; known: {', '.join(TIE_BREAKS)}")
    n = len(user)
    # lexsort is stable: rows equal in (user, time) keep their order in ``perm``.
    if tie_break == "row" and has_timestamps:
        return np.lexsort((timestamp, user))
    perm = np.random.default_rng(seed).permutation(n)
    if not has_timestamps:
        return perm[np.argsort(user[perm], kind="stable")]
    return perm[np.lexsort((timestamp[perm], user[perm]))]


def split_interactions(inter: Interactions, scheme: str = "loo", *, tie_break: str = "row",
                       seed: int = 0) -> Split:
    """Splits every user's interactions into train / validation / test by time.

    Args:
      inter: the tidy interactions (rows in file order).
      scheme: ``"loo"`` or ``"ratio"`` (see the module docstring).
      tie_break: ``"row"`` or ``"random"`` (see the module docstring).
      seed: seed of the ``random`` tie-break and of the order of data without timestamps.

    Returns:
      The :class:`Split`; each part in chronological order (user, time, tie-break).

    Raises:
      DataError: unknown scheme or tie-break, or no user has enough interactions.
    """
    if scheme not in SCHEMES:
        raise DataError(f"unknown split scheme '{scheme}'; known schemes: {', '.join(SCHEMES)}")
    t = inter.table
    order = chronological_order(t["user"].to_numpy(), t["timestamp"].to_numpy(),
                                tie_break=tie_break, seed=seed,
                                has_timestamps=inter.has_timestamps)
    # Columns in chronological order, one array alive per column (10^6 users: the
    # split's transient memory is a few columns, not a dozen).
    user = t["user"].to_numpy()[order]
    item = t["item"].to_numpy()[order].astype(np.int32, copy=False)
    ts = (t["timestamp"].to_numpy()[order].astype(np.int64, copy=False)
          if inter.has_timestamps else np.arange(len(order), dtype=np.int64))  # drawn order
    rating = t["rating"].to_numpy()[order].astype(np.float32, copy=False)
    del order
    counts = np.bincount(user, minlength=inter.num_users)
    kept = counts >= MIN_INTERACTIONS
    dropped = int(np.count_nonzero(~kept))
    if dropped:
        logger.warning("%s: dropped %d of %d users with fewer than %d interactions",
                       inter.name, dropped, inter.num_users, MIN_INTERACTIONS)
    if not kept.any():
        raise DataError(f"{inter.name}: no user has at least {MIN_INTERACTIONS} interactions "
                        "to split into train, validation and test")
    index = np.int32 if len(user) < 2**31 else np.int64
    ends = np.cumsum(counts).astype(index)
    from_end = ends[user] - 1 - np.arange(len(user), dtype=index)  # 0 = latest
    del ends
    if scheme == "loo":
        is_test = from_end < 1
        is_val = from_end == 1
    else:
        n_test = np.maximum(1, np.floor(0.1 * counts + 0.5)).astype(index)[user]
        is_test = from_end < n_test
        is_val = ~is_test & (from_end < 2 * n_test)
        del n_test
    del from_end
    row_kept = kept[user]
    if dropped:
        user = (np.cumsum(kept) - 1).astype(np.int32)[user]
    cols = {"user": user.astype(np.int32, copy=False), "item": item, "timestamp": ts,
            "rating": rating}
    return Split(
        scheme=scheme,
        train=_frame(cols, row_kept & ~is_test & ~is_val),
        val=_frame(cols, row_kept & is_val),
        test=_frame(cols, row_kept & is_test),
        num_users=int(kept.sum()), num_items=inter.num_items,
        user_ids=np.asarray(inter.user_ids)[kept], item_ids=np.asarray(inter.item_ids),
        dropped_users=dropped, tie_break=tie_break if inter.has_timestamps else UNTIMED)


def _csr(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> TrainCSR:
    counts = np.bincount(user, minlength=num_users)
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return TrainCSR(indptr=indptr, items=item.astype(np.int32), num_items=num_items)


def train_csr(split: Split) -> TrainCSR:
    """Training positives per user, chronological (oldest first).

    Args:
      split: a split (its train part is in chronological order).

    Returns:
      :class:`TrainCSR` with one row per user of the split.
    """
    t = split.train
    return _csr(t["user"].to_numpy(), t["item"].to_numpy(), split.num_users, split.num_items)


def positives_csr(split: Split, parts: tuple[str, ...] = ("train", "val", "test")) -> TrainCSR:
    """Known positives per user, sorted by item id.

    Used to exclude a user's positives when sampling negatives.

    Args:
      split: a split.
      parts: the parts whose positives count (default all: train, val, test).

    Returns:
      :class:`TrainCSR` whose rows are sorted ascending by item.
    """
    frames = [getattr(split, p) for p in parts]
    user = np.concatenate([p["user"].to_numpy() for p in frames])
    item = np.concatenate([p["item"].to_numpy() for p in frames])
    order = np.lexsort((item, user))
    return _csr(user[order], item[order], split.num_users, split.num_items)
