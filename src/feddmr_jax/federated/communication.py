"""Communication accounting: the bytes each participant uploads and downloads.

Counted on the host from each chunk's data as the chunks pass to the device
(:class:`RoundTraffic`), from what a client of this engine actually sends; no
device work. Definitions (docs/communication.md):

**Download** (every sampled client, including those that then drop out): the
global shared params, every table and dense leaf, at their dtype (the FedAvg
broadcast). A sparse client trains on its rows only, but fetching just those
would tell the server which items it trains on (positives, negatives and
memory) before it uploads anything, and it needs the catalogue for local
evaluation; so the full broadcast is what we count. The rows it would need
are the rows it uploads (below), for anyone who wants the other figure.

**Upload** (every client that reports, including uploads the server then
rejects as non-finite), by mode:

* sparse: the dense leaves, plus for each row the client used this round
  (the distinct items of its examples and memory: exactly the ``row_mask`` of
  federated/local_table.py) its int32 id, once for all tables, and its values
  in every shared table; with sparse row decay also each table's decay factor
  (one row);
* dense (``train.sparse = false``, or a sparse run moved to whole tables):
  the dense leaves, every shared table in full, and the row-use mask (one
  bool byte per item; the server's ``row_weight``);
* secure aggregation: the masked fixed-point upload
  (:class:`~feddmr_jax.federated.secure_round.SecureUpload`), every word
  ``uint32``: tables in full, dense leaves, one row-use vector per table, the
  weight and the saturation flag. The key agreement and secret shares of the
  real protocol are not counted (``O(k)`` small messages per client).

Nothing private is counted because nothing private travels (federated/audit.py
checks it); the diagnostic scalars (the client's loss and example count,
4 bytes each) are left out in every mode.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, NamedTuple

import jax
import numpy as np

ID_BYTES = 4        # an int32 item id
WORD_BYTES = 4      # a uint32 word of a secure-aggregation upload
MASK_BYTES = 1      # a bool of the dense row-use mask
MODES = ("sparse", "dense", "secure")


class TrafficPlan(NamedTuple):
    """Byte sizes of a run's messages, fixed once from the shared params' shapes.

    Attributes:
      mode: ``"sparse"``, ``"dense"`` or ``"secure"`` (module docstring).
      dense_bytes: every shared dense leaf.
      table_bytes: every shared table in full.
      row_bytes: one item row across every shared table (values only).
      num_items: catalogue size (rows of each table).
      num_tables: shared tables.
      decay_factors: sparse row decay: each table's factor row travels too.
    """

    mode: str
    dense_bytes: int
    table_bytes: int
    row_bytes: int
    num_items: int
    num_tables: int
    decay_factors: bool = False

    def download(self) -> int:
        """Bytes one sampled client downloads: the global shared params."""
        return self.dense_bytes + self.table_bytes

    def upload(self, rows_used: np.ndarray) -> np.ndarray:
        """Bytes each client uploads, given the rows it used (``[C]``)."""
        rows_used = np.asarray(rows_used, np.int64)
        if self.mode == "secure":
            words = (self.table_bytes + self.dense_bytes) // WORD_BYTES   # float32 -> uint32
            words += self.num_tables * self.num_items + 2                 # row use, weight, flag
            return np.full(rows_used.shape, words * WORD_BYTES, np.int64)
        if self.mode == "dense":
            size = self.dense_bytes + self.table_bytes + MASK_BYTES * self.num_items
            return np.full(rows_used.shape, size, np.int64)
        ids = ID_BYTES if self.num_tables else 0
        factors = self.row_bytes if self.decay_factors else 0
        return self.dense_bytes + factors + rows_used * (ids + self.row_bytes)


def traffic_plan(shared: Any, *, sparse: bool, row_decay: bool = False,
                 secure: bool = False) -> TrafficPlan:
    """The sizes of a run's messages.

    Args:
      shared: the global shared params, or their shapes (``jax.eval_shape``):
        a :class:`~feddmr_jax.models.base.Leaves`.
      sparse: clients upload their rows (``RoundConfig.sparse``, as built).
      row_decay: the method decays every row (``RoundConfig.row_decay``).
      secure: simulated secure aggregation is on.
    """
    def nbytes(x) -> int:
        return math.prod(x.shape) * np.dtype(x.dtype).itemsize

    tables = list(shared.tables.values())
    dense = jax.tree.leaves(shared.dense)
    mode = "secure" if secure else "sparse" if sparse else "dense"
    return TrafficPlan(mode, dense_bytes=sum(map(nbytes, dense)),
                       table_bytes=sum(map(nbytes, tables)),
                       row_bytes=sum(nbytes(t) // t.shape[0] for t in tables),
                       num_items=tables[0].shape[0] if tables else 0, num_tables=len(tables),
                       decay_factors=sparse and row_decay and not secure)


def rows_used(items: np.ndarray, mask: np.ndarray, history: np.ndarray,
              history_mask: np.ndarray) -> np.ndarray:
    """``[C]`` distinct item ids among each client's real examples and memory.

    Args:
      items, mask: ``[C, N]`` a chunk's examples and their mask.
      history, history_mask: ``[C, n]`` its memory and mask.
    """
    ids = np.concatenate([np.where(mask, items, -1), np.where(history_mask, history, -1)],
                         axis=1).astype(np.int64)
    ids.sort(axis=1)
    new = np.ones(ids.shape, bool)
    new[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return np.sum(new & (ids >= 0), axis=1)


class RoundTraffic:
    """One round's byte counts, filled on the host as its chunks pass.

    Usage: ``chunks = traffic.meter(chunks, sampled)``; once the round has
    consumed them, :meth:`record` gives the round's figures.
    """

    def __init__(self, plan: TrafficPlan):
        self.plan = plan
        self.uploads: list[np.ndarray] = []
        self.sampled = 0

    def meter(self, chunks: Iterable[Any], sampled: int) -> Iterator[Any]:
        """Passes ``chunks`` through, counting each real client's upload.

        Args:
          chunks: the round's :class:`~feddmr_jax.federated.parallel.ChunkData`.
          sampled: clients sampled this round (each downloads the model).
        """
        self.sampled = int(sampled)
        for chunk in chunks:
            real = np.asarray(chunk.client_mask, bool)
            used = rows_used(np.asarray(chunk.items), np.asarray(chunk.mask),
                             np.asarray(chunk.history), np.asarray(chunk.history_mask))
            self.uploads.append(self.plan.upload(used[real]))
            yield chunk

    def record(self) -> dict[str, int | float]:
        """``upload_bytes``/``download_bytes`` (round totals) and their mean
        and max over the round's clients (uploading / sampled ones)."""
        up = np.concatenate(self.uploads) if self.uploads else np.zeros(0, np.int64)
        down = self.plan.download()
        return {"upload_bytes": int(up.sum()), "download_bytes": down * self.sampled,
                "upload_bytes_mean": float(up.mean()) if up.size else 0.0,
                "upload_bytes_max": int(up.max()) if up.size else 0,
                "download_bytes_mean": float(down) if self.sampled else 0.0,
                "download_bytes_max": down if self.sampled else 0}
