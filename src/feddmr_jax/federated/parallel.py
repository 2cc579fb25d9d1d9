"""Parallel execution of client updates: the one place the client axis appears.

A round's participants arrive in chunks (:class:`ChunkData`, client axis 0, all
clients of a chunk padded to one shape class). :func:`make_chunk_step` builds the
jitted step that, for one chunk,

1. gathers each client's private params from the stacked private store,
2. (sparse mode) builds each client's local item table: the rows it uses this
   round (positives, negatives, memory), gathered from the global tables, and
   re-indexes its examples into that table (:func:`localize`),
3. runs ``jax.vmap(client_update)`` over the chunk,
4. adds the weighted deltas to the round's accumulator (scatter-add of row
   deltas in sparse mode) and writes the new private params back.

:func:`run_chunk_sequential` is the reference: the same per-client computation,
jitted for one client and called in a Python loop (what a per-client simulation
does). Tests pin the two to each other; benchmarks time them side by side.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from feddmr_jax.federated.aggregation import (Accumulator, accumulate, client_weights,
                                              is_finite)
from feddmr_jax.federated.client import ClientData, ClientUpdate
from feddmr_jax.federated.robust import write_buffer
from feddmr_jax.models.base import Leaves
from feddmr_jax.privacy.dp import clip_stacked

Array = jax.Array


class ChunkData(NamedTuple):
    """Training data of a chunk of clients (global item ids, client axis 0).

    Attributes:
      client_ids: ``[C]`` int32 client ids (padding entries: any valid id).
      client_mask: ``[C]`` bool, False for padding clients.
      items, labels, mask: ``[C, N]`` examples (see :class:`ClientData`).
      history, history_mask: ``[C, n]`` memory.
      update_scale: ``[C]`` factor applied to the uploaded update (fault
        injection; 1 for honest clients).
      update_nan: ``[C]`` bool, upload replaced by NaN (fault injection).
      slot: ``[C]`` position of the client among the round's participants
        (robust aggregators' buffer; padding points past the end).
    """

    client_ids: Array
    client_mask: Array
    items: Array
    labels: Array
    mask: Array
    history: Array
    history_mask: Array
    update_scale: Array
    update_nan: Array
    slot: Array


class ClientOutput(NamedTuple):
    """One client's contribution (unbatched; stacked along axis 0 in a chunk)."""

    delta: Leaves
    private: Leaves
    loss: Array
    num_examples: Array
    rows: Array
    row_mask: Array


def local_rows(num_examples: int, history_len: int, num_items: int) -> int:
    """Local table size L for a shape class: every distinct id fits, plus a pad slot."""
    return min(num_items, num_examples + history_len) + 1


def localize(items: Array, mask: Array, history: Array, history_mask: Array,
             num_items: int, num_rows: int):
    """Maps one client's global item ids to rows of its local table.

    Returns:
      ``(rows [L], row_mask [L], local_items [N], local_history [n])``: global
      id of each local row (padding rows point at row 0, masked), and the
      examples and memory re-indexed into the local table.
    """
    ids = jnp.concatenate([jnp.where(mask, items, num_items),
                           jnp.where(history_mask, history, num_items)])
    uniq, inverse = jnp.unique(ids, size=num_rows, fill_value=num_items,
                               return_inverse=True)
    inverse = inverse.reshape(-1)
    row_mask = uniq < num_items
    n = items.shape[0]
    return jnp.where(row_mask, uniq, 0), row_mask, inverse[:n], inverse[n:]


def make_client_fn(client_update: ClientUpdate, *, sparse: bool, num_items: int):
    """Per-client computation ``(global_shared, private, row, key) -> ClientOutput``."""

    def client_fn(global_shared: Leaves, private: Leaves, row: ChunkData,
                  key: Array) -> ClientOutput:
        if sparse:
            num_rows = local_rows(row.items.shape[0], row.history.shape[0], num_items)
            rows, row_mask, items, history = localize(
                row.items, row.mask, row.history, row.history_mask, num_items, num_rows)
            start = Leaves({k: t[rows] for k, t in global_shared.tables.items()},
                           global_shared.dense)
        else:
            # Full tables; the rows the client used are those it can change.
            rows = jnp.arange(num_items)
            row_mask = (jnp.zeros(num_items, bool)
                        .at[row.items].max(row.mask)
                        .at[row.history].max(row.history_mask))
            items, history, start = row.items, row.history, global_shared
        data = ClientData(items, row.labels, row.mask, history, row.history_mask)
        result = client_update(start, private, data, key)
        delta = jax.tree.map(jnp.subtract, result.shared, start)
        return ClientOutput(delta, result.private, result.loss, result.num_examples,
                            rows, row_mask)

    return client_fn


def _client_keys(round_key: Array, client_ids: Array) -> Array:
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(round_key, client_ids)


def _inject_faults(delta: Leaves, scale: Array, nan: Array) -> Leaves:
    def corrupt(x):
        shape = (-1,) + (1,) * (x.ndim - 1)
        return jnp.where(nan.reshape(shape), jnp.nan, x * scale.reshape(shape))

    return jax.tree.map(corrupt, delta)


def _absorb(private_store: Leaves, acc: Accumulator, out: ClientOutput,
            chunk: ChunkData, weighting: str, clip_norm: float | None):
    """Adds stacked client outputs to the accumulator and the private store."""
    client_ids, client_mask = chunk.client_ids, chunk.client_mask
    delta = _inject_faults(out.delta, chunk.update_scale, chunk.update_nan)
    finite = is_finite(delta) & is_finite(out.private)
    if clip_norm is not None:
        delta = clip_stacked(delta, clip_norm)[0]
    weights = client_weights(out.num_examples, client_mask, weighting)
    acc = accumulate(acc, delta, weights, finite, client_mask, out.rows, out.row_mask)
    if acc.buffer is not None:
        acc = acc._replace(buffer=write_buffer(acc.buffer, delta, chunk.slot,
                                               client_mask & finite, out.rows, out.row_mask))
    num_clients = jax.tree.leaves(private_store)[0].shape[0]
    # Padding clients and rejected updates scatter out of bounds: dropped.
    target = jnp.where(client_mask & finite, client_ids, num_clients)
    private_store = jax.tree.map(lambda s, p: s.at[target].set(p, mode="drop"),
                                 private_store, out.private)
    loss_sum = jnp.sum(jnp.where(client_mask & finite, out.loss, 0.0))
    return private_store, acc, loss_sum


def make_chunk_step(client_update: ClientUpdate, *, sparse: bool, num_items: int,
                    weighting: str = "uniform", clip_norm: float | None = None):
    """Jitted ``(global_shared, private_store, acc, chunk, round_key) -> (store, acc, loss_sum)``.

    ``private_store`` and ``acc`` are donated.
    """
    client_fn = make_client_fn(client_update, sparse=sparse, num_items=num_items)

    def chunk_step(global_shared: Leaves, private_store: Leaves, acc: Accumulator,
                   chunk: ChunkData, round_key: Array):
        private = jax.tree.map(lambda s: s[chunk.client_ids], private_store)
        out = jax.vmap(client_fn, in_axes=(None, 0, 0, 0))(
            global_shared, private, chunk, _client_keys(round_key, chunk.client_ids))
        return _absorb(private_store, acc, out, chunk, weighting, clip_norm)

    return jax.jit(chunk_step, donate_argnums=(1, 2))


def make_sequential_step(client_update: ClientUpdate, *, sparse: bool, num_items: int,
                         weighting: str = "uniform", clip_norm: float | None = None):
    """The per-client loop over the same client computation (reference and baseline).

    Returns ``run(global_shared, private_store, acc, chunk, round_key)`` with the
    same signature and results as :func:`make_chunk_step`, but one jitted call
    per client.
    """
    client_fn = jax.jit(make_client_fn(client_update, sparse=sparse, num_items=num_items))

    @jax.jit
    def absorb_one(private_store, acc, out, row):
        out, chunk = jax.tree.map(lambda x: x[None], (out, row))
        return _absorb(private_store, acc, out, chunk, weighting, clip_norm)

    def run(global_shared, private_store, acc, chunk: ChunkData, round_key):
        keys = _client_keys(round_key, chunk.client_ids)
        loss_sum = jnp.zeros((), jnp.float32)
        real = np.asarray(chunk.client_mask)
        for c in range(chunk.client_ids.shape[0]):
            if not real[c]:
                continue                       # padding: a per-client loop has none
            row = jax.tree.map(lambda x: x[c], chunk)
            private = jax.tree.map(lambda s: s[row.client_ids], private_store)
            out = client_fn(global_shared, private, row, keys[c])
            private_store, acc, loss = absorb_one(private_store, acc, out, row)
            loss_sum = loss_sum + loss
        return private_store, acc, loss_sum

    return run
