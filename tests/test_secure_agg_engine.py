"""Simulated secure aggregation wired into the engine: the masking graph, masked uploads
that sum to the plain sum, recovery of absent clients, training equal to plain training.

Engine runs use FedNCF on the tiny synthetic dataset of engine_helpers (``ncf_config``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax.federated.aggregation import accumulate, init_accumulator
from feddmr_jax.federated.secure_round import (SecureUpload, decode_upload, encoded_uploads,
                                               init_masked_accumulator, masked_accumulate,
                                               masked_uploads, unmask)
from feddmr_jax.models.base import Leaves
from feddmr_jax.privacy.secure_agg import ring_partners, round_graph, sum_self_masks

from engine_helpers import PLAIN, max_abs_diff, ncf_config, run_rounds
from float_compare import assert_trees_close, bound, max_abs

# Jitted once here: eager lax.scan over mask partners dispatches op by op.
jit_uploads = jax.jit(masked_uploads, static_argnames="num_items")
jit_masked_accumulate = jax.jit(masked_accumulate)

BITS = 20
# Fixed point: each upload value is rounded to a multiple of 2**-BITS, an error <= 2**-(BITS+1)
# = 2**(22 - BITS) ulps of 1 (federated/secure_round.py).
FIXED_POINT_ULPS = 2 ** (22 - BITS)


def _secure_sum_ulps(members: int, term_sum: float) -> float:
    """Budget, in ulps of 1, of a secure sum of ``members`` uploads against the plain
    float32 sum of the same uploads: FIXED_POINT_ULPS per upload, plus <= 1 ulp of a
    partial sum per addition of the plain sum, a partial sum being <= ``term_sum`` (the
    sum of its terms' magnitudes)."""
    return members * (FIXED_POINT_ULPS + term_sum)


def _graph(ids, k, absent=(), seed=0):
    return round_graph(np.asarray(ids), np.asarray(absent, np.int32), k,
                       np.random.default_rng(seed), jax.random.key(seed + 1), BITS)


@pytest.mark.parametrize("members, k", [(12, 4), (12, 0), (5, 8), (2, 2)])
def test_masking_graph_is_symmetric_with_k_distinct_partners(members, k):
    partners, valid = ring_partners(members, k, np.random.default_rng(3))
    width = members - 1 if k == 0 or k >= members - 1 else k
    assert partners.shape == valid.shape == (members, width) and valid.all()
    for p in range(members):
        assert len(set(partners[p].tolist())) == width and p not in partners[p]
        for q in partners[p]:
            assert p in partners[q]


def _chunk_deltas(key, clients, local_rows, num_items, dim):
    k1, k2, k3 = jax.random.split(key, 3)
    rows = jax.vmap(lambda k: jax.random.permutation(k, num_items)[:local_rows])(
        jax.random.split(k1, clients))
    delta = Leaves({"items": 0.05 * jax.random.normal(k2, (clients, local_rows, dim))},
                   {"w": 0.05 * jax.random.normal(k3, (clients, 6))})
    row_mask = jnp.arange(local_rows)[None, :] < jnp.array([local_rows - i % 3
                                                           for i in range(clients)])[:, None]
    return delta, rows.astype(jnp.int32), row_mask


def _flat(upload, c):
    return np.concatenate([np.ravel(v[c]) for v in jax.tree.leaves(upload)])


def test_masked_uploads_look_random_but_sum_to_the_plain_sum():
    clients, num_items, dim = 12, 30, 4
    ids = np.arange(100, 100 + clients) * 3
    delta, rows, row_mask = _chunk_deltas(jax.random.key(0), clients, 10, num_items, dim)
    weights, yes = jnp.ones(clients), jnp.ones(clients, bool)
    graph = _graph(ids, 4)
    masked = jit_uploads(delta, weights, ids, yes, rows, row_mask, graph, num_items=num_items)
    encoded = encoded_uploads(delta, weights, rows, row_mask, graph, num_items)
    assert all(x.dtype == jnp.uint32 for x in jax.tree.leaves(masked))
    raw, seen = decode_upload(encoded, BITS), decode_upload(masked, BITS)
    # The raw dense upload is the weighted delta on the client's used rows, 0 elsewhere.
    np.testing.assert_allclose(raw.delta.dense["w"], delta.dense["w"], atol=2.0**-BITS)
    assert np.mean(np.asarray(raw.delta.tables["items"]) == 0) > 0.5
    assert np.mean(np.asarray(seen.delta.tables["items"]) == 0) < 1e-3  # rows are hidden
    for c in range(clients):
        x, y = _flat(raw, c), _flat(seen, c)
        assert np.linalg.norm(y - x) > 100 * np.linalg.norm(x)
        words = _flat(masked, c).astype(np.float64) / 2.0**32       # uniform on [0, 1)
        assert abs(words.mean() - 0.5) < 0.08 and abs(words.std() - 12**-0.5) < 0.05
    # No linear relation between a leaf's raw and masked values (pooled over clients).
    for x, y in [(raw.delta.tables["items"], seen.delta.tables["items"]),
                 (raw.delta.dense["w"], seen.delta.dense["w"]),
                 (raw.row_weight["items"], seen.row_weight["items"])]:
        x, y = np.ravel(x), np.ravel(y)
        assert abs(np.corrcoef(x, y)[0, 1]) < 4 / np.sqrt(x.size)   # ~4 standard errors
    ring_sum = lambda t, sel=slice(None): jax.tree.map(  # noqa: E731
        lambda v: np.sum(np.asarray(v)[sel], 0, dtype=np.uint32), t)
    float_sum = lambda t, sel=slice(None): jax.tree.map(  # noqa: E731
        lambda v: np.sum(np.asarray(v, np.float64)[sel], 0), t)
    # The pair masks cancel in the sum; the self masks come off with the members' self seeds.
    template = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), masked)
    own = sum_self_masks(jnp.asarray(ids), yes, graph.self_key, template)
    unmasked = jax.tree.map(lambda t, m: np.asarray(t, np.uint32) - np.asarray(m, np.uint32),
                            ring_sum(masked), own)
    # Decoding divides by exp2(BITS) (within an ulp): the decoded ring sum and the float64
    # sum of the decoded uploads differ by <= an ulp of each upload and of the sum.
    assert_trees_close(decode_upload(unmasked, BITS), float_sum(raw), ulps=clients + 1,
                       scale=max_abs(raw), what="unmasked sum")
    assert max_abs_diff(decode_upload(ring_sum(masked), BITS), float_sum(raw)) > 100
    # A partial sum (one chunk of clients) stays masked.
    partial = decode_upload(ring_sum(masked, slice(0, 6)), BITS)
    assert max_abs_diff(partial, float_sum(raw, slice(0, 6))) > 100


