"""Parallel execution of client updates: the one place the client axis appears.

A round's participants arrive in chunks (:class:`ChunkData`, client axis 0, all
clients of a chunk padded to one shape class). :func:`make_chunk_step` builds the
jitted step that, for one chunk,

1. (sparse mode) builds each client's local item table: the rows it uses this
   round (positives, negatives, memory), gathered from the global tables, and
   re-indexes its examples into that table (federated/local_table.py;
   in ``local`` evaluation mode, the candidates' rows are looked up there or
   appended for scoring),
2. gathers each client's private params from the stacked private store
   (private item tables: only the local rows; federated/private_store.py),
3. runs ``jax.vmap(client_update)`` over the chunk; in ``local`` evaluation
   mode each client then scores its validation and test candidates with the
   params it just trained (:func:`make_local_client_fn`),
4. adds the weighted deltas to the round's accumulator (scatter-add of row
   deltas in sparse mode) and writes the new private params (and private
   table rows, and the new evaluation scores) back.

:func:`make_sequential_step` is the reference: the same per-client computation,
jitted for one client and called in a Python loop (what a per-client simulation
does). Tests pin the two to each other; benchmarks time them side by side.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from feddmr_jax.federated.aggregation import (Accumulator, accumulate, client_weights,
                                              is_finite)
from feddmr_jax.federated.client import ClientData, ClientUpdate
from feddmr_jax.federated.local_table import LocalRows, local_rows, local_view, localize
from feddmr_jax.federated.private_store import (attach_scores, gather_clients, split_scores,
                                                write_clients)
from feddmr_jax.federated.robust import write_buffer
from feddmr_jax.models.base import ApplyFn, Context, Leaves, ModelParams
from feddmr_jax.privacy.dp import clip_stacked
from feddmr_jax.federated.secure_round import masked_accumulate

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
      eval_items: ``[C, M]`` the client's evaluation candidates (validation then
        test), in ``local`` evaluation mode: their rows join the local table
        and the client scores them after training (stored in the private
        store, federated/private_store.py). None: off.
      round_index: ``[C]`` the round (1-based), for per-round local steps.
        None reads as 0.
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
    eval_items: Array | None = None
    round_index: Array | None = None


class ClientOutput(NamedTuple):
    """One client's contribution (unbatched; stacked along axis 0 in a chunk)."""

    delta: Leaves
    private: Leaves
    loss: Array
    num_examples: Array
    rows: Array
    row_mask: Array
    shared_factor: dict[str, Array] | None = None


def _with_probe(leaves: Leaves) -> Leaves:
    """``leaves`` with the last row of every table set to ones (the probe row)."""
    return Leaves({k: t.at[-1].set(1.0) for k, t in leaves.tables.items()}, leaves.dense)


def _append_rows(leaves: Leaves, extra: dict[str, Array]) -> Leaves:
    """``leaves`` with ``extra[k]`` appended below table ``k``."""
    return Leaves({k: jnp.concatenate([t, extra[k]]) for k, t in leaves.tables.items()},
                  leaves.dense)


