"""Simulated secure aggregation by pairwise additive masking (Bonawitz et al. 2017).

Every pair of participating clients ``{i, j}`` shares a seed ``s_ij``
(:func:`pair_seed`; in the real protocol it comes from a Diffie-Hellman key
agreement). Client ``i`` uploads

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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Array = jax.Array


def pair_seed(base_key: jax.Array, i: jax.Array | int, j: jax.Array | int) -> jax.Array:
    """The shared seed of clients ``i`` and ``j``; symmetric in ``(i, j)``.

    Args:
      base_key: PRNG key of this round's masking (e.g. ``fold_in(key, round)``).
      i, j: int32 client ids (scalars; works under ``vmap``).

    Returns:
      ``fold_in(fold_in(base_key, min(i, j)), max(i, j))``.
    """
    lo, hi = jnp.minimum(i, j), jnp.maximum(i, j)
    return jax.random.fold_in(jax.random.fold_in(base_key, lo), hi)


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


class MaskGraph(NamedTuple):
    """The secure-aggregation state of one round (carried in ``Accumulator.masks``).

    Attributes:
      ids: ``[S]`` int32 sorted ids of the clients sampled this round.
      partners: ``[S, k]`` int32 positions (into ``ids``) of each member's
        partners.
      valid: ``[S, k]`` bool, False = empty partner slot.
      absent: ``[S]`` bool, True = the member's upload is not in the sum
        (dropped out, or received and rejected by the server).
      key: PRNG key the pair seeds derive from (simulation only).
      bits: int32 scalar, fractional bits of the fixed-point encoding.
      self_key: PRNG key the members' self-mask seeds derive from
        (:func:`self_seed`; simulation only).
      overflow: uint32 scalar, the server's running *masked* sum of the
        uploads' saturation flags (:func:`encode_fixed`); unmasked with the
        other sums, it is the number of accepted uploads that had to saturate.
    """

    ids: Array
    partners: Array
    valid: Array
    absent: Array
    key: Array
    bits: Array
    self_key: Array
    overflow: Array


def ring_partners(num_members: int, neighbors: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Partner positions of a random Harary graph on ``num_members`` nodes.

    Args:
      num_members: ``S``.
      neighbors: ``k`` (even); 0 or ``>= S - 1``: complete graph.
      rng: numpy generator that orders the ring.

    Returns:
      ``(partners [S, w], valid [S, w])`` with ``w = k``, or ``S - 1`` for the
      complete graph; symmetric: ``q`` is a partner of ``p`` iff ``p`` is one of ``q``'s.
    """
    s = num_members
    if neighbors == 0 or neighbors >= s - 1:
        others = np.array([[q for q in range(s) if q != p] for p in range(s)],
                          np.int32).reshape(s, max(s - 1, 0))
        return others, np.ones(others.shape, bool)
    order = rng.permutation(s)                 # ring slot -> member position
    slot = np.empty(s, np.int64)
    slot[order] = np.arange(s)
    half = neighbors // 2
    offsets = np.concatenate([np.arange(1, half + 1), -np.arange(1, half + 1)])
    partners = order[(slot[:, None] + offsets[None, :]) % s].astype(np.int32)
    return partners, np.ones(partners.shape, bool)


def round_graph(sampled: np.ndarray, dropped: np.ndarray, neighbors: int,
                rng: np.random.Generator, key: Array, bits: int = 20) -> MaskGraph:
    """The masking graph of a round's sampled clients.

    Args:
      sampled: ids of every client sampled this round (including those that
        will drop out).
      dropped: ids among them that never report (marked absent from the start).
      neighbors: partners per client ``k`` (see :func:`ring_partners`).
      rng: orders the ring (seed it by run seed and round for reproducibility).
      key: the round's masking key; split into the pair-seed key and the
        self-mask key (independent streams).
      bits: fractional bits of the fixed-point encoding (:func:`encode_fixed`).

    Returns:
      A :class:`MaskGraph`.
    """
    ids = np.sort(np.asarray(sampled, np.int32))
    partners, valid = ring_partners(len(ids), neighbors, rng)
    pair_key, self_key = jax.random.split(key)
    return MaskGraph(ids=ids, partners=partners, valid=valid,
                     absent=np.isin(ids, np.asarray(dropped, np.int32)), key=pair_key,
                     bits=np.int32(bits), self_key=self_key, overflow=np.uint32(0))


# ---------------------------------------------------------------- self masks


def self_seed(self_key: Array, i: Array | int) -> Array:
    """Client ``i``'s self-mask seed ``b_i`` (Bonawitz et al. 2017).

    Args:
      self_key: the round's self-mask key (``MaskGraph.self_key``).
      i: int32 client id (scalar; works under ``vmap``).

    Returns:
      ``fold_in(self_key, i)``.
    """
    return jax.random.fold_in(self_key, i)


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


def revealed_seeds(absent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which secrets the server reconstructs when it unmasks a round.

    For each member the server learns *either* its self-mask seed (its upload
    is in the sum, so the seed's mask must come off) *or* its pair seeds (its
    upload is not in the sum, so its partners' masks for it must come off),
    never both: an upload that was received and then rejected keeps its self
    mask, so the server cannot strip it down to the raw update.

    Args:
      absent: ``[S]`` bool, members whose upload is not in the sum.

    Returns:
      ``(self_revealed [S], pair_revealed [S])`` bool, disjoint.
    """
    absent = np.asarray(absent, bool)
    return ~absent, absent


def exposed_members(partners: np.ndarray, valid: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """Members in the sum none of whose partners is (their update would be exposed).

    A present member whose partners are all absent has all its pair seeds
    revealed (the partners') and its self seed revealed (its own): its upload
    minus those masks is its update. The real protocol aborts such a round
    (Bonawitz et al.'s threshold ``t``).

    Args:
      partners, valid: ``[S, k]`` from :func:`ring_partners`.
      absent: ``[S]`` bool.

    Returns:
      ``[S]`` bool.
    """
    present = ~np.asarray(absent, bool)
    partners, valid = np.asarray(partners), np.asarray(valid, bool)
    if partners.shape[1] == 0:
        return present & (present.sum() == 1)
    has_partner = np.any(valid & present[partners], axis=1)
    return present & ~has_partner


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
