"""Who masks with whom, and from which seeds: the key agreement of secure aggregation.

Every pair of participating clients ``{i, j}`` shares a seed ``s_ij``
(:func:`pair_seed`; in the real protocol it comes from a Diffie-Hellman key
agreement), and every client has a self-mask seed ``b_i`` (:func:`self_seed`;
Bonawitz et al. 2017). Pairs are the edges of a sparse random graph, a Harary
graph of ``k`` neighbours per client (:func:`ring_partners`; Bell et al. 2020),
or the complete graph; :func:`round_graph` builds a round's
:class:`MaskGraph`. When the server unmasks, it learns each member's self seed
or its pair seeds, never both (:func:`revealed_seeds`), and a member whose
partners are all absent would be exposed (:func:`exposed_members`).

The masks drawn from these seeds and the fixed-point encoding are in
``secure_agg.py``, which re-exports these names. This is a *simulation*: the
seeds derive from keys the server holds, so it gives no privacy.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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


def self_seed(self_key: Array, i: Array | int) -> Array:
    """Client ``i``'s self-mask seed ``b_i`` (Bonawitz et al. 2017).

    Args:
      self_key: the round's self-mask key (``MaskGraph.self_key``).
      i: int32 client id (scalar; works under ``vmap``).

    Returns:
      ``fold_in(self_key, i)``.
    """
    return jax.random.fold_in(self_key, i)


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
        uploads' saturation flags (``secure_agg.encode_fixed``); unmasked with
        the other sums, it is the number of accepted uploads that had to saturate.
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
      bits: fractional bits of the fixed-point encoding (``secure_agg.encode_fixed``).

    Returns:
      A :class:`MaskGraph`.
    """
    ids = np.sort(np.asarray(sampled, np.int32))
    partners, valid = ring_partners(len(ids), neighbors, rng)
    pair_key, self_key = jax.random.split(key)
    return MaskGraph(ids=ids, partners=partners, valid=valid,
                     absent=np.isin(ids, np.asarray(dropped, np.int32)), key=pair_key,
                     bits=np.int32(bits), self_key=self_key, overflow=np.uint32(0))


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