def make_local_client_fn(client_update: ClientUpdate, *, sparse: bool,
                         score_fn: ApplyFn | None = None, row_decay: bool = False):
    """Per-client computation on a localized client:
    ``(global_shared, private, row, local, key) -> ClientOutput``.

    ``row_decay`` (sparse mode): the local optimizer moves every table row,
    used or not, e.g. by weight decay. A row no example reaches then evolves
    as ``row -> row * f`` for a per-client, per-column factor ``f`` (weight
    decay: ``f = prod_t (1 - lr_t * wd)`` over the client's steps; also with a
    proximal term). The client measures ``f`` on a probe row: the local
    table's last row, always padding, set to ones before training (the loss
    gives padding rows no gradient: every term is masked). It uploads
    ``f`` per shared table (``shared_factor``) and, instead of the shared
    rows' deltas, their excess over that decay, ``new - start * f``: the
    server adds ``C * mean_u (f_u - 1)`` to every row
    (federated/aggregation.py). The private tables' factors stay in the
    private output (its probe row, ``private.tables[k][-1]``), by which the
    store scales the client's whole private tables (federated/private_store.py);
    both then equal the dense mode.

    ``private`` holds the client's private params with private tables already
    at ``local.table_rows()`` (sparse) or whole (dense), as
    :func:`~feddmr_jax.federated.private_store.gather_clients` reads them.
    When it also holds evaluation scores (``local`` evaluation mode), they
    are replaced by ``score_fn``'s logits of ``local.eval_items`` under the
    params the client has just trained (its local model, before aggregation).
    """

    def local_fn(global_shared: Leaves, private: Leaves, row: ChunkData, local: LocalRows,
                 key: Array) -> ClientOutput:
        probe = sparse and row_decay
        if sparse:
            start = Leaves({k: t[local.rows] for k, t in global_shared.tables.items()},
                           global_shared.dense)
        else:
            start = global_shared
        private, stored = split_scores(private)
        candidates = None          # private table rows of the appended candidates
        if local.eval_rows is not None and private.tables:
            table = local.rows.shape[0]
            candidates = {k: t[table:] for k, t in private.tables.items()}
            private = Leaves({k: t[:table] for k, t in private.tables.items()}, private.dense)
        if probe:
            start, private = _with_probe(start), _with_probe(private)
        round_index = 0 if row.round_index is None else row.round_index
        data = ClientData(local.items, row.labels, row.mask, local.history, row.history_mask,
                          round_index)
        result = client_update(start, private, data, key)
        delta = jax.tree.map(jnp.subtract, result.shared, start)
        shared_factor = None
        if probe:
            shared_factor = {k: t[-1] for k, t in result.shared.tables.items()}
            delta = Leaves({k: result.shared.tables[k] - t * shared_factor[k]
                            for k, t in start.tables.items()}, delta.dense)
        new_private = result.private
        if stored is not None:
            if score_fn is None or local.eval_items is None:
                raise ValueError("local evaluation needs score_fn and chunks with eval_items")
            scoring = ModelParams(result.private, result.shared)
            if local.eval_rows is not None:   # [local table ; candidates' rows]
                scoring = ModelParams(
                    _append_rows(result.private, candidates or {}),
                    _append_rows(result.shared, {k: t[local.eval_rows] for k, t
                                                 in global_shared.tables.items()}))
            scores = score_fn(scoring, local.eval_items, Context(local.history, row.history_mask))
            new_private = attach_scores(new_private, scores.astype(stored.dtype))
        return ClientOutput(delta, new_private, result.loss, result.num_examples,
                            local.rows, local.row_mask, shared_factor)

    return local_fn


def make_client_fn(client_update: ClientUpdate, *, sparse: bool, num_items: int,
                   score_fn: ApplyFn | None = None, row_decay: bool = False):
    """Per-client computation ``(global_shared, private, row, key) -> ClientOutput``.

    ``private`` is the client's whole private params (private tables ``[I, d]``);
    the output's private tables hold the local rows only (``rows``).
    ``score_fn``, ``row_decay``: see :func:`make_local_client_fn`.
    """
    local_fn = make_local_client_fn(client_update, sparse=sparse, score_fn=score_fn,
                                    row_decay=row_decay)

    def client_fn(global_shared: Leaves, private: Leaves, row: ChunkData,
                  key: Array) -> ClientOutput:
        local = local_view(row, sparse=sparse, num_items=num_items, row_decay=row_decay)
        if sparse:
            rows = local.table_rows()
            private = Leaves({k: t[rows] for k, t in private.tables.items()}, private.dense)
        return local_fn(global_shared, private, row, local, key)

    return client_fn


def _client_keys(round_key: Array, client_ids: Array) -> Array:
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(round_key, client_ids)


