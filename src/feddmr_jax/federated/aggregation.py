"""Server aggregation: a (weighted) tree mean of client deltas, then a server optimizer.

Clients are processed in chunks, so the server keeps a running
:class:`Accumulator` of weighted delta sums; :func:`mean_delta` divides by the
total weight once every chunk is in. Item tables arrive as row deltas of the rows
a client used (sparse mode, ``rows [C, L]``) or as full tables (dense mode); both
are scatter-/sum-added into a ``[num_items, d]`` sum, so the mean over
participants is the same in both modes (a client that did not touch a row
contributes a zero delta to it, exactly as in the dense computation).

Item-table rows are averaged in one of two ways (``table_mean``):

* ``"participants"`` — divide by the total weight of all participants: the
  plain FedAvg mean of full tables (a client that did not touch a row brings a
  zero delta to it);
* ``"touched"`` (default) — divide each row by the total weight of the
  participants that used it this round (as in FedFast and most FedMF code): an
  item seen by few clients is not shrunk towards its old value by everybody
  else's zeros.

Dense leaves are always divided by the total weight. Updates with a non-finite
value are dropped (weight 0) and counted.

Row decay (``RoundConfig.row_decay``, e.g. FedRAP's weight decay): every row of
client u's table changes, an untouched row ``C[i]`` to ``C[i] * f_u`` (a
per-column factor). In dense mode every row then counts as used. In sparse mode
client u uploads, for its rows, the excess ``E_u[i] = new_u[i] - C[i] * f_u``
(0 on untouched rows) and the accumulator sums ``w_u (f_u - 1)`` (``decay``); as
``delta_u[i] = C[i] (f_u - 1) + E_u[i]`` on every row, the dense mean is
``sum_u w_u delta_u[i] / W = C[i] * decay / W + sum_u w_u E_u[i] / W``
(:func:`add_row_decay`). Every participant changes every row, so every row's
weight is ``W`` (``"touched"`` equals ``"participants"``), as in dense mode.
A faulty client (federated/faults.py) is the same attack in both modes: scaling
its whole delta by ``s`` scales ``E_u`` and ``f_u - 1`` alike (its upload
is ``s E_u`` and ``1 + s (f_u - 1)``); a NaN upload (rows and factor) is dropped.
With ``server_optimizer = optax.sgd(1.0)`` the server step is plain FedAvg:
``global <- global + mean_delta``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from feddmr_jax.models.base import Leaves

Array = jax.Array

WEIGHTINGS = ("uniform", "examples")
TABLE_MEANS = ("touched", "participants")


class Accumulator(NamedTuple):
    """Running sums over the clients of one round.

    Attributes:
      delta_sum: weighted sum of client deltas, shaped like the shared params.
      row_weight: per table, ``[num_items]`` total weight of the accepted
        updates that used each row.
      weight: total weight of the accepted updates.
      accepted: number of accepted (finite) updates.
      dropped: number of updates dropped as non-finite.
      buffer: per-participant uploads for the robust aggregators
        (federated/robust.py), or None.
      masks: secure aggregation's masking graph of the round
        (:class:`feddmr_jax.privacy.secure_agg.MaskGraph`), or None. When set,
        ``delta_sum``, ``row_weight`` and ``weight`` hold ``uint32`` sums of
        *masked*, fixed-point dense uploads until
        :func:`feddmr_jax.federated.secure_round.unmask` runs.
      decay: per table, ``[d]`` sum of ``w_u (f_u - 1)`` over accepted updates
        (sparse row decay, see module docstring), or None.
    """

    delta_sum: Leaves
    row_weight: dict[str, Array]
    weight: Array
    accepted: Array
    dropped: Array
    buffer: Leaves | None = None
    masks: Any = None
    decay: dict[str, Array] | None = None


AGGREGATORS = ("mean", "clipped_mean", "median", "trimmed_mean")


def init_accumulator(shared: Leaves, buffer: Leaves | None = None,
                     masks: Any = None, row_decay: bool = False) -> Accumulator:
    # Separate buffers: the accumulator is donated to the chunk step.
    zeros = [jnp.zeros((), jnp.float32) for _ in range(3)]
    row_weight = {name: jnp.zeros(t.shape[:1], jnp.float32) for name, t in shared.tables.items()}
    decay = ({name: jnp.zeros(t.shape[1:], jnp.float32) for name, t in shared.tables.items()}
             if row_decay else None)
    return Accumulator(jax.tree.map(jnp.zeros_like, shared), row_weight, *zeros, buffer, masks,
                       decay)


def client_weights(num_examples: Array, client_mask: Array, weighting: str) -> Array:
    """Aggregation weights ``[C]``: 1 per real client, or its example count."""
    if weighting == "uniform":
        w = jnp.ones_like(num_examples)
    elif weighting == "examples":
        w = num_examples
    else:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")
    return jnp.where(client_mask, w, 0.0)


def is_finite(stacked_tree) -> Array:
    """``[C]`` bool: every value of client c's pytree is finite (a scalar True for a
    tree without leaves, e.g. the empty private half of ``popularity``)."""
    leaves = jax.tree.leaves(stacked_tree)
    if not leaves:
        return jnp.ones((), bool)
    flags = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]
    return jnp.all(jnp.stack(flags), axis=0)


def accumulate(acc: Accumulator, stacked_delta: Leaves, weights: Array,
               finite: Array, client_mask: Array, rows: Array,
               row_mask: Array, factor: dict[str, Array] | None = None) -> Accumulator:
    """Adds one chunk of client deltas to the running sums.

    Args:
      acc: running sums.
      stacked_delta: ``[C, ...]`` deltas; tables ``[C, L, d]`` for the rows given
        by ``rows`` (``L = num_items`` with ``rows = arange`` in dense mode).
      weights: ``[C]`` aggregation weights (0 for padding clients).
      finite: ``[C]`` bool from :func:`is_finite`; False updates are dropped.
      client_mask: ``[C]`` bool, True for real clients.
      rows: ``[C, L]`` global row id of each local table row.
      row_mask: ``[C, L]`` bool, True for rows the client used this round.
      factor: per table, ``[C, d]`` each client's decay factor ``f_u`` of the
        rows it did not upload (sparse row decay; ``acc.decay`` must be set),
        as uploaded (a client whose update is scaled by ``s`` uploads
        ``1 + s (f_u - 1)``, federated/parallel.py), or None. The factors of
        dropped (non-finite) updates are left out, NaN or not.
    """
    w = jnp.where(finite, weights, 0.0)

    def weighted(x):
        x = jnp.where(finite.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0)
        return x * w.reshape((-1,) + (1,) * (x.ndim - 1))

    flat_rows = rows.reshape(-1)
    row_w = (w[:, None] * row_mask).reshape(-1)

    def add_table(total, delta):
        delta = jnp.where(row_mask[..., None], weighted(delta), 0.0)
        return total.at[flat_rows].add(delta.reshape(-1, delta.shape[-1]))

    tables = {name: add_table(acc.delta_sum.tables[name], stacked_delta.tables[name])
              for name in acc.delta_sum.tables}
    if factor is None:
        row_weight = {name: rw.at[flat_rows].add(row_w) for name, rw in acc.row_weight.items()}
        decay = acc.decay
    else:  # every participant changes every row (module docstring)
        row_weight = {name: rw + jnp.sum(w) for name, rw in acc.row_weight.items()}
        # A dropped client's factor may be NaN (0 * NaN is NaN): select, do not weight.
        decay = {name: acc.decay[name] + jnp.sum(weighted(factor[name] - 1.0), axis=0)
                 for name in acc.decay}
    dense = jax.tree.map(lambda total, d: total + jnp.sum(weighted(d), axis=0),
                         acc.delta_sum.dense, stacked_delta.dense)
    real = client_mask.astype(jnp.float32)
    return Accumulator(
        delta_sum=Leaves(tables, dense),
        row_weight=row_weight,
        weight=acc.weight + jnp.sum(w),
        accepted=acc.accepted + jnp.sum(real * finite),
        dropped=acc.dropped + jnp.sum(real * (1.0 - finite)),
        buffer=acc.buffer, masks=acc.masks, decay=decay)


def mean_delta(acc: Accumulator, table_mean: str = "touched") -> Leaves:
    """The weighted mean delta (zero where no update counts).

    Args:
      acc: the round's sums.
      table_mean: ``"touched"`` or ``"participants"`` (see module docstring).
    """
    if table_mean not in TABLE_MEANS:
        raise ValueError(f"unknown table_mean {table_mean!r}; choose from {TABLE_MEANS}")
    total = jnp.maximum(acc.weight, 1e-12)
    dense = jax.tree.map(lambda s: s / total, acc.delta_sum.dense)
    if table_mean == "participants":
        tables = {k: s / total for k, s in acc.delta_sum.tables.items()}
    else:
        tables = {k: s / jnp.maximum(acc.row_weight[k], 1e-12)[:, None]
                  for k, s in acc.delta_sum.tables.items()}
    return Leaves(tables, dense)


def add_row_decay(delta: Leaves, acc: Accumulator, shared: Leaves) -> Leaves:
    """The mean delta plus the decay of the rows not uploaded: ``C * decay / W``
    per table (sparse row decay, see module docstring; ``delta`` unchanged when
    ``acc.decay`` is None).

    Args:
      delta: :func:`mean_delta` of the round's sums.
      acc: the round's sums.
      shared: the global shared params the clients started from (C).
    """
    if acc.decay is None:
        return delta
    total = jnp.maximum(acc.weight, 1e-12)
    tables = {k: d + shared.tables[k] * (acc.decay[k] / total) for k, d in delta.tables.items()}
    return Leaves(tables, delta.dense)


def server_update(shared: Leaves, opt_state, delta: Leaves,
                  optimizer: optax.GradientTransformation, touched: Leaves | None = None):
    """Applies the server optimizer to the pseudo-gradient ``-delta``.

    Args:
      shared, opt_state: the global shared params and the optimizer's state.
      delta: the round's aggregated update.
      optimizer: any optax transformation (federated/server_optimizers.py).
      touched: where the round's update counts (``server_optimizers.touched_rows``),
        passed as the extra argument ``touched`` to optimizers that take one
        (others ignore it); None: nothing passed.

    Returns:
      ``(new_shared, new_opt_state)``.
    """
    pseudo_grad = jax.tree.map(jnp.negative, delta)
    extra = {} if touched is None else {"touched": touched}
    updates, opt_state = optax.with_extra_args_support(optimizer).update(
        pseudo_grad, opt_state, shared, **extra)
    return optax.apply_updates(shared, updates), opt_state
