"""Server aggregation and client sampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.aggregation import (accumulate, client_weights, init_accumulator,
                                              is_finite, mean_delta, server_update)
from feddmr_jax.federated.sampling import participants_per_round, sample_clients
from feddmr_jax.models.base import Leaves

SHARED = Leaves({"items": jnp.zeros((4, 1))}, {"w": jnp.zeros(())})


def _chunk(deltas_rows, deltas_w, rows, row_mask, mask=(True, True, False)):
    delta = Leaves({"items": jnp.asarray(deltas_rows, jnp.float32)[..., None]},
                   {"w": jnp.asarray(deltas_w, jnp.float32)})
    return delta, jnp.asarray(rows), jnp.asarray(row_mask), jnp.asarray(mask)


def test_weighted_mean_touched_and_participants():
    # client 0 used rows 0,1; client 1 used row 1; client 2 is padding.
    delta, rows, row_mask, mask = _chunk([[1.0, 2.0], [4.0, 0.0], [9.0, 9.0]], [1.0, 3.0, 9.0],
                                         [[0, 1], [1, 0], [0, 0]],
                                         [[True, True], [True, False], [False, False]])
    weights = client_weights(jnp.array([10.0, 30.0, 5.0]), mask, "uniform")
    acc = accumulate(init_accumulator(SHARED), delta, weights, is_finite(delta), mask, rows,
                     row_mask)
    touched = mean_delta(acc, "touched")
    np.testing.assert_allclose(touched.tables["items"][:, 0], [1.0, 3.0, 0.0, 0.0])
    assert float(touched.dense["w"]) == pytest.approx(2.0)
    participants = mean_delta(acc, "participants")
    np.testing.assert_allclose(participants.tables["items"][:, 0], [0.5, 3.0, 0.0, 0.0])
    weighted = client_weights(jnp.array([10.0, 30.0, 5.0]), mask, "examples")
    acc_w = accumulate(init_accumulator(SHARED), delta, weighted, is_finite(delta), mask,
                       rows, row_mask)
    assert float(mean_delta(acc_w).dense["w"]) == pytest.approx((10 * 1 + 30 * 3) / 40)


def test_non_finite_updates_are_dropped_and_counted():
    delta, rows, row_mask, mask = _chunk([[1.0, np.nan], [4.0, 0.0], [0.0, 0.0]],
                                         [1.0, 3.0, 0.0], [[0, 1], [1, 0], [0, 0]],
                                         [[True, True], [True, False], [False, False]])
    acc = accumulate(init_accumulator(SHARED), delta, client_weights(jnp.ones(3), mask,
                                                                      "uniform"),
                     is_finite(delta), mask, rows, row_mask)
    assert int(acc.dropped) == 1 and int(acc.accepted) == 1
    mean = mean_delta(acc)
    assert np.all(np.isfinite(mean.tables["items"]))
    assert float(mean.dense["w"]) == pytest.approx(3.0)


def test_server_sgd_one_is_fedavg():
    shared = Leaves({"items": jnp.ones((2, 1))}, {"w": jnp.array(2.0)})
    delta = Leaves({"items": jnp.array([[0.5], [-1.0]])}, {"w": jnp.array(0.25)})
    opt = optax.sgd(1.0)
    new, _ = server_update(shared, opt.init(shared), delta, opt)
    np.testing.assert_allclose(new.tables["items"][:, 0], [1.5, 0.0])
    assert float(new.dense["w"]) == pytest.approx(2.25)


def test_sampling_is_seeded_sorted_and_sized():
    key = jax.random.key(0)
    a = sample_clients(key, 3, 100, 10)
    assert len(a) == 10 == len(set(a.tolist())) and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, sample_clients(key, 3, 100, 10))
    assert not np.array_equal(a, sample_clients(key, 4, 100, 10))
    np.testing.assert_array_equal(sample_clients(key, 1, 5, 5), np.arange(5))
    assert participants_per_round(100, fraction=0.25) == 25
    assert participants_per_round(100, count=500) == 100
    assert participants_per_round(100) == 100
    for bad in (dict(fraction=0.0), dict(fraction=1.5), dict(count=0),
                dict(count=3, fraction=0.5)):
        with pytest.raises(ConfigError):
            participants_per_round(100, **bad)
