"""Split learning rates: ``embedding_lr`` moves item tables and private params,
``lr`` moves the network (shared dense params)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from feddmr_jax.config import TrainConfig
from feddmr_jax.models.base import Leaves, ModelParams
from feddmr_jax.train import build_client_optimizer, build_experiment, run_round

from engine_helpers import copy_tree, max_abs_diff, tiny_config


def _params():
    return ModelParams(private=Leaves({"rows": jnp.zeros((2, 3))}, {"user": jnp.zeros(3)}),
                       shared=Leaves({"items": jnp.zeros((4, 3))},
                                     {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}))


def _sgd_step(**train):
    """One SGD update on gradients of ones: each leaf moves by -its lr."""
    opt = build_client_optimizer(TrainConfig(optimizer="sgd", **train))
    params = _params()
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    return updates


def test_embedding_lr_applies_to_tables_and_private_params_lr_to_the_network():
    up = _sgd_step(lr=0.01, embedding_lr=0.5)
    # -lr x 1.0 is the float32 lr negated, exactly.
    for leaf in (up.private.tables["rows"], up.private.dense["user"], up.shared.tables["items"]):
        np.testing.assert_array_equal(leaf, np.float32(-0.5))
    for leaf in (up.shared.dense["w"], up.shared.dense["b"]):
        np.testing.assert_array_equal(leaf, np.float32(-0.01))


def test_without_embedding_lr_every_leaf_uses_lr():
    up = _sgd_step(lr=0.03, embedding_lr=None)
    for leaf in jax.tree.leaves(up):
        np.testing.assert_array_equal(leaf, np.float32(-0.03))      # exactly, as above


def test_the_experiment_trains_with_the_split_rates():
    """A round with a vanishing embedding_lr moves the network only."""
    cfg = tiny_config(optimizer="sgd", lr=0.5, embedding_lr=1e-12, mu=0.0)
    exp = build_experiment(cfg)
    init = copy_tree(exp.algorithm.init(exp.keys["init"]))
    state, _ = run_round(exp, jax.tree.map(jnp.asarray, init), 1)
    assert max_abs_diff(init.shared.dense, state.shared.dense) > 1e-3
    assert max_abs_diff(init.shared.tables, state.shared.tables) < 1e-9
    assert max_abs_diff(init.private_store, state.private_store) < 1e-9