def test_server_sums_recover_absent_clients_masks():
    """Chunks into the accumulator; a dropped-out member and a rejected (NaN)
    upload leave masks that only unmask() removes; the result equals plain
    accumulation of the accepted clients, counts exactly."""
    clients, num_items, dim = 12, 30, 4
    ids = np.arange(clients) * 5 + 2
    delta, rows, row_mask = _chunk_deltas(jax.random.key(1), clients, 10, num_items, dim)
    delta = delta._replace(dense={"w": delta.dense["w"].at[7].set(jnp.nan)})  # rejected
    finite = jnp.arange(clients) != 7
    dropped = 4                                     # never uploads
    shared = Leaves({"items": jnp.zeros((num_items, dim))}, {"w": jnp.zeros(6)})
    acc = init_masked_accumulator(shared, _graph(ids, 4, absent=[ids[dropped]]))
    plain = init_accumulator(shared)
    weights = jnp.arange(1.0, clients + 1)          # integer weights ("examples")
    for chunk in (slice(0, 5), slice(5, 12)):
        sel = lambda t: jax.tree.map(lambda v: v[chunk], t)  # noqa: E731
        real = jnp.arange(clients)[chunk] != dropped
        args = (sel(delta), jnp.where(real, weights[chunk], 0.0), finite[chunk], real)
        acc = jit_masked_accumulate(acc, *args, jnp.asarray(ids[chunk]), rows[chunk],
                                    row_mask[chunk])
        plain = accumulate(plain, *args, rows[chunk], row_mask[chunk])
    assert np.asarray(acc.masks.absent).sum() == 2
    still_masked = decode_upload(SecureUpload(acc.delta_sum, acc.row_weight, acc.weight,
                                              acc.masks.overflow), BITS)
    assert max_abs_diff(still_masked.delta, plain.delta_sum) > 100
    assert max_abs_diff(still_masked.row_weight, plain.row_weight) > 100
    recovered = unmask(acc)
    assert recovered.masks is None
    # 10 accepted uploads of weight x delta (the NaN one excluded from the magnitudes).
    terms = float(recovered.weight) * max(float(np.nanmax(np.abs(np.asarray(x))))
                                          for x in jax.tree.leaves(delta))
    assert_trees_close(recovered.delta_sum, plain.delta_sum, scale=1.0,
                       ulps=_secure_sum_ulps(10, terms), what="recovered sum")
    assert max_abs_diff(recovered.row_weight, plain.row_weight) == 0.0
    assert float(recovered.weight) == float(plain.weight) == 78 - 5 - 8  # minus clients 4, 7
    assert (float(recovered.accepted), float(recovered.dropped)) == (10.0, 1.0)


