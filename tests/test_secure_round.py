"""Secure aggregation under its own threat model (issue 14): self masks, a
received-then-rejected upload, the fixed-point range, example weighting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax import cli
from feddmr_jax.config import TrainConfig
from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.aggregation import accumulate, init_accumulator
from feddmr_jax.federated.secure_round import (SecureAggOverflow, decode_upload,
                                               encoded_uploads, init_masked_accumulator,
                                               lone_members, masked_accumulate,
                                               masked_uploads, unmask, upload_masks)
from feddmr_jax.models.base import Leaves
from feddmr_jax.privacy.plan import check_secure_range
from feddmr_jax.privacy.secure_agg import (max_clip, neighbor_masks, revealed_seeds,
                                           round_graph)

from engine_helpers import max_abs_diff
from float_compare import assert_trees_close

BITS = 20
jit_accumulate = jax.jit(masked_accumulate)
jit_uploads = jax.jit(masked_uploads, static_argnames="num_items")


def graph_of(ids, k, absent=(), seed=0):
    return round_graph(np.asarray(ids), np.asarray(absent, np.int32), k,
                       np.random.default_rng(seed), jax.random.key(seed + 1), BITS)


def chunk(clients, num_items=20, dim=3, local=6, scale=0.05, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    rows = jax.vmap(lambda k: jax.random.permutation(k, num_items)[:local])(
        jax.random.split(k1, clients)).astype(jnp.int32)
    delta = Leaves({"items": scale * jax.random.normal(k2, (clients, local, dim))},
                   {"w": scale * jax.random.normal(k3, (clients, 5))})
    return delta, rows, jnp.ones((clients, local), bool)


def ring_sub(a, b):
    return jax.tree.map(lambda x, y: np.asarray(x, np.uint32) - np.asarray(y, np.uint32), a, b)


def test_rejected_upload_cannot_be_unmasked_but_the_survivors_sum_is_exact():
    """Member 2's upload is received and then rejected, member 4 drops out.
    For each member the server learns its self seed or its pair seeds, never
    both; the rejected upload minus every mask the server can rebuild still
    carries the self mask (far from the update), and only that self mask
    (which the server never learns) separates it from the encoded update.
    The sum over the accepted members is exact."""
    clients, num_items = 8, 20
    ids = np.arange(clients) * 3 + 1
    delta, rows, row_mask = chunk(clients, num_items)
    real = jnp.arange(clients) != 4
    weights = jnp.where(real, 1.0, 0.0)               # the engine's client_weights
    finite = jnp.arange(clients) != 2                 # finite data, rejected by the server
    graph = graph_of(ids, 4, absent=[ids[4]])
    shared = Leaves({"items": jnp.zeros((num_items, 3))}, {"w": jnp.zeros(5)})
    acc = jit_accumulate(init_masked_accumulator(shared, graph), delta, weights, finite,
                         real, jnp.asarray(ids), rows, row_mask)
    self_revealed, pair_revealed = revealed_seeds(np.asarray(acc.masks.absent))
    assert not np.any(self_revealed & pair_revealed)
    assert pair_revealed[2] and not self_revealed[2]          # rejected: pair seeds only
    assert pair_revealed[4] and self_revealed[[0, 1, 3, 5, 6, 7]].all()

    view = jit_uploads(delta, weights, jnp.asarray(ids), real, rows, row_mask, graph,
                       num_items=num_items)                   # what the server received
    encoded = encoded_uploads(delta, weights, rows, row_mask, graph, num_items)
    one = lambda t, c: jax.tree.map(lambda x: x[c], t)        # noqa: E731
    template = jax.tree.map(jnp.zeros_like, one(encoded, 0))
    # Every pair mask of member 2 (all of its pair seeds are revealed).
    pair_2 = jax.tree.map(lambda x: x[0], neighbor_masks(
        jnp.asarray(ids[[2]]), jnp.asarray(ids[graph.partners[[2]]]),
        jnp.ones((1, graph.partners.shape[1]), bool), graph.key, template, 1.0))
    stripped = ring_sub(one(view, 2), pair_2)
    raw = decode_upload(one(encoded, 2), BITS)
    seen = decode_upload(stripped, BITS)
    size = max(max_abs_diff(raw.delta, template.delta), 1e-3)     # largest |update value|
    assert max_abs_diff(seen.delta, raw.delta) > 1000 * size
    # Only the self mask is left: without it (no self masks, as before) the
    # server would hold the update itself.
    _, own = upload_masks(jnp.asarray(ids), real, graph, template)
    assert max_abs_diff(ring_sub(stripped, one(own, 2)), one(encoded, 2)) == 0

    plain = accumulate(init_accumulator(shared), delta, weights, finite, real, rows, row_mask)
    recovered = unmask(acc)
    # Each of the 6 accepted uploads is rounded to a multiple of 2**-BITS (<= 2**-(BITS+1),
    # 2**(22 - BITS) ulps of 1); the plain float32 sum rounds each addition by <= 1 ulp of
    # a partial sum, itself <= 6 x max|delta| (weights 1): a worst-case bound.
    members = int(float(plain.weight))
    terms = members * float(np.max(np.abs(np.asarray(delta.tables["items"]))))
    terms = max(terms, members * float(np.max(np.abs(np.asarray(delta.dense["w"])))))
    assert_trees_close(recovered.delta_sum, plain.delta_sum, scale=1.0,
                       ulps=members * (2 ** (22 - BITS) + terms), what="survivors' sum")
    assert float(recovered.weight) == float(plain.weight) == 6.0


def test_fixed_point_overflow_is_detected_and_reported():
    """8 uploads of 300 per value at 20 bits sum to 2400, beyond +-2048: the
    sum would wrap; it is refused with the count instead."""
    clients, num_items = 8, 10
    ids = np.arange(clients)
    delta, rows, row_mask = chunk(clients, num_items, local=4)
    delta = delta._replace(dense={"w": jnp.full((clients, 5), 300.0)})
    shared = Leaves({"items": jnp.zeros((num_items, 3))}, {"w": jnp.zeros(5)})
    yes = jnp.ones(clients, bool)
    acc = jit_accumulate(init_masked_accumulator(shared, graph_of(ids, 0)), delta,
                         jnp.ones(clients), yes, yes, jnp.asarray(ids), rows, row_mask)
    with pytest.raises(SecureAggOverflow, match=r"8 accepted upload\(s\) exceeded"):
        unmask(acc)
    # In range (the same uploads scaled down): no error, exact sum.
    small = delta._replace(dense={"w": jnp.full((clients, 5), 3.0)})
    acc = jit_accumulate(init_masked_accumulator(shared, graph_of(ids, 0)), small,
                         jnp.ones(clients), yes, yes, jnp.asarray(ids), rows, row_mask)
    np.testing.assert_allclose(np.asarray(unmask(acc).delta_sum.dense["w"]), 24.0)


def test_example_weights_are_refused_or_caught():
    """Secure aggregation with --weighting examples: a one-line error before
    training; used directly, the engine reports the overflow instead of
    returning a wrapped sum."""
    with pytest.raises(ConfigError, match="weighting='examples' cannot be used with train.secure"):
        TrainConfig(secure_agg=True, weighting="examples", aggregator="clipped_mean").validate()
    clients, num_items = 12, 10
    ids = np.arange(clients)
    delta, rows, row_mask = chunk(clients, num_items, local=4, scale=0.1)
    weights = jnp.full(clients, 2000.0)             # example counts of active users
    shared = Leaves({"items": jnp.zeros((num_items, 3))}, {"w": jnp.zeros(5)})
    yes = jnp.ones(clients, bool)
    acc = jit_accumulate(init_masked_accumulator(shared, graph_of(ids, 4)), delta, weights,
                         yes, yes, jnp.asarray(ids), rows, row_mask)
    with pytest.raises(SecureAggOverflow):
        unmask(acc)


def test_cli_refuses_example_weighting_with_secure_agg(capsys):
    code = cli.main(["train", "--dataset", "synthetic", "--rounds", "1", "--secure-agg",
                     "--weighting", "examples", "--aggregator", "clipped_mean"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "train.weighting='examples' cannot be used with train.secure_agg" in err


def test_range_check_refuses_sums_that_can_wrap():
    check_secure_range(1.0, 64, 20)                  # 64 <= 2048: fine
    with pytest.raises(ConfigError, match=r"can sum to 6400 .* lower train.secure_agg_bits to 18"):
        check_secure_range(100.0, 64, 20)
    with pytest.raises(ConfigError, match="needs a bound"):
        check_secure_range(None, 64, 20)
    assert 64 * max_clip(64, 20) < 2.0 ** 11 <= 64 * (max_clip(64, 20) + 0.01)


def test_member_without_surviving_partner_cannot_be_unmasked():
    """Ring k = 2: both partners of one member drop out, so its upload would be
    exposed: the round has a lone member and unmask refuses it (the round is
    aborted instead, tests/test_secure_abort.py)."""
    ids = np.arange(6)
    graph = graph_of(ids, 2)
    lonely = 0
    gone = ids[graph.partners[lonely]]
    graph = graph_of(ids, 2, absent=gone)
    delta, rows, row_mask = chunk(6, 10, local=3)
    shared = Leaves({"items": jnp.zeros((10, 3))}, {"w": jnp.zeros(5)})
    real = ~np.isin(ids, gone)
    acc = jit_accumulate(init_masked_accumulator(shared, graph), delta, jnp.ones(6),
                         jnp.ones(6, bool), jnp.asarray(real), jnp.asarray(ids), rows, row_mask)
    assert lone_members(acc) == 1
    with pytest.raises(ValueError, match="must be aborted"):
        unmask(acc)
