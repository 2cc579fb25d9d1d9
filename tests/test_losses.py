"""Loss terms, each against a hand computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax.losses import (Batch, bce, binary_cross_entropy, compose, l2, masked_mean,
                               proximal)
from feddmr_jax.models.base import Context, Leaves, ModelParams

CTX = Context(jnp.zeros(0, jnp.int32), jnp.zeros(0, bool))


def _params(w_shared, w_private):
    return ModelParams(private=Leaves({}, {"w": jnp.asarray(w_private)}),
                       shared=Leaves({"items": jnp.asarray(w_shared)}, {}))


def test_bce_matches_formula_and_mask():
    logits = jnp.array([2.0, -1.0, 0.5])
    labels = jnp.array([1.0, 0.0, 0.0])
    sig = 1 / (1 + np.exp(-np.array([2.0, -1.0, 0.5])))
    expected = -(np.array([1, 0, 0]) * np.log(sig) + np.array([0, 1, 1]) * np.log(1 - sig))
    np.testing.assert_allclose(binary_cross_entropy(logits, labels), expected, rtol=1e-6)
    mask = jnp.array([True, True, False])
    got = binary_cross_entropy(logits, labels, where=mask)
    np.testing.assert_allclose(got, [expected[0], expected[1], 0.0], rtol=1e-6)
    assert float(masked_mean(got, mask)) == pytest.approx(expected[:2].mean(), rel=1e-6)


def test_data_term_uses_model_logits():
    def apply(params, items, context, *, key=None):
        return params.shared.tables["items"][items, 0] * params.private.dense["w"]

    params = _params([[1.0], [-2.0], [3.0]], 0.5)
    batch = Batch(jnp.array([0, 1, 2]), jnp.array([1.0, 0.0, 1.0]),
                  jnp.array([True, True, False]), CTX)
    got = bce(apply)(params, params.shared, batch)
    z = np.array([0.5, -1.0])
    expected = np.mean([np.log1p(np.exp(-z[0])), np.log1p(np.exp(z[1]))])
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_proximal_is_half_mu_squared_distance_on_shared_only():
    params = _params([[1.0, 2.0]], 100.0)               # private value must not count
    global_shared = Leaves({"items": jnp.array([[0.0, 4.0]])}, {})
    got = proximal(0.3)(params, global_shared, None)
    assert float(got) == pytest.approx(0.5 * 0.3 * (1.0 + 4.0))
    grad = jax.grad(lambda p: proximal(0.3)(p, global_shared, None))(params)
    np.testing.assert_allclose(grad.shared.tables["items"], [[0.3, -0.6]], rtol=1e-6)
    assert float(grad.private.dense["w"]) == 0.0


def test_proximal_dense_scope_leaves_item_rows_free():
    params = ModelParams(private=Leaves({}, {}),
                         shared=Leaves({"items": jnp.array([[1.0, 2.0]])}, {"w": jnp.array(3.0)}))
    global_shared = Leaves({"items": jnp.array([[0.0, 4.0]])}, {"w": jnp.array(1.0)})
    assert float(proximal(0.5, "dense")(params, global_shared, None)) == pytest.approx(0.25 * 4)
    assert float(proximal(0.5)(params, global_shared, None)) == pytest.approx(0.25 * 9)
    grad = jax.grad(lambda p: proximal(0.5, "dense")(p, global_shared, None))(params)
    assert not np.any(grad.shared.tables["items"]) and float(grad.shared.dense["w"]) == 1.0
    with pytest.raises(ValueError, match="scope"):
        proximal(0.5, "tables")


def test_l2_and_compose_with_a_user_term():
    params = _params([[1.0, 2.0]], 3.0)
    batch = Batch(jnp.array([0]), jnp.array([1.0]), jnp.array([True]), CTX)  # reaches row 0
    assert float(l2(0.1)(params, params.shared, batch)) == pytest.approx(0.05 * 14.0)

    def mine(params, global_shared, batch):
        return 2.0 * jnp.sum(params.private.dense["w"])

    loss_fn = compose(reg=l2(0.1), mine=mine)
    total, parts = loss_fn(params, params.shared, batch)
    assert set(parts) == {"reg", "mine"}
    assert float(total) == pytest.approx(0.7 + 6.0)
    grads = jax.grad(lambda p: loss_fn(p, p.shared, batch)[0])(params)
    assert float(grads.private.dense["w"]) == pytest.approx(0.1 * 3.0 + 2.0)
    with pytest.raises(ValueError):
        compose()
