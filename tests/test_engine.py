"""Equivalence tests that pin the engine's design.

vmap vs per-client loop, sparse vs dense (SGD and Adam), determinism by seed,
no recompilation after the first round.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest

from feddmr_jax.compiler_options import for_backend
from feddmr_jax.federated.algorithm import RoundConfig, build_algorithm
from feddmr_jax.federated.client import gradient_step
from feddmr_jax.methods import get_method
from feddmr_jax.train import (build_client_optimizer, build_experiment, build_loss,
                              evaluate_state, run_round)
from feddmr_jax.timing import CompileWatch

from engine_helpers import adam_reach, copy_tree, max_abs_diff, max_local_steps, tiny_config
from float_compare import (ADAM_ULPS, METRIC_ULPS, SGD_STEP_ULPS, assert_trees_close,
                           assert_trees_equal, bound, max_abs)


def _run(cfg, rounds, *, sequential=False):
    exp = build_experiment(cfg, sequential=sequential)
    state = exp.algorithm.init(exp.keys["init"])
    losses = []
    for r in range(1, rounds + 1):
        state, stats = run_round(exp, state, r)
        losses.append(stats.train_loss)
    return exp, state, losses


@pytest.fixture(scope="module")
def vmap_run():
    return _run(tiny_config(), 2)


def test_vmap_matches_per_client_loop(vmap_run):
    exp, state, losses = vmap_run
    _, state_loop, losses_loop = _run(tiny_config(), 2, sequential=True)
    # Two rounds of Adam, the batched and the per-client programs fused differently:
    # Adam moves an element by lr x a gradient's relative rounding difference per step.
    reach = adam_reach(exp, rounds=2)
    assert_trees_close(state.shared, state_loop.shared, ulps=ADAM_ULPS, scale=reach,
                       what="shared")
    assert_trees_close(state.private_store, state_loop.private_store, ulps=ADAM_ULPS,
                       scale=reach, what="private")
    # Losses: forward passes, ~100 accumulated roundings per logit (2**8 ulps).
    assert_trees_close(losses, losses_loop, ulps=2**8, what="losses")
    m_vmap = evaluate_state(exp, state, exp.val_set)
    m_loop = evaluate_state(exp, state_loop, exp.val_set)
    # Metric means: the same ranks give a few ulps of 1 (float_compare.METRIC_ULPS).
    assert_trees_close(m_vmap, m_loop, ulps=METRIC_ULPS, scale=1.0, what="val metrics")


def test_training_changes_shared_and_private_params(vmap_run):
    exp, state, _ = vmap_run
    init = exp.algorithm.init(exp.keys["init"])
    assert max_abs_diff(init.shared, state.shared) > 1e-3
    assert max_abs_diff(init.private_store, state.private_store) > 1e-3


def test_same_seed_same_metrics_twice(vmap_run):
    exp, state, losses = vmap_run
    exp2, state2, losses2 = _run(tiny_config(), 2)
    assert losses == losses2
    assert max_abs_diff(state.shared, state2.shared) == 0.0
    assert evaluate_state(exp, state, exp.test_set) == evaluate_state(exp2, state2, exp2.test_set)


def test_different_seed_differs(vmap_run):
    _, state, _ = vmap_run
    _, other, _ = _run(tiny_config(seed=1), 2)
    assert max_abs_diff(state.shared, other.shared) > 1e-3


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sparse_equals_dense(optimizer):
    """Gathered local rows + scatter-added row deltas == full tables (mu > 0)."""
    cfg = tiny_config(optimizer=optimizer, mu=0.1, local_epochs=2)
    exp, sparse, _ = _run(cfg, 2)
    _, dense, _ = _run(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, sparse=False)), 2)
    if optimizer == "adam":
        # Another scatter order may round a gradient differently; Adam moves an element
        # by lr x its relative rounding difference per step.
        ulps, scale = ADAM_ULPS, adam_reach(exp, rounds=2)
    else:
        # SGD carries a rounding difference linearly (float_compare.SGD_STEP_ULPS).
        ulps, scale = max_local_steps(exp, rounds=2) * SGD_STEP_ULPS, max_abs(dense.shared)
    assert_trees_close(sparse.shared, dense.shared, ulps=ulps, scale=scale, what="shared")
    assert_trees_close(sparse.private_store, dense.private_store, ulps=ulps, scale=scale,
                       what="private")


def test_no_recompilation_after_first_round():
    cfg = tiny_config(client_fraction=0.5)
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    state, _ = run_round(exp, state, 1)
    # Warm every shape class once (a partial round may miss some), then count.
    for r in range(2, 6):
        state, _ = run_round(exp, state, r)
    evaluate_state(exp, state, exp.val_set)
    watch = CompileWatch()
    for r in range(6, 9):
        state, _ = run_round(exp, state, r)
    evaluate_state(exp, state, exp.val_set)
    assert watch.compiles == 0


def test_full_participation_compiles_only_in_round_one():
    exp = build_experiment(tiny_config())
    state = exp.algorithm.init(exp.keys["init"])
    state, _ = run_round(exp, state, 1)
    watch = CompileWatch()
    for r in range(2, 4):
        state, _ = run_round(exp, state, r)
    assert watch.compiles == 0


def _round_with_loss(exp, loss_fn, state):
    """One round of ``exp`` with its algorithm rebuilt around ``loss_fn`` (a plain
    gradient step of that loss; nothing else from ``build_loss``)."""
    t = exp.cfg.train
    algorithm = build_algorithm(exp.model, gradient_step(loss_fn, build_client_optimizer(t)),
                                optax.sgd(1.0),
                                RoundConfig(num_clients=exp.split.num_users,
                                            num_items=exp.split.num_items,
                                            local_epochs=t.local_epochs, batch_size=t.batch_size,
                                            # as build_experiment compiles it (bitwise equal)
                                            compiler_options=for_backend(
                                                get_method(t.model).cpu_compiler_options)))
    state, _ = run_round(dataclasses.replace(exp, algorithm=algorithm), copy_tree(state), 1)
    return state


def test_mu_zero_is_plain_fedavg():
    """FedAvg (BCE alone, no proximal term anywhere) == mu = 0 through the composed
    loss (an explicit proximal(0) term) == the experiment built with mu = 0; and
    mu > 0, through build_experiment, differs from FedAvg and matches a hand-composed
    BCE + proximal(mu) loss."""
    from feddmr_jax.losses import bce, compose, proximal

    cfg = tiny_config(mu=0.0, local_epochs=2)
    exp = build_experiment(cfg)
    init = copy_tree(exp.algorithm.init(exp.keys["init"]))
    fedavg = _round_with_loss(exp, compose(bce=bce(exp.model.apply)), init)
    mu_zero = _round_with_loss(exp, compose(bce=bce(exp.model.apply), proximal=proximal(0.0)),
                               init)
    # A zero gradient term: another program (fused differently), the same math; one
    # round of Adam (float_compare.ADAM_ULPS), far below mu = 1's difference (below).
    reach = adam_reach(exp, rounds=1)
    assert_trees_close(fedavg.shared, mu_zero.shared, ulps=ADAM_ULPS, scale=reach,
                       what="mu = 0 term")
    built, _ = run_round(exp, copy_tree(init), 1)
    assert max_abs_diff(fedavg.shared, built.shared) == 0.0
    assert "proximal" not in build_loss(exp.model, cfg.train)(*_loss_args(exp, init))[1]

    mu = 1.0
    exp_mu = build_experiment(tiny_config(mu=mu, local_epochs=2))
    assert max_abs_diff(init.shared, exp_mu.algorithm.init(exp_mu.keys["init"]).shared) == 0.0
    built_mu, _ = run_round(exp_mu, copy_tree(init), 1)
    assert max_abs_diff(fedavg.shared, built_mu.shared) > 100 * bound(ulps=ADAM_ULPS,
                                                                      scale=reach)
    hand_mu = _round_with_loss(exp, compose(bce=bce(exp.model.apply), proximal=proximal(mu)),
                               init)
    # build_loss composes the same terms in the same order: the same program, bit for bit.
    assert_trees_equal(hand_mu.shared, built_mu.shared, what="hand-composed mu")
    # The proximal pull keeps the round's step smaller than FedAvg's.
    assert max_abs_diff(init.shared, built_mu.shared) < max_abs_diff(init.shared, fedavg.shared)


def _loss_args(exp, state):
    from feddmr_jax.losses import Batch
    from feddmr_jax.models.base import Context, ModelParams

    private = jax.tree.map(lambda s: s[0], state.private_store)
    n = exp.model.history_len
    batch = Batch(np.array([1, 2]), np.array([1.0, 0.0]), np.array([True, True]),
                  Context(np.zeros(n, np.int32), np.zeros(n, bool)))
    return ModelParams(private, state.shared), state.shared, batch


def test_huge_mu_keeps_shared_params_at_global():
    """With SGD at lr = 1/mu, each step lands at global - grad/mu: deviation -> 0."""
    mu = 1e6
    exp = build_experiment(tiny_config(optimizer="sgd", mu=mu, lr=1.0 / mu, embedding_lr=None,
                                        local_epochs=3))
    state = exp.algorithm.init(exp.keys["init"])
    before = copy_tree(state.shared)
    state, _ = run_round(exp, state, 1)
    # Each step lands at global - lr * grad (lr = 1e-6, |grad| < 1: < 8 ulps of 1) up to
    # the rounding of the step itself (a few ulps of a param, |param| < 1): 2**6 ulps of 1.
    assert_trees_close(state.shared, before, ulps=2**6, scale=1.0, what="huge mu")
    # ... whereas without the proximal term the same schedule moves them.
    exp0 = build_experiment(tiny_config(optimizer="sgd", mu=0.0, lr=0.5, local_epochs=3))
    state0 = exp0.algorithm.init(exp0.keys["init"])
    before0 = copy_tree(state0.shared)
    state0, _ = run_round(exp0, state0, 1)
    assert max_abs_diff(before0, state0.shared) > 1e-3


def test_server_receives_no_private_leaf():
    """The per-client upload (delta) has exactly the shared structure: no user embedding."""
    from feddmr_jax.federated.parallel import make_client_fn
    from feddmr_jax.federated.rounds import plan_round

    exp = build_experiment(tiny_config())
    state = exp.algorithm.init(exp.keys["init"])
    chunk = plan_round(exp.planner, np.arange(exp.split.num_users), 1)[0]
    row = jax.tree.map(lambda x: x[0], chunk)
    private = jax.tree.map(lambda s: s[row.client_ids], state.private_store)
    from feddmr_jax.federated.client import gradient_step, make_client_update

    client_update = make_client_update(
        gradient_step(build_loss(exp.model, exp.cfg.train), optax.adam(0.01)),
        local_epochs=1, batch_size=16)
    out = make_client_fn(client_update, sparse=True, num_items=exp.split.num_items)(
        state.shared, private, row, jax.random.key(0))
    upload = out.delta
    assert jax.tree.structure(upload) == jax.tree.structure(state.shared)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(upload)]
    assert not any("user" in p for p in paths)
    assert set(upload.tables) == set(state.shared.tables) == {"items"}


@pytest.mark.parametrize("model_name", ["feddmr", "pfedrec", "fedrap"])
def test_private_store_init_in_blocks_equals_one_vmap(model_name, monkeypatch):
    """Blocks bound the init's memory and change no client's params (each from its own key),
    the last block overlapping the one before it included."""
    from feddmr_jax.federated import private_store
    from feddmr_jax.methods import build_model, model_config_class

    cfg = tiny_config().model if model_name == "feddmr" else model_config_class(model_name)()
    model = build_model(model_name, cfg, 37)
    key = jax.random.key(5)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, np.arange(23))
    whole = jax.vmap(model.init_private)(keys)
    per_client = private_store.store_bytes(model, 1)
    monkeypatch.setattr(private_store, "INIT_BLOCK_BYTES", 4 * per_client + 1)   # 4 clients
    blocked = private_store.init_private_store(model, key, 23)   # 6 blocks, the last: 19-22
    assert jax.tree.structure(blocked) == jax.tree.structure(whole)
    assert max_abs_diff(blocked, whole) == 0.0
