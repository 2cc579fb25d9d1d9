"""The two sorts of a chunk step, as single-operand integer sorts.

XLA's CPU backend sorts one integer operand with a typed comparison, but sorts
several operands (``jnp.unique(..., return_inverse=True)``, ``jnp.argsort``: the
values and their positions) through a generated comparator, 5-10x slower on the
project's CPU (a ``[30, 512]`` vmapped sort: 0.5 ms against 2.8 ms for
``jnp.unique`` and 4.1 ms for ``jnp.argsort`` of floats). In PFedRec's ml-100k
round these two sorts took about 45% of the device time (a ``jax.profiler`` trace,
benchmarks/HISTORY.md, session 5). Both sorts here pack a value and its position into one
integer key, ``value * 2**m + position`` with ``2**m`` above the length, sort that,
and unpack: keys are distinct, so the order is total and no stability is needed.

* :func:`unique_rows`: ``jnp.unique(ids, size=, fill_value=, return_inverse=True)``,
  the same results (tests/test_sorting.py), for non-negative ids up to
  ``fill_value``; when the packed key would not fit in 31 bits it calls
  ``jnp.unique`` itself.
* :func:`epoch_order`: the order in which a client visits its examples in one
  epoch: its real examples in a random order, padding last. The order does not
  depend on the row's padded width (``jax.random.bits`` is prefix-stable with
  JAX's partitionable threefry, and the key layout is fixed), so a client trains
  the same whatever shape class it lands in (``federated/rounds.py`` chooses the
  classes per run), up to float rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_KEY_BITS = 31          # int32 keys stay non-negative
ORDER_POSITION_BITS = 16   # epoch_order: positions below 2**16 (wider rows: position_bits)


def position_bits(length: int) -> int:
    """``m`` with ``2**m >= length``: the low bits that hold a position."""
    return max(int(length) - 1, 0).bit_length()


def unique_rows(ids: Array, size: int, fill_value: int) -> tuple[Array, Array]:
    """Sorted distinct values of ``ids`` padded with ``fill_value``, and the inverse.

    Args:
      ids: ``[n]`` int32, values in ``[0, fill_value]``.
      size: length of the output (at least the number of distinct values).
      fill_value: the padding value, also the largest value ``ids`` may hold.

    Returns:
      ``(uniq [size], inverse [n])`` as ``jnp.unique(ids, size=size,
      fill_value=fill_value, return_inverse=True)`` gives them (inverse flattened):
      ``uniq[inverse] == ids``.
    """
    n = ids.shape[0]
    m = position_bits(n)
    if (int(fill_value) + 1) << m > 2 ** _KEY_BITS:
        uniq, inverse = jnp.unique(ids, size=size, fill_value=fill_value, return_inverse=True)
        return uniq, inverse.reshape(-1)
    keys = jnp.sort(ids.astype(jnp.int32) * (1 << m) + jnp.arange(n, dtype=jnp.int32))
    values, positions = keys >> m, keys & ((1 << m) - 1)
    first = jnp.concatenate([jnp.ones(1, bool), values[1:] != values[:-1]])
    group = jnp.cumsum(first.astype(jnp.int32)) - 1          # rank of each sorted value
    inverse = jnp.zeros(n, jnp.int32).at[positions].set(group)
    uniq = (jnp.full(size, fill_value, ids.dtype)
            .at[jnp.where(first, group, size)].set(values.astype(ids.dtype), mode="drop"))
    return uniq, inverse


def epoch_order(key: Array, mask: Array) -> Array:
    """Positions ``[n]`` of a padded row in one epoch's visiting order.

    The real examples (``mask``) come first, in the order of 32-bit random words
    ``jax.random.bits(key, (n,))`` shifted right by ``m + 1`` (15 random bits; equal
    words keep the row's order), then the padding in the row's order, where
    ``m = 16`` (:data:`ORDER_POSITION_BITS`; ``position_bits(n)`` for rows wider
    than ``2**16``). Keys (uint32): ``(word >> (m + 1)) * 2**m + position`` for a
    real example, ``2**(31 - m) * 2**m + position`` for padding (above every real key).
    """
    n = mask.shape[0]
    m = max(ORDER_POSITION_BITS, position_bits(n))
    words = jax.random.bits(key, (n,), jnp.uint32) >> (m + 1)       # < 2**(31 - m)
    high = jnp.where(mask, words, jnp.uint32(1 << (_KEY_BITS - m)))
    keys = (high << m) | jnp.arange(n, dtype=jnp.uint32)            # < 2**32: uint32
    return (jnp.sort(keys) & jnp.uint32((1 << m) - 1)).astype(jnp.int32)
