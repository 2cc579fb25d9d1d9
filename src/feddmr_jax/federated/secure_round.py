"""Simulated secure aggregation across a round's chunks (``train.secure_agg``).

The round follows Bonawitz et al. 2017 (CCS, "Practical secure aggregation for
privacy-preserving machine learning") on the sparse masking graph of Bell et al.
2020 (CCS, "Secure single-server aggregation with (poly)logarithmic overhead");
the primitives (graph, seeds, masks, fixed point) are in
``privacy/secure_agg.py``:

1. **Graph.** When the round's ``S`` clients are sampled, the server fixes a
   masking graph among them (``round_graph``): the members are placed on a
   ring in random order and each is paired with the ``k / 2`` members before
   and after it (a random Harary graph; ``k >= S - 1`` or ``k = 0`` gives the
   complete graph). Partners share a seed (``pair_seed``; in the real protocol
   from a Diffie-Hellman key agreement); each member also has its own
   self-mask seed ``b_i`` (``self_seed``), secret-shared with its partners.
2. **Dense upload in a finite ring.** A client that finished training builds
   (:func:`masked_uploads`) its weighted delta *scattered into full item
   tables*, its weighted row-use indicator per table, its dense leaves and its
   weight; encodes them in fixed point in ``Z_{2^32}`` (``round(x * 2^bits)``;
   the integer weights with 0 fractional bits), each value saturated at the
   per-member bound ``floor((2^31 - 1) / S)`` so that no sum of ``S`` uploads
   can wrap, plus a saturation flag; and adds its self mask ``PRG(b_i)`` and
   ``sum_j sign(j - i) * PRG(s_ij)`` over its partners, all *uniform* 32-bit
   words. Every upload has the same shape and is uniformly distributed on its
   own, so the server learns neither its values nor which item rows the client
   used (a sparse row upload would reveal them).
3. **Server sums.** The chunk step adds the *accepted* masked uploads into the
   round's :class:`~feddmr_jax.federated.aggregation.Accumulator` with
   wrapping ``uint32`` addition (:func:`masked_accumulate`). A partial sum
   still holds the self masks of its members, and is uniformly random.
4. **Unmasking** (:func:`unmask`). For each member the server reconstructs
   *either* its self-mask seed *or* its pair seeds, never both
   (``revealed_seeds``): the self masks of the members whose upload is in the
   sum, and the pair seeds of the absent ones, i.e. those that dropped out
   after the graph was fixed (``--dropout``) or whose upload was received and
   then rejected, so that their partners' masks for them come off. A rejected
   upload keeps its self mask: the server holds it but cannot strip it to the
   raw update. Masks cancel *exactly* (integer arithmetic): the result equals
   the plain sum of the quantized uploads.

Rejection (simulation shortcut): the chunk step rejects uploads that are not
finite by looking at the plaintext update, which a real server never sees (a
finite ring cannot even carry NaN). A deployment needs the check on the client
(it would then not upload: a dropout) or a validity proof the server verifies
on the masked upload; either way the server learns one bit per client
(accepted or not), which is what the simulator reveals.

Range: each value is rounded to a multiple of ``2^-bits`` (error <=
``2^-(bits+1)`` per client and coordinate; ``bits = 20``: 5e-7). A sum of at
most ``S`` uploads each within ``+-floor((2^31 - 1) / S)`` cannot wrap; an
upload that exceeds it is saturated and flagged, the flags are summed (masked)
like everything else, and :func:`unmask` raises :class:`SecureAggOverflow`
when any accepted upload saturated: an overflow is never silent. Runs built
from a config are checked before training (``privacy/plan.py``: clip bound
times ``S`` within range).

This is a simulation: ``MaskGraph.key`` and ``self_key`` let whoever holds the
accumulator recompute every mask. Cost per client: ``k + 1`` PRG draws of the
dense upload size (``sum of table sizes + dense params``) and the dense upload
itself (``chunk clients x num_items x d`` values per chunk; lower
``train.chunk_size`` for large catalogues); the server draws one self mask per
accepted client and ``k`` pair masks per absent one.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from feddmr_jax.errors import FeddmrError
from feddmr_jax.federated.aggregation import Accumulator, init_accumulator
from feddmr_jax.models.base import Leaves
from feddmr_jax.privacy.secure_agg import (MaskGraph, decode_fixed, encode_fixed,
                                           exposed_members, member_bound, neighbor_masks,
                                           revealed_seeds, self_masks, sum_self_masks)

Array = jax.Array
log = logging.getLogger(__name__)


class SecureAggOverflow(FeddmrError):
    """Accepted uploads left the fixed-point range: the round's sum would be wrong."""


