"""Simulated secure aggregation by pairwise additive masking (Bonawitz et al. 2017).

Every pair of participating clients ``{i, j}`` shares a seed ``s_ij``
(:func:`pair_seed`; in the real protocol it comes from a Diffie-Hellman key
agreement; the seeds and the masking graph are in ``mask_graph.py``, re-exported
here). Client ``i`` uploads

    y_i = x_i + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij)

(``j`` over the other participants, ``>`` / ``<`` comparing client ids), so
each ``y_i`` looks like noise while ``sum_i y_i = sum_i x_i``: every pair's
mask enters once with ``+`` and once with ``-``. If a client ``d`` drops out
after masking, the survivors' sum still holds ``d``'s pair masks; the
survivors' shares of ``s_dj`` let the server rebuild and remove them
(:func:`unmask_dropped`). Here ``PRG(s) = scale * N(0, 1)`` drawn by
``jax.random.normal``, one key per leaf by ``fold_in(s, leaf_index)``.

Leaves of an unsigned integer dtype are masked in their ring instead
(``Z_{2^32}`` for ``uint32``): uniform masks, wrapping addition, exact
cancellation, as in the real protocol; the engine's secure aggregation
(``federated/secure_round.py``) encodes uploads in fixed point and uses that.

This is a *simulation* for studying the pipeline and its cost: the server
holds ``base_key`` and could recompute every mask, so it gives no privacy.

Precision trade-off: the real protocol works in a finite ring, so masks cancel
exactly. With floating-point masks they cancel only up to rounding: the float32
sum of ``n`` masked updates carries an absolute error of order
``eps32 * scale * n ** 1.5`` per coordinate (``eps32 ~ 6e-8``); measured: max
error ~2e-4 * scale over 1000 coordinates with n = 200 (~2e-5 * scale with
n = 40). Masks hide updates only if ``scale`` is well above the update entries,
so pick ``scale`` ~1-10 for updates of entries ~0.01-0.1 and check the error
budget (or use float64 via ``jax_enable_x64``) before going larger.

Cost: each client's mask needs one PRG call per other participant, so one call
is ``O(n^2 * model size)`` work and ``O(n * model size)`` memory (vmap over
clients, ``lax.scan`` over partners; no ``[pairs, ...]`` tensor).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

# The seeds and the masking graph (mask_graph.py), re-exported: callers import them here.
from feddmr_jax.privacy.mask_graph import (MaskGraph, exposed_members,  # noqa: F401
                                           pair_seed, revealed_seeds, ring_partners,
                                           round_graph, self_seed)

PyTree = Any
Array = jax.Array


def _is_ring(x: Any) -> bool:
    return jnp.issubdtype(x.dtype, jnp.unsignedinteger)


def _prg(seed: jax.Array, template: PyTree, scale: float | jax.Array) -> PyTree:
    """Masks shaped like ``template``.

    Float leaves: ``scale * N(0, 1)``, one float32 stream split over them.
    Unsigned-integer leaves (the ring ``Z_{2^bits}``): uniform random bits, leaf
    ``i`` from ``fold_in(seed, i)``; ``scale`` is not used.
    """
    leaves, treedef = jax.tree_util.tree_flatten(template)
    sizes = [0 if _is_ring(x) else math.prod(x.shape) for x in leaves]
    flat = scale * jax.random.normal(seed, (sum(sizes),), jnp.float32)
    draws, start = [], 0
    for i, (x, size) in enumerate(zip(leaves, sizes)):
        if _is_ring(x):
            draws.append(jax.random.bits(jax.random.fold_in(seed, i), x.shape, x.dtype))
            continue
        draws.append(flat[start : start + size].reshape(x.shape).astype(x.dtype))
        start += size
    return jax.tree_util.tree_unflatten(treedef, draws)


def _stacked_pair_masks(
    own_ids: jax.Array,
    other_ids: jax.Array,
    other_valid: jax.Array,
    base_key: jax.Array,
    template: PyTree,
    scale: float,
) -> PyTree:
    """For each own client ``i``: ``sum_j sign(j - i) * PRG(s_ij)`` over valid others.

    Args:
      own_ids: ``[a]`` int32 ids.
      other_ids: ``[b]`` int32 ids (pairs with equal ids contribute nothing).
      other_valid: ``[b]`` bool, False = skip this partner.
      base_key: masking key.
      template: pytree of one update (shapes and dtypes, no client axis).
      scale: mask standard deviation.

    Returns:
      Pytree of ``[a, ...]`` masks.
    """
    a = own_ids.shape[0]
    return neighbor_masks(own_ids, jnp.broadcast_to(other_ids, (a,) + other_ids.shape),
                          jnp.broadcast_to(other_valid, (a,) + other_valid.shape),
                          base_key, template, scale)


def neighbor_masks(
    own_ids: jax.Array,
    partner_ids: jax.Array,
    partner_valid: jax.Array,
    base_key: jax.Array,
    template: PyTree,
    scale: float | jax.Array,
) -> PyTree:
    """Each client's mask against its own partner list (a sparse masking graph).

    With a symmetric graph (``j`` is a partner of ``i`` iff ``i`` is one of
    ``j``'s), the masks of all graph members sum to zero, as in Bell et al.
    2020 ("Secure single-server aggregation with (poly)logarithmic overhead").

    Args:
      own_ids: ``[a]`` int32 ids.
      partner_ids: ``[a, k]`` int32 ids of each client's partners.
      partner_valid: ``[a, k]`` bool, False = no partner in this slot.
      base_key: masking key of the round.
      template: pytree of one update (shapes and dtypes, no client axis);
        unsigned-integer leaves are masked in their ring (wrapping addition,
        uniform masks: exact cancellation), float leaves with Gaussian masks.
      scale: standard deviation of the float masks.

    Returns:
      Pytree of ``[a, ...]`` masks ``sum_j sign(j - i) * PRG(s_ij)``.
    """
    zeros = jax.tree_util.tree_map(jnp.zeros_like, template)

    def signed(sign: jax.Array, d: jax.Array) -> jax.Array:
        zero = jnp.zeros((), d.dtype)
        return jnp.where(sign > 0, d, jnp.where(sign < 0, zero - d, zero))

    def one_client(i: jax.Array, partners: jax.Array, valid: jax.Array) -> PyTree:
        def step(acc: PyTree, partner: tuple[jax.Array, jax.Array]) -> tuple[PyTree, None]:
            j, use = partner
            sign = jnp.where(use, jnp.sign(j - i), 0)
            draw = _prg(pair_seed(base_key, i, j), template, scale)
            acc = jax.tree_util.tree_map(lambda a, d: a + signed(sign, d), acc, draw)
            return acc, None

        total, _ = jax.lax.scan(step, zeros, (partners, valid))
        return total

    return jax.vmap(one_client)(own_ids, partner_ids, partner_valid)


def _first_row(stacked: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x: x[0], stacked)


def mask_updates(
    stacked_updates: PyTree,
    client_ids: jax.Array,
    base_key: jax.Array,
    scale: float = 1.0,
    client_mask: jax.Array | None = None,
) -> PyTree:
    """Adds each client's pairwise masks to its update.

    Args:
      stacked_updates: pytree of ``[clients, ...]`` float updates.
      client_ids: ``[clients]`` int32 distinct ids of the participants.
      base_key: PRNG key of this round's masking.
      scale: standard deviation of each pair mask (see the precision note in
        the module docstring).
      client_mask: ``[clients]`` bool, False = padding slot: it neither adds
        nor receives masks (its row is returned unchanged). None = all real.

    Returns:
      Pytree of ``[clients, ...]`` masked updates; their sum over real clients
      equals the sum of the raw updates up to float rounding.
    """
    client_ids = jnp.asarray(client_ids, jnp.int32)
    if client_mask is None:
        client_mask = jnp.ones(client_ids.shape, bool)
    client_mask = jnp.asarray(client_mask, bool)
    masks = _stacked_pair_masks(
        client_ids, client_ids, client_mask, base_key, _first_row(stacked_updates), scale
    )

    def apply(x: jax.Array, m: jax.Array) -> jax.Array:
        keep = jnp.reshape(client_mask, (-1,) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x + m, x)

    return jax.tree_util.tree_map(apply, stacked_updates, masks)


def unmask_dropped(
    masked_sum: PyTree,
    surviving_ids: jax.Array,
    dropped_ids: jax.Array,
    base_key: jax.Array,
    template: PyTree | None = None,
    scale: float = 1.0,
    surviving_mask: jax.Array | None = None,
    dropped_mask: jax.Array | None = None,
) -> PyTree:
    """Removes the masks that dropped clients left in the survivors' sum.

    Args:
      masked_sum: pytree (no client axis): sum of the survivors' masked updates.
      surviving_ids: ``[s]`` int32 ids whose masked updates are in the sum.
      dropped_ids: ``[d]`` int32 ids that were masked against but never arrived.
      base_key: the key given to :func:`mask_updates`.
      template: pytree with the shapes and dtypes of one update; None = the
        structure of ``masked_sum``.
      scale: the ``scale`` given to :func:`mask_updates`.
      surviving_mask: ``[s]`` bool, False = padding; None = all real.
      dropped_mask: ``[d]`` bool, False = padding; None = all real.

    Returns:
      Pytree like ``masked_sum``: the sum of the survivors' raw updates (up to
      float rounding).
    """
    if template is None:
        template = masked_sum
    surviving_ids = jnp.asarray(surviving_ids, jnp.int32)
    dropped_ids = jnp.asarray(dropped_ids, jnp.int32)
    if dropped_ids.shape[0] == 0:
        return masked_sum
    if surviving_mask is None:
        surviving_mask = jnp.ones(surviving_ids.shape, bool)
    if dropped_mask is None:
        dropped_mask = jnp.ones(dropped_ids.shape, bool)
    leftovers = _stacked_pair_masks(
        surviving_ids, dropped_ids, jnp.asarray(dropped_mask, bool), base_key, template, scale
    )

    def remove(total: jax.Array, m: jax.Array) -> jax.Array:
        keep = jnp.reshape(jnp.asarray(surviving_mask, bool), (-1,) + (1,) * (m.ndim - 1))
        return total - jnp.sum(jnp.where(keep, m, jnp.zeros_like(m)), axis=0).astype(total.dtype)

    return jax.tree_util.tree_map(remove, masked_sum, leftovers)


# ---------------------------------------------------------------- self masks


def self_masks(ids: Array, use: Array, self_key: Array, template: PyTree) -> PyTree:
    """Each client's self mask ``PRG(b_i)`` (zero where ``use`` is False).

    Args:
      ids: ``[a]`` int32 client ids.
      use: ``[a]`` bool, False = no mask (padding).
      self_key: the round's self-mask key.
      template: pytree of one upload (unsigned-integer leaves: uniform words).

    Returns:
      Pytree of ``[a, ...]`` masks.
    """
    def one(i: Array, on: Array) -> PyTree:
        draw = _prg(self_seed(self_key, i), template, 1.0)
        return jax.tree_util.tree_map(lambda d: jnp.where(on, d, jnp.zeros_like(d)), draw)

    return jax.vmap(one)(jnp.asarray(ids, jnp.int32), jnp.asarray(use, bool))


def sum_self_masks(ids: Array, use: Array, self_key: Array, template: PyTree) -> PyTree:
    """``sum_i PRG(b_i)`` over the clients with ``use`` (``lax.scan``: memory of one upload).

    Args:
      ids: ``[a]`` int32 client ids.
      use: ``[a]`` bool, the clients whose self masks are summed.
      self_key: the round's self-mask key.
      template: pytree of one upload.

    Returns:
      Pytree like ``template``.
    """
    def step(acc: PyTree, member: tuple[Array, Array]) -> tuple[PyTree, None]:
        i, on = member
        draw = _prg(self_seed(self_key, i), template, 1.0)
        acc = jax.tree_util.tree_map(
            lambda a, d: a + jnp.where(on, d, jnp.zeros_like(d)), acc, draw)
        return acc, None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, template)
    total, _ = jax.lax.scan(step, zeros, (jnp.asarray(ids, jnp.int32), jnp.asarray(use, bool)))
    return total


# ---------------------------------------------------------------- fixed point


def member_bound(members: int) -> float:
    """Largest integer magnitude one encoded upload value may have so that the
    sum of ``members`` uploads cannot leave ``[-2^31, 2^31)`` (no wrap-around).

    Args:
      members: clients whose uploads can enter one sum (``S``).

    Returns:
      ``min(floor((2^31 - 1) / members), 2^31 - 128)`` (the second term: the
      largest float32 below 2^31).
    """
    return float(min((2**31 - 1) // max(int(members), 1), 2**31 - 128))


def max_clip(members: int, bits: int) -> float:
    """Largest per-coordinate bound ``C`` of an upload with which the sum of
    ``members`` uploads stays in range (``C * 2^bits`` plus rounding and a
    float32 margin within :func:`member_bound`).

    Args:
      members: ``S``.
      bits: fractional bits.

    Returns:
      ``(member_bound - 1) / (2^bits * (1 + 1e-6))``.
    """
    return (member_bound(members) - 1.0) / (2.0**bits * (1.0 + 1e-6))


def encode_fixed(x: Array, bits: Array | int, bound: float) -> tuple[Array, Array]:
    """``round(x * 2^bits)`` as a ``uint32`` ring element, saturated at ``+-bound``.

    Args:
      x: float array (NaN encodes as 0: the upload is rejected anyway).
      bits: fractional bits (0 for integer weights).
      bound: :func:`member_bound` of the round.

    Returns:
      ``(words, saturated)``: the two's-complement words and a bool scalar,
      True when some value had to be clipped to ``+-bound`` (the sum might
      otherwise wrap).
    """
    q = jnp.round(x.astype(jnp.float32) * jnp.exp2(jnp.asarray(bits, jnp.float32)))
    q = jnp.where(jnp.isnan(q), 0.0, q)
    saturated = jnp.any(jnp.abs(q) > bound)
    q = jnp.clip(q, -bound, bound)
    return jax.lax.bitcast_convert_type(q.astype(jnp.int32), jnp.uint32), saturated


def decode_fixed(u: Array, bits: Array | int) -> Array:
    """Float value of an encoded value or (unwrapped) sum of them."""
    q = jax.lax.bitcast_convert_type(u, jnp.int32).astype(jnp.float32)
    return q / jnp.exp2(jnp.asarray(bits, jnp.float32))