def _inject_faults(delta: Leaves, factor: dict[str, Array] | None, scale: Array,
                   nan: Array) -> tuple[Leaves, dict[str, Array] | None]:
    """The uploads of faulty clients: a scaled client's whole delta times its factor,
    a NaN client's upload all NaN (federated/faults.py).

    With sparse row decay a client's delta of a row is ``C[i] (f - 1) + excess[i]``
    (:func:`make_local_client_fn`); it uploads the excess and ``f``. Scaling the
    whole delta by ``s`` scales the excess and turns ``f`` into ``1 + s (f - 1)``,
    so the server's decay term (federated/aggregation.py) is scaled too: the
    same attack as in dense mode, where the decay is part of the delta. (For
    ``s = 1``, ``1 + (f - 1)`` is ``f`` exactly: ``f - 1`` is exact for ``f`` in
    ``[0.5, 2]``.)

    Args:
      delta: ``[C, ...]`` stacked deltas (excess rows in sparse row decay).
      factor: per shared table, ``[C, d]`` decay factors ``f`` (sparse row decay),
        or None.
      scale: ``[C]`` factor of each client's update (1: honest).
      nan: ``[C]`` bool, the client uploads NaN.

    Returns:
      ``(delta, factor)`` as uploaded.
    """
    def corrupt(x):
        shape = (-1,) + (1,) * (x.ndim - 1)
        return jnp.where(nan.reshape(shape), jnp.nan, x * scale.reshape(shape))

    if factor is not None:
        factor = {k: 1.0 + corrupt(f - 1.0) for k, f in factor.items()}
    return jax.tree.map(corrupt, delta), factor


def _used_rows_only(delta: Leaves, row_mask: Array) -> Leaves:
    """Zeroes table rows outside ``row_mask`` (``[C, L]``) in stacked deltas."""
    tables = {k: jnp.where(row_mask[..., None], t, 0.0) for k, t in delta.tables.items()}
    return Leaves(tables, delta.dense)


def _absorb(private_store: Leaves, acc: Accumulator, out: ClientOutput,
            chunk: ChunkData, weighting: str, clip_norm: float | None, sparse: bool = True):
    """Adds stacked client outputs to the accumulator and the private store."""
    client_ids, client_mask = chunk.client_ids, chunk.client_mask
    delta, factor = _inject_faults(out.delta, out.shared_factor, chunk.update_scale,
                                   chunk.update_nan)
    finite = is_finite(delta) & is_finite(factor) & is_finite(out.private)
    if clip_norm is not None and jax.tree.leaves(delta):   # no shared params: nothing to clip
        # The norm of what is uploaded: rows the client did not use are zero.
        delta = clip_stacked(_used_rows_only(delta, out.row_mask), clip_norm)[0]
    weights = client_weights(out.num_examples, client_mask, weighting)
    if acc.masks is None:
        acc = accumulate(acc, delta, weights, finite, client_mask, out.rows, out.row_mask,
                         factor)
    else:  # secure aggregation: masked dense uploads (federated/secure_round.py)
        acc = masked_accumulate(acc, delta, weights, finite, client_mask, client_ids,
                                out.rows, out.row_mask)
    if acc.buffer is not None:
        acc = acc._replace(buffer=write_buffer(acc.buffer, delta, chunk.slot,
                                               client_mask & finite, out.rows, out.row_mask))
    leaves = jax.tree.leaves(private_store)
    num_clients = leaves[0].shape[0] if leaves else 0   # no private params: nothing to write
    # Padding clients and rejected updates scatter out of bounds: dropped.
    target = jnp.where(client_mask & finite, client_ids, num_clients)
    # Sparse row decay: each private table's factor is its probe (last) row.
    scale = (None if out.shared_factor is None
             else {k: t[:, -1] for k, t in out.private.tables.items()})
    private_store = write_clients(private_store, out.private, target,
                                  out.rows if sparse else None, out.row_mask, scale)
    loss_sum = jnp.sum(jnp.where(client_mask & finite, out.loss, 0.0))
    return private_store, acc, loss_sum