class SecureUpload(NamedTuple):
    """What one client uploads under secure aggregation (before encoding and masking).

    Attributes:
      delta: weighted delta with full tables ``[num_items, d]`` (zero on the
        rows the client did not use) and the dense leaves.
      row_weight: per table, ``[num_items]`` the client's weight on the rows
        it used, 0 elsewhere.
      weight: scalar client weight.
      overflow: scalar, 1 when the encoding had to saturate a value (set by
        :func:`encode_upload`; 0 before encoding).
    """

    delta: Leaves
    row_weight: dict[str, Array]
    weight: Array
    overflow: Array


def encode_upload(upload: SecureUpload, bits: Array | int, bound: float) -> SecureUpload:
    """Fixed-point words of a float upload (delta at ``bits``, weights at 0 bits).

    Args:
      upload: one client's float :class:`SecureUpload` (no client axis).
      bits: fractional bits of the delta.
      bound: per-value magnitude limit (``member_bound`` of the round).

    Returns:
      ``uint32`` :class:`SecureUpload`; ``overflow`` is 1 when any value saturated.
    """
    flags = []

    def code(x: Array, b: Array | int) -> Array:
        words, saturated = encode_fixed(x, b, bound)
        flags.append(saturated)
        return words

    delta = jax.tree.map(lambda x: code(x, bits), upload.delta)
    row_weight = {k: code(w, 0) for k, w in upload.row_weight.items()}
    weight = code(upload.weight, 0)
    overflow = jnp.any(jnp.stack(flags)).astype(jnp.uint32)
    return SecureUpload(delta, row_weight, weight, overflow)


def decode_upload(upload: SecureUpload, bits: Array | int) -> SecureUpload:
    """Float values of encoded uploads or sums (for unmasking and for tests)."""
    return SecureUpload(jax.tree.map(lambda u: decode_fixed(u, bits), upload.delta),
                        {k: decode_fixed(w, 0) for k, w in upload.row_weight.items()},
                        decode_fixed(upload.weight, 0), decode_fixed(upload.overflow, 0))


def _dense_upload(delta: Leaves, weight: Array, rows: Array, row_mask: Array,
                  num_items: int) -> SecureUpload:
    """One client's dense upload (rows ``[L]`` scattered into ``[num_items]``)."""
    def table(d: Array) -> Array:
        d = jnp.where(row_mask[:, None], weight * d, 0.0)
        return jnp.zeros((num_items,) + d.shape[1:], d.dtype).at[rows].add(d)

    tables = {k: table(d) for k, d in delta.tables.items()}
    used = jnp.zeros((num_items,), jnp.float32).at[rows].add(weight * row_mask)
    dense = jax.tree.map(lambda x: weight * x, delta.dense)
    return SecureUpload(Leaves(tables, dense), {k: used for k in delta.tables}, weight,
                        jnp.zeros((), jnp.float32))


def encoded_uploads(stacked_delta: Leaves, weights: Array, rows: Array, row_mask: Array,
                    graph: MaskGraph, num_items: int) -> SecureUpload:
    """The fixed-point dense uploads of a chunk of clients, before masking.

    Args:
      stacked_delta: ``[C, ...]`` deltas (tables ``[C, L, d]`` for ``rows``).
      weights: ``[C]`` aggregation weights.
      rows, row_mask: ``[C, L]`` global row ids and which rows were used.
      graph: the round's :class:`MaskGraph` (bits; its size sets the bound).
      num_items: catalogue size.

    Returns:
      ``uint32`` :class:`SecureUpload` with a leading ``[C]`` axis.
    """
    raw = jax.vmap(_dense_upload, in_axes=(0, 0, 0, 0, None))(
        stacked_delta, weights, rows, row_mask, num_items)
    bits = jnp.asarray(graph.bits)
    bound = member_bound(graph.ids.shape[0])
    return jax.vmap(lambda u: encode_upload(u, bits, bound))(raw)


