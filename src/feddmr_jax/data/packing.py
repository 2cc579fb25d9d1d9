"""Pack ragged per-client data into fixed-shape padded arrays with masks.

Fixed shapes let the engine ``vmap`` over clients: rows are left-aligned,
padded with ``pad_value`` and carry a boolean mask (True = real entry). Clients
are bucketed by length so that each chunk's padding stays small.
"""

from __future__ import annotations

import numpy as np

from feddmr_jax.data.types import TrainCSR


def pad_ragged(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray,
               width: int | None = None, pad_value=0) -> tuple[np.ndarray, np.ndarray]:
    """Gathers CSR rows into a padded matrix.

    Args:
      indptr: ``[N + 1]`` CSR row pointers.
      values: ``[nnz]`` CSR values.
      rows: ``[R]`` row ids to gather, in output order.
      width: output width; default the longest selected row. A longer row keeps
        its LAST ``width`` entries (e.g. the most recent ones).
      pad_value: value of padding entries.

    Returns:
      ``(padded [R, width] of values.dtype, mask [R, width] bool)``; entries
      are left-aligned in their original order.
    """
    rows = np.asarray(rows, dtype=np.int64)
    lengths = indptr[rows + 1] - indptr[rows]
    if width is None:
        width = int(lengths.max()) if rows.size else 0
    take = np.minimum(lengths, width)
    start = indptr[rows + 1] - take
    col = np.arange(width)
    mask = col[None, :] < take[:, None]
    src = np.where(mask, start[:, None] + col[None, :], 0)
    padded = values[src] if values.size else np.zeros(src.shape, dtype=values.dtype)
    padded = np.where(mask, padded, np.asarray(pad_value, dtype=values.dtype))
    return padded, mask


def recent_history(csr: TrainCSR, history_len: int,
                   rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The most recent ``history_len`` training positives of each user.

    Args:
      csr: chronological training positives (:func:`splits.train_csr`).
      history_len: number of items kept per user (0 gives ``[R, 0]``).
      rows: users to gather, in order; None = all users.

    Returns:
      ``(items [R, history_len] int32, mask [R, history_len] bool)``, oldest
      first, left-aligned, padded with 0.
    """
    rows = np.arange(csr.num_users) if rows is None else rows
    items, mask = pad_ragged(csr.indptr, csr.items, rows, width=history_len, pad_value=0)
    return items.astype(np.int32), mask


def bucket_clients(lengths: np.ndarray, chunk_size: int) -> list[np.ndarray]:
    """Groups clients of similar length into chunks.

    Args:
      lengths: ``[N]`` per-client lengths (e.g. number of training positives).
      chunk_size: clients per chunk (the last chunk may be smaller).

    Returns:
      Chunks of client ids (int64): all ids sorted by length descending, ties
      by ascending id, cut into consecutive pieces of ``chunk_size``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + chunk_size] for i in range(0, len(order), chunk_size)]
