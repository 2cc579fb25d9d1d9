"""Simulated secure aggregation across a round's chunks (``train.secure_agg``).

The round follows Bonawitz et al. 2017 (CCS, "Practical secure aggregation for
privacy-preserving machine learning") on the sparse masking graph of Bell et al.
2020 (CCS, "Secure single-server aggregation with (poly)logarithmic overhead"):

1. **Graph.** When the round's ``S`` clients are sampled, the server fixes a
   masking graph among them (:func:`round_graph`): the members are placed on a
   ring in random order and each is paired with the ``k / 2`` members before
   and after it (a random Harary graph; ``k >= S - 1`` or ``k = 0`` gives the
   complete graph). Partners share a seed (:func:`~feddmr_jax.privacy.secure_agg.pair_seed`; in
   the real protocol it comes from a Diffie-Hellman key agreement).
2. **Dense upload in a finite ring.** A client that finished training builds
   (:func:`masked_uploads`) its weighted delta *scattered into full item
   tables*, its weighted row-use indicator per table, its dense leaves and its
   weight; encodes them in fixed point in ``Z_{2^32}`` (``round(x *
   2^bits)``; the integer weights with 0 fractional bits) and adds ``sum_j
   sign(j - i) * PRG(s_ij)`` of *uniform* 32-bit masks over its partners. Every
   upload has the same shape and is uniformly distributed on its own, so the
   server learns neither its values nor which item rows the client used (a
   sparse row upload would reveal them).
3. **Server sums.** The chunk step adds the accepted masked uploads into the
   round's :class:`~feddmr_jax.federated.aggregation.Accumulator` with
   wrapping ``uint32`` addition (:func:`masked_accumulate`). Clients arrive in
   chunks, so a partial sum still holds the masks of every graph edge that
   leaves the clients seen so far (the ring is connected: every proper subset
   has such an edge), and is uniformly random too.
4. **Absent members.** A member that dropped out after the graph was fixed
   (fault injection ``--dropout``) or whose upload the server rejects (in the
   simulator: a non-finite update; a deployment would need a range proof or
   bounds check) leaves its pair masks uncancelled in its partners' uploads.
   :func:`unmask` rebuilds them from the pair seeds (in the real protocol:
   from the survivors' secret shares of those seeds) and removes them, then
   decodes the sums. Masks cancel *exactly* (integer arithmetic), so the
   result equals the plain sum of the quantized uploads.

Precision and range: each uploaded value is rounded to a multiple of
``2^-bits`` (error <= ``2^-(bits+1)`` per client and coordinate; ``bits = 20``:
5e-7), and each coordinate of the round's *sum* must lie in ``[-2^(31-bits),
2^(31-bits))`` (``bits = 20``: +-2048), or it wraps around. Values beyond
+-2^(31-bits) in one upload saturate. Clipping (``train.dp_clip`` or the
``clipped_mean`` aggregator) bounds every upload; otherwise choose ``bits`` for
the expected magnitudes (``train.secure_agg_bits``).

What the server learns: the round's sum of uploads, the per-item-row sum of
client weights (how many participants used each item, in aggregate), who was
sampled, who reported and whose upload was rejected.

This is a simulation: ``MaskGraph.key`` lets whoever holds the accumulator
recompute every mask. Cost per client: ``k`` PRG draws of the dense upload
size (``sum of table sizes + dense params``) and the dense upload itself
(``chunk clients x num_items x d`` values per chunk; lower ``train.chunk_size``
for large catalogues).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from feddmr_jax.federated.aggregation import Accumulator, init_accumulator
from feddmr_jax.models.base import Leaves
from feddmr_jax.privacy.secure_agg import MaskGraph, neighbor_masks

Array = jax.Array


class SecureUpload(NamedTuple):
    """What one client uploads under secure aggregation (before encoding and masking).

    Attributes:
      delta: weighted delta with full tables ``[num_items, d]`` (zero on the
        rows the client did not use) and the dense leaves.
      row_weight: per table, ``[num_items]`` the client's weight on the rows
        it used, 0 elsewhere.
      weight: scalar client weight.
    """

    delta: Leaves
    row_weight: dict[str, Array]
    weight: Array


def _encode(x: Array, bits: Array) -> Array:
    """``round(x * 2^bits)`` in ``Z_{2^32}`` (two's complement; saturating)."""
    q = jnp.round(x.astype(jnp.float32) * jnp.exp2(bits.astype(jnp.float32)))
    q = jnp.clip(q, -2.0**31, 2.0**31 - 128)   # largest float32 below 2^31
    return jax.lax.bitcast_convert_type(q.astype(jnp.int32), jnp.uint32)


def _decode(u: Array, bits: Array) -> Array:
    """Inverse of :func:`_encode` for a (wrapped) sum."""
    q = jax.lax.bitcast_convert_type(u, jnp.int32).astype(jnp.float32)
    return q / jnp.exp2(bits.astype(jnp.float32))


def _ring_code(upload: SecureUpload, bits: Array, fn) -> SecureUpload:
    """Applies ``fn(x, bits)`` to the delta and ``fn(x, 0)`` to the integer weights."""
    zero = jnp.zeros((), jnp.int32)
    return SecureUpload(jax.tree.map(lambda x: fn(x, bits), upload.delta),
                        {k: fn(w, zero) for k, w in upload.row_weight.items()},
                        fn(upload.weight, zero))


def _dense_upload(delta: Leaves, weight: Array, rows: Array, row_mask: Array,
                  num_items: int) -> SecureUpload:
    """One client's dense upload (rows ``[L]`` scattered into ``[num_items]``)."""
    def table(d: Array) -> Array:
        d = jnp.where(row_mask[:, None], weight * d, 0.0)
        return jnp.zeros((num_items,) + d.shape[1:], d.dtype).at[rows].add(d)

    tables = {k: table(d) for k, d in delta.tables.items()}
    used = jnp.zeros((num_items,), jnp.float32).at[rows].add(weight * row_mask)
    dense = jax.tree.map(lambda x: weight * x, delta.dense)
    return SecureUpload(Leaves(tables, dense), {k: used for k in delta.tables}, weight)


def masked_uploads(stacked_delta: Leaves, weights: Array, accept: Array,
                   client_ids: Array, client_mask: Array, rows: Array, row_mask: Array,
                   graph: MaskGraph, num_items: int) -> SecureUpload:
    """The encoded, masked dense uploads of a chunk of clients (client axis 0).

    Args:
      stacked_delta: ``[C, ...]`` deltas (tables ``[C, L, d]`` for ``rows``).
      weights: ``[C]`` aggregation weights (integers).
      accept: ``[C]`` bool, False = rejected or padding (upload zeroed).
      client_ids, client_mask: ``[C]`` ids and real-client flags.
      rows, row_mask: ``[C, L]`` global row ids and which rows were used.
      graph: the round's :class:`MaskGraph`.
      num_items: catalogue size.

    Returns:
      :class:`SecureUpload` of ``uint32`` leaves with a leading ``[C]`` axis;
      padding clients get no mask.
    """
    weights = jnp.where(accept, weights, 0.0)
    clean = jax.tree.map(
        lambda x: jnp.where(accept.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0), stacked_delta)
    raw = jax.vmap(_dense_upload, in_axes=(0, 0, 0, 0, None))(
        clean, weights, rows, row_mask, num_items)
    bits = jnp.asarray(graph.bits)
    encoded = _ring_code(raw, bits, _encode)
    ids = jnp.asarray(graph.ids)
    pos = jnp.searchsorted(ids, client_ids)
    partner_ids = ids[jnp.asarray(graph.partners)[pos]]
    valid = jnp.asarray(graph.valid)[pos] & client_mask[:, None]
    template = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), encoded)
    masks = neighbor_masks(client_ids, partner_ids, valid, graph.key, template, 1.0)
    return jax.tree.map(jnp.add, encoded, masks)