def upload_masks(client_ids: Array, client_mask: Array, graph: MaskGraph,
                 template: SecureUpload) -> tuple[SecureUpload, SecureUpload]:
    """Each client's pair masks ``sum_j sign(j - i) PRG(s_ij)`` and self mask ``PRG(b_i)``.

    Args:
      client_ids, client_mask: ``[C]`` ids and real-client flags (padding: no mask).
      graph: the round's :class:`MaskGraph`.
      template: one ``uint32`` upload (no client axis).

    Returns:
      ``(pair, self)``, each with a leading ``[C]`` axis.
    """
    ids = jnp.asarray(graph.ids)
    pos = jnp.searchsorted(ids, client_ids)
    partner_ids = ids[jnp.asarray(graph.partners)[pos]]
    valid = jnp.asarray(graph.valid)[pos] & client_mask[:, None]
    pair = neighbor_masks(client_ids, partner_ids, valid, graph.key, template, 1.0)
    return pair, self_masks(client_ids, client_mask, graph.self_key, template)


def masked_uploads(stacked_delta: Leaves, weights: Array, client_ids: Array,
                   client_mask: Array, rows: Array, row_mask: Array,
                   graph: MaskGraph, num_items: int) -> SecureUpload:
    """The encoded, masked dense uploads of a chunk of clients (client axis 0).

    What each client sends, before the server decides whether to accept it.

    Args:
      stacked_delta: ``[C, ...]`` deltas (tables ``[C, L, d]`` for ``rows``).
      weights: ``[C]`` aggregation weights.
      client_ids, client_mask: ``[C]`` ids and real-client flags.
      rows, row_mask: ``[C, L]`` global row ids and which rows were used.
      graph: the round's :class:`MaskGraph`.
      num_items: catalogue size.

    Returns:
      :class:`SecureUpload` of ``uint32`` leaves with a leading ``[C]`` axis:
      ``encode(x_i) + PRG(b_i) + sum_j sign(j - i) PRG(s_ij)``; padding
      clients get no mask.
    """
    encoded = encoded_uploads(stacked_delta, weights, rows, row_mask, graph, num_items)
    template = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), encoded)
    pair, own = upload_masks(client_ids, client_mask, graph, template)
    return jax.tree.map(lambda e, p, s: e + p + s, encoded, pair, own)


def init_masked_accumulator(shared: Leaves, masks: MaskGraph) -> Accumulator:
    """The server's empty round sums under secure aggregation (``uint32`` zeros)."""
    acc = init_accumulator(shared, None, masks)
    ring = lambda t: jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.uint32), t)  # noqa: E731
    return acc._replace(delta_sum=ring(acc.delta_sum), row_weight=ring(acc.row_weight),
                        weight=ring(acc.weight),
                        masks=masks._replace(overflow=jnp.zeros((), jnp.uint32)))


def masked_accumulate(acc: Accumulator, stacked_delta: Leaves, weights: Array,
                      finite: Array, client_mask: Array, client_ids: Array,
                      rows: Array, row_mask: Array) -> Accumulator:
    """Adds a chunk's accepted masked uploads to the running (masked) sums.

    Same arguments as :func:`feddmr_jax.federated.aggregation.accumulate`, plus
    the clients' ids; ``acc`` comes from :func:`init_masked_accumulator`.
    Every real client uploads; the server keeps the uploads with ``finite``
    (a simulation shortcut, see the module docstring) and marks the rejected
    ones absent.
    """
    accept = finite & client_mask
    num_items = next(iter(acc.row_weight.values())).shape[0] if acc.row_weight else 0
    up = masked_uploads(stacked_delta, weights, client_ids, client_mask, rows, row_mask,
                        acc.masks, num_items)

    def add(total: Array, x: Array) -> Array:
        keep = accept.reshape((-1,) + (1,) * (x.ndim - 1))
        return total + jnp.sum(jnp.where(keep, x, jnp.zeros((), x.dtype)), axis=0,
                               dtype=x.dtype)

    pos = jnp.searchsorted(jnp.asarray(acc.masks.ids), client_ids)
    absent = jnp.asarray(acc.masks.absent).at[pos].max(client_mask & ~finite)
    real = client_mask.astype(jnp.float32)
    return acc._replace(
        delta_sum=jax.tree.map(add, acc.delta_sum, up.delta),
        row_weight={k: add(acc.row_weight[k], up.row_weight[k]) for k in acc.row_weight},
        weight=add(acc.weight, up.weight),
        accepted=acc.accepted + jnp.sum(real * finite),
        dropped=acc.dropped + jnp.sum(real * (1.0 - finite)),
        masks=acc.masks._replace(absent=absent, overflow=add(acc.masks.overflow, up.overflow)))


