"""The stacked private store: every client's private params, read and written by rows.

The store is a :class:`~feddmr_jax.models.base.Leaves` whose leaves all have the
client axis first (``[U, ...]``):

* ``dense`` leaves (user embeddings, personal heads) are read and written per
  client;
* ``tables`` leaves are item-indexed private tables ``[U, I, d]`` (FedRAP's item
  personality). In sparse mode a client reads only the rows of its local table
  (``store[u, rows]``) and writes back only the rows it used, exactly as shared
  tables are gathered and scatter-added; no ``[I, d]`` copy per client is made.
  The store itself holds ``U x I x d`` values: :func:`check_store_size` refuses
  a store above a bound instead of running out of memory halfway through.
* ``dense[EVAL_SCORES]`` (only when evaluating in ``local`` mode,
  ``train.eval_mode``): ``[U, M]`` float32, every client's logits of its ``M``
  evaluation candidates (validation then test) computed by the model it held
  right after its last local training (federated/parallel.py); before its
  first round, by the initial global model. The evaluator reads them instead
  of scoring. They are not model parameters: the engine strips them before
  local training and the model never sees them.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from feddmr_jax.errors import ConfigError
from feddmr_jax.models.base import Leaves, Model

Array = jax.Array

EVAL_SCORES = "eval_scores"


class PrivateStoreTooLarge(ConfigError):
    """The private store of every client would exceed the configured bound."""


def split_scores(private: Leaves) -> tuple[Leaves, Array | None]:
    """``(model params, stored evaluation scores or None)`` of a client's (or the store's) private half."""
    if EVAL_SCORES not in private.dense:
        return private, None
    dense = {k: v for k, v in private.dense.items() if k != EVAL_SCORES}
    return Leaves(private.tables, dense), private.dense[EVAL_SCORES]


def attach_scores(private: Leaves, scores: Array) -> Leaves:
    """``private`` with the evaluation scores added (see the module docstring)."""
    if EVAL_SCORES in private.dense:
        raise ValueError(f"private params already hold {EVAL_SCORES!r}")
    return Leaves(private.tables, {**private.dense, EVAL_SCORES: scores})


def gather_clients(store: Leaves, client_ids: Array, rows: Array | None) -> Leaves:
    """Private params of some clients.

    Args:
      store: the stacked store.
      client_ids: ``[C]`` (or a scalar) client ids.
      rows: ``[C, L]`` (or ``[L]``) global item rows to read from private
        tables; None reads whole tables.

    Returns:
      Dense leaves ``[C, ...]``; tables ``[C, L, d]`` (``[C, I, d]`` for None).
    """
    dense = jax.tree.map(lambda s: s[client_ids], store.dense)
    if rows is None:
        tables = {k: t[client_ids] for k, t in store.tables.items()}
    else:
        ids = jnp.asarray(client_ids)[..., None]
        tables = {k: t[ids, rows] for k, t in store.tables.items()}
    return Leaves(tables, dense)


def write_clients(store: Leaves, private: Leaves, target: Array, rows: Array | None,
                  row_mask: Array | None, scale: dict[str, Array] | None = None) -> Leaves:
    """Writes stacked client results into the store.

    Args:
      store: the stacked store (donated by the callers).
      private: ``[C, ...]`` new private params (tables ``[C, L, d]`` at ``rows``,
        or whole ``[C, I, d]`` when ``rows`` is None).
      target: ``[C]`` client ids; out-of-range ids (padding, rejected updates)
        are dropped.
      rows: ``[C, L]`` global rows of the private table rows, or None.
      row_mask: ``[C, L]`` rows to write (the others are dropped).
      scale: per private table, ``[C, d]`` factors by which each target
        client's whole table is multiplied before its rows are written (sparse
        row decay: the rows it did not train decay as in dense mode, see
        federated/parallel.py), or None.
    """
    dense = jax.tree.map(lambda s, p: s.at[target].set(p, mode="drop"),
                         store.dense, private.dense)
    if rows is None:
        tables = {k: t.at[target].set(private.tables[k], mode="drop")
                  for k, t in store.tables.items()}
    else:
        tables = {}
        for k, t in store.tables.items():
            if scale is not None:
                t = t.at[target].multiply(scale[k][:, None, :], mode="drop")
            cols = jnp.where(row_mask, rows, t.shape[1])        # masked rows: dropped
            tables[k] = t.at[target[:, None], cols].set(private.tables[k], mode="drop")
    return Leaves(tables, dense)


# Bytes of private params initialized per vectorized block (a block's random draws and their
# temporaries, a few times this, are what the initialization adds to the store itself).
INIT_BLOCK_BYTES = 1 << 27


def init_private_store(model: Model, key: Array, num_clients: int) -> Leaves:
    """Stacked private params, client u initialized from ``fold_in(key, u)``.

    One program filling the store in place, block by block (``INIT_BLOCK_BYTES`` of params
    per block, at least one client): the memory is the store's plus a block's temporaries,
    not a multiple of the store (FedRAP on Lastfm-2K, a 4.0 GiB store, resident memory
    sampled every 3 s: at most 4.8 GB, where one block of every client took 16.1 GB). The last
    block ends at the last client and overlaps the one before it; each client's params
    depend on its key alone, so overlapping rows are written twice with the same values
    and the store equals one ``vmap`` over every client (tested).
    """
    per_client = max(1, store_bytes(model, 1))
    block = int(min(num_clients, max(1, INIT_BLOCK_BYTES // per_client)))
    blocks = -(-num_clients // block)
    shapes = jax.eval_shape(model.init_private, key)

    def init(key):
        def fill(i, store):
            start = jnp.minimum(i * block, num_clients - block)
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
                key, start + jnp.arange(block))
            params = jax.vmap(model.init_private)(keys)
            return jax.tree.map(
                lambda s, p: jax.lax.dynamic_update_slice_in_dim(s, p, start, axis=0),
                store, params)

        empty = jax.tree.map(lambda s: jnp.zeros((num_clients, *s.shape), s.dtype), shapes)
        return jax.lax.fori_loop(0, blocks, fill, empty)

    return jax.jit(init)(key)


def store_bytes(model: Model, num_clients: int, score_columns: int = 0) -> int:
    """Bytes of the private store: ``U x`` (one client's private params + its
    ``score_columns`` float32 evaluation scores)."""
    private = jax.eval_shape(model.init_private, jax.random.key(0))
    per_client = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(private))
    return num_clients * (per_client + 4 * score_columns)


def check_store_size(model: Model, num_clients: int, score_columns: int, limit_gb: float,
                     field: str = "train.max_private_gb") -> int:
    """Raises :class:`PrivateStoreTooLarge` when the store would exceed ``limit_gb`` GiB.

    Returns:
      The store's size in bytes.
    """
    size = store_bytes(model, num_clients, score_columns)
    if size > limit_gb * 2**30:
        private: Any = jax.eval_shape(model.init_private, jax.random.key(0))
        tables = ", ".join(f"{k} {tuple(v.shape)}" for k, v in private.tables.items())
        detail = f" (per-client private tables: {tables})" if tables else ""
        raise PrivateStoreTooLarge(
            f"model {model.name!r}: the private store of {num_clients} clients would take "
            f"{size / 2**30:.1f} GiB{detail}, above {field} = {limit_gb:g} GiB; use a smaller "
            f"model.dim or dataset, or raise {field} if the machine has the memory")
    return size
