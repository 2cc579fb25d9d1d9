"""Robust aggregators: coordinate-wise median and trimmed mean.

Unlike the mean, these need every participant's update at once. During the
round each accepted client writes its upload into a per-round buffer with one
slot per participant (``[P, ...]``; item tables as full ``[P, num_items, d]``
with NaN where the client did not use a row), and at the end of the round the
server reduces each coordinate over the clients that have a value there:

* ``median`` — the median of those values;
* ``trimmed_mean`` — drop the ``floor(fraction * n)`` smallest and largest of
  the ``n`` values, average the rest.

A coordinate with no value (an item nobody used) gets a zero delta. The buffer
costs ``P * (num_items * d + dense params)`` floats, so these aggregators are
meant for robustness studies on datasets of ml-100k's size, not for the
million-client simulations the mean scales to. Non-finite uploads never enter
the buffer. Updates are unweighted (one vote per client).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from feddmr_jax.models.base import Leaves

Array = jax.Array
ROBUST_AGGREGATORS = ("median", "trimmed_mean")


def init_buffer(shared: Leaves, slots: int) -> Leaves:
    """A ``[slots, ...]`` buffer of NaN shaped like the shared params."""
    return jax.tree.map(lambda x: jnp.full((slots,) + x.shape, jnp.nan, x.dtype), shared)


def write_buffer(buffer: Leaves, delta: Leaves, slot: Array, accept: Array,
                 rows: Array, row_mask: Array) -> Leaves:
    """Writes a chunk's uploads into their slots.

    Args:
      buffer: from :func:`init_buffer`.
      delta: ``[C, ...]`` uploads (tables ``[C, L, d]`` for ``rows``).
      slot: ``[C]`` slot of each client.
      accept: ``[C]`` bool; rejected and padding clients write nothing.
      rows, row_mask: ``[C, L]`` global row ids and which rows were used.
    """
    slots = jax.tree.leaves(buffer)[0].shape[0]
    target = jnp.where(accept, slot, slots)                           # out of bounds: dropped
    row_target = jnp.where(row_mask, target[:, None], slots)          # [C, L]

    tables = {name: buf.at[row_target, rows].set(delta.tables[name], mode="drop")
              for name, buf in buffer.tables.items()}
    dense = jax.tree.map(lambda buf, d: buf.at[target].set(d, mode="drop"),
                         buffer.dense, delta.dense)
    return Leaves(tables, dense)


def _reduce(x: Array, how: str, fraction: float) -> Array:
    valid = ~jnp.isnan(x)
    n = jnp.sum(valid, axis=0)
    if how == "median":
        out = jnp.nanmedian(x, axis=0)
    else:
        ordered = jnp.sort(x, axis=0)                                  # NaN sort last
        k = jnp.floor(fraction * n).astype(jnp.int32)
        index = jnp.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
        keep = (index >= k) & (index < n - k)
        total = jnp.sum(jnp.where(keep, ordered, 0.0), axis=0)
        out = total / jnp.maximum(n - 2 * k, 1)
    return jnp.where(n > 0, out, 0.0)


def robust_delta(buffer: Leaves, how: str, fraction: float = 0.1) -> Leaves:
    """The coordinate-wise median or trimmed mean of the buffered uploads."""
    if how not in ROBUST_AGGREGATORS:
        raise ValueError(f"unknown robust aggregator {how!r}; choose from {ROBUST_AGGREGATORS}")
    return jax.tree.map(lambda x: _reduce(x, how, fraction), buffer)