@jax.jit
def _mask_correction(sums: SecureUpload, graph: MaskGraph, self_revealed: Array,
                     absent_pos: Array, absent_valid: Array) -> SecureUpload:
    """What the server adds to the masked sums to cancel every leftover mask.

    ``- sum_{i in sum} PRG(b_i)`` (self masks of the members in the sum) plus
    ``sum_d sum_{j in N(d), j in sum} sign(j - d) PRG(s_dj)`` over absent ``d``
    (the survivors' terms for them are ``sign(d - j) PRG(s_jd)``).
    """
    template = jax.tree.map(jnp.zeros_like, sums)
    own = sum_self_masks(graph.ids, self_revealed, graph.self_key, template)
    present = ~graph.absent
    partner_pos = graph.partners[absent_pos]                         # [D, k]
    valid = graph.valid[absent_pos] & present[partner_pos] & absent_valid[:, None]
    pair = neighbor_masks(graph.ids[absent_pos], graph.ids[partner_pos], valid,
                          graph.key, template, 1.0)
    return jax.tree.map(lambda p, s: jnp.sum(p, axis=0, dtype=p.dtype) - s, pair, own)


def lone_members(acc: Accumulator) -> int:
    """How many members in the round's sum have no partner in it.

    Such a member's pair masks all come off (its partners are absent) and so
    does its self mask (it is present): a server that unmasked the round could
    compute its update. Bonawitz et al.'s server aborts a round below its
    threshold; ``FederatedAlgorithm.apply`` aborts a round with a lone member
    (no update applied). A round whose sum is empty (every upload absent or
    rejected) has none.

    Args:
      acc: accumulator whose ``masks`` is set, after the round's last chunk.
    """
    graph = acc.masks
    return int(exposed_members(np.asarray(graph.partners), np.asarray(graph.valid),
                               np.asarray(graph.absent)).sum())


def unmask(acc: Accumulator) -> Accumulator:
    """The plain (float) sums of the round, once every chunk is in.

    Removes the self masks of the members in the sum and the pair masks left
    by absent members (:func:`~feddmr_jax.privacy.secure_agg.revealed_seeds`),
    and decodes the fixed-point sums; the result equals the plain accumulator
    of the same round up to the encoding's rounding (weights and row weights
    exactly). A round in which a member of the sum has no partner in it must be
    aborted instead (:func:`lone_members`; the real protocol aborts it): its
    update would be exposed, and this function refuses it.

    Args:
      acc: accumulator whose ``masks`` is set.

    Returns:
      The accumulator with float sums and ``masks=None``.

    Raises:
      SecureAggOverflow: an accepted upload had to saturate a value (the sum
        would otherwise have wrapped around).
      ValueError: a member of the sum has no partner in it (:func:`lone_members`).
    """
    graph = acc.masks
    absent_host = np.asarray(graph.absent)
    self_revealed, pair_revealed = revealed_seeds(absent_host)
    if lone_members(acc):
        raise ValueError("secure aggregation: a member of the sum has no partner in it; "
                         "the round must be aborted, not unmasked (lone_members)")
    absent = np.flatnonzero(pair_revealed)
    size = 1 << int(np.ceil(np.log2(max(len(absent), 1))))       # few compiled sizes
    pos = np.zeros(size, np.int32)
    pos[:len(absent)] = absent
    sums = SecureUpload(acc.delta_sum, acc.row_weight, acc.weight, graph.overflow)
    correction = _mask_correction(sums, graph, self_revealed, pos,
                                  np.arange(size) < len(absent))
    plain = decode_upload(jax.tree.map(jnp.add, sums, correction), graph.bits)
    saturated = int(plain.overflow)
    if saturated:
        raise SecureAggOverflow(
            f"secure aggregation: {saturated} accepted upload(s) exceeded the fixed-point "
            f"range (+-{member_bound(len(absent_host)) / 2.0 ** int(graph.bits):.4g} per "
            f"value with {len(absent_host)} clients at train.secure_agg_bits="
            f"{int(graph.bits)}); clip the uploads (train.dp_clip or aggregator "
            "clipped_mean), use uniform weights or fewer bits")
    return acc._replace(delta_sum=plain.delta, row_weight=plain.row_weight,
                        weight=plain.weight, masks=None)