def decode_upload(upload: SecureUpload, bits: Array | int) -> SecureUpload:
    """Float values of encoded uploads or sums (for unmasking and for tests)."""
    return _ring_code(upload, jnp.asarray(bits, jnp.int32), _decode)


def init_masked_accumulator(shared: Leaves, masks: MaskGraph) -> Accumulator:
    """The server's empty round sums under secure aggregation (``uint32`` zeros)."""
    acc = init_accumulator(shared, None, masks)
    ring = lambda t: jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.uint32), t)  # noqa: E731
    return acc._replace(delta_sum=ring(acc.delta_sum), row_weight=ring(acc.row_weight),
                        weight=ring(acc.weight))


def masked_accumulate(acc: Accumulator, stacked_delta: Leaves, weights: Array,
                      finite: Array, client_mask: Array, client_ids: Array,
                      rows: Array, row_mask: Array) -> Accumulator:
    """Adds a chunk's accepted masked uploads to the running (masked) sums.

    Same arguments as :func:`feddmr_jax.federated.aggregation.accumulate`, plus
    the clients' ids; ``acc`` comes from :func:`init_masked_accumulator`.
    Rejected real clients are marked absent.
    """
    accept = finite & client_mask
    num_items = next(iter(acc.row_weight.values())).shape[0] if acc.row_weight else 0
    up = masked_uploads(stacked_delta, weights, accept, client_ids, client_mask, rows,
                        row_mask, acc.masks, num_items)

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
        masks=acc.masks._replace(absent=absent))


@jax.jit
def _absent_correction(sums: SecureUpload, graph: MaskGraph, absent_pos: Array,
                       absent_valid: Array) -> SecureUpload:
    """``sum_d sum_{j in N(d), j present} sign(j - d) PRG(s_dj)`` over absent ``d``.

    Adding it to the survivors' masked sum cancels the masks they hold for
    absent partners (their terms are ``sign(d - j) PRG(s_jd)``).
    """
    present = ~graph.absent
    partner_pos = graph.partners[absent_pos]                         # [D, k]
    valid = graph.valid[absent_pos] & present[partner_pos] & absent_valid[:, None]
    template = jax.tree.map(jnp.zeros_like, sums)
    masks = neighbor_masks(graph.ids[absent_pos], graph.ids[partner_pos], valid,
                           graph.key, template, 1.0)
    return jax.tree.map(lambda m: jnp.sum(m, axis=0, dtype=m.dtype), masks)


def unmask(acc: Accumulator) -> Accumulator:
    """The plain (float) sums of the round, once every chunk is in.

    Removes the masks left by absent members and decodes the fixed-point sums;
    the result equals the plain accumulator of the same round up to the
    encoding's rounding (weights and row weights exactly).

    Args:
      acc: accumulator whose ``masks`` is set.

    Returns:
      The accumulator with float sums and ``masks=None``.
    """
    graph = acc.masks
    sums = SecureUpload(acc.delta_sum, acc.row_weight, acc.weight)
    absent = np.flatnonzero(np.asarray(graph.absent))
    if len(absent):
        size = 1 << int(np.ceil(np.log2(len(absent))))         # few compiled sizes
        pos = np.zeros(size, np.int32)
        pos[:len(absent)] = absent
        correction = _absent_correction(sums, graph, pos, np.arange(size) < len(absent))
        sums = jax.tree.map(jnp.add, sums, correction)
    plain = decode_upload(sums, graph.bits)
    return acc._replace(delta_sum=plain.delta, row_weight=plain.row_weight,
                        weight=plain.weight, masks=None)