def test_secure_agg_training_equals_plain_training():
    """Two rounds, SGD (smooth in its inputs), row mean over users of each row,
    20% dropouts recovered from pair seeds and 10% NaN uploads rejected."""
    common = dict(optimizer="sgd", lr=0.5, embedding_lr=None, client_dropout=0.2,
                  fault_nan=0.1, mu=0.0, aggregator="clipped_mean", clip_norm=50.0)
    _, _, plain, stats = run_rounds(ncf_config(**common), 2)
    _, _, secure, secure_stats = run_rounds(
        ncf_config(secure_agg=True, secure_agg_neighbors=4, **common), 2)
    assert (stats.accepted, stats.dropped, stats.unreported) == (
        secure_stats.accepted, secure_stats.dropped, secure_stats.unreported)
    assert stats.unreported > 0 and stats.dropped > 0
    # Each round the secure mean is within 2**-(BITS+1) of the float mean, which rounds
    # its sum and the step by a few ulps of the params (2**4); the next round's SGD carries
    # a starting difference along, at most doubled: 2 rounds x 2 x that, of max(1, |params|).
    budget = dict(ulps=2 * 2 * (FIXED_POINT_ULPS + 2**4), scale=max(1.0, max_abs(plain.shared)))
    assert_trees_close(secure.shared, plain.shared, **budget, what="shared")
    assert_trees_close(secure.private_store, plain.private_store, **budget, what="private")


def test_secure_agg_with_dp_equals_dp_alone():
    dp = dict(clients_per_round=12, dp_clip=0.2, dp_noise=0.8, client_dropout=0.2, **PLAIN)
    _, before, plain, _ = run_rounds(ncf_config(**dp), 1)
    _, _, secure, _ = run_rounds(ncf_config(secure_agg=True, **dp), 1)
    # Same local training and noise; the secure mean is within 2**-(BITS+1) of the float
    # mean, which rounds its sum and the step by a few ulps of the params (2**4).
    budget = dict(ulps=FIXED_POINT_ULPS + 2**4, scale=max(1.0, max_abs(plain.shared)))
    assert_trees_close(secure.shared, plain.shared, **budget, what="shared")
    assert max_abs_diff(plain.shared, before.shared) > 1000 * bound(**budget)