def make_chunk_step(client_update: ClientUpdate, *, sparse: bool, num_items: int,
                    weighting: str = "uniform", clip_norm: float | None = None,
                    score_fn: ApplyFn | None = None, row_decay: bool = False,
                    compiler_options: Mapping[str, str] | None = None):
    """Jitted ``(global_shared, private_store, acc, chunk, round_key) -> (store, acc, loss_sum)``.

    ``private_store`` and ``acc`` are donated. ``score_fn`` (the model's apply)
    scores the candidates of clients in ``local`` evaluation mode.
    ``row_decay``: see :func:`local_view` and :func:`make_local_client_fn`.
    ``compiler_options``: XLA options of this program (``feddmr_jax/compiler_options.py``).
    """
    local_fn = make_local_client_fn(client_update, sparse=sparse, score_fn=score_fn,
                                    row_decay=row_decay)

    def chunk_step(global_shared: Leaves, private_store: Leaves, acc: Accumulator,
                   chunk: ChunkData, round_key: Array):
        local = jax.vmap(lambda r: local_view(r, sparse=sparse, num_items=num_items,
                                              row_decay=row_decay))(chunk)
        # Private tables: only each client's local rows are read (sparse mode).
        private = gather_clients(private_store, chunk.client_ids,
                                 local.table_rows() if sparse else None)
        out = jax.vmap(local_fn, in_axes=(None, 0, 0, 0, 0))(
            global_shared, private, chunk, local, _client_keys(round_key, chunk.client_ids))
        return _absorb(private_store, acc, out, chunk, weighting, clip_norm, sparse)

    return jax.jit(chunk_step, donate_argnums=(1, 2), compiler_options=compiler_options)


def make_sequential_step(client_update: ClientUpdate, *, sparse: bool, num_items: int,
                         weighting: str = "uniform", clip_norm: float | None = None,
                         score_fn: ApplyFn | None = None, row_decay: bool = False,
                         compiler_options: Mapping[str, str] | None = None):
    """The per-client loop over the same client computation (reference and baseline).

    Returns ``run(global_shared, private_store, acc, chunk, round_key)`` with the
    same signature and results as :func:`make_chunk_step`, but one jitted call
    per client.
    """
    client_fn = jax.jit(make_client_fn(client_update, sparse=sparse, num_items=num_items,
                                       score_fn=score_fn, row_decay=row_decay),
                        compiler_options=compiler_options)

    @jax.jit
    def absorb_one(private_store, acc, out, row):
        out, chunk = jax.tree.map(lambda x: x[None], (out, row))
        return _absorb(private_store, acc, out, chunk, weighting, clip_norm, sparse)

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


def initial_scores(score_fn: ApplyFn, shared: Leaves, private_store: Leaves,
                   eval_items: np.ndarray, history: np.ndarray, history_mask: np.ndarray,
                   *, num_items: int, chunk_size: int = 256) -> Array:
    """Every client's logits of its evaluation candidates under the global model.

    The starting evaluation scores of ``local`` mode (a client that has not
    trained yet holds the initial global model). Each client scores on a
    local table of its candidates' and memory's rows (private tables read by
    rows), as in training, in chunks of ``chunk_size`` clients.

    Args:
      score_fn: the model's apply.
      shared: global shared params.
      private_store: the stacked private params (without scores).
      eval_items: ``[U, M]`` candidates; history, history_mask: ``[U, n]`` memory.
      num_items: catalogue size.
      chunk_size: clients per call.

    Returns:
      ``[U, M]`` float32 logits.
    """

    def one(shared, private_store, user, items, hist, hmask):
        m, h = items.shape[0], hist.shape[0]
        rows, _, local_items, local_hist = localize(
            items, jnp.ones(m, bool), hist, hmask, num_items, local_rows(m, h, num_items))
        tables = {k: t[rows] for k, t in shared.tables.items()}
        params = ModelParams(gather_clients(private_store, user, rows),
                             Leaves(tables, shared.dense))
        return score_fn(params, local_items, Context(local_hist, hmask)).astype(jnp.float32)

    score_chunk = jax.jit(jax.vmap(one, in_axes=(None, None, 0, 0, 0, 0)))
    num_clients = eval_items.shape[0]
    size = min(chunk_size, num_clients)
    parts = []
    for start in range(0, num_clients, size):
        users = np.arange(start, min(start + size, num_clients))
        padded = np.concatenate([users, np.repeat(users[:1], size - len(users))])
        out = score_chunk(shared, private_store, padded.astype(np.int32), eval_items[padded],
                          history[padded], history_mask[padded])
        parts.append(out[:len(users)])
    return jnp.concatenate(parts)
