"""Engine equivalences for the baselines: sparse vs dense tables (FedMF, FedNCF)
and the vmapped client axis vs a per-client Python loop (FedMF, FedNCF, PFedRec)."""

from __future__ import annotations

import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.train import build_experiment, run_round

from engine_helpers import adam_reach, max_local_steps
from float_compare import ADAM_ULPS, SGD_STEP_ULPS, assert_trees_close

DATA = {"dataset": "synthetic", "synthetic_users": 24, "synthetic_items": 40,
        "synthetic_interactions": 8.0, "eval_negatives": 10}
ROUNDS = 2


def _config(model: str, **train) -> config_lib.RunConfig:
    return config_lib.build_config({
        "data": DATA, "model": {"dim": 4},
        "train": {"model": model, "rounds": ROUNDS, "batch_size": 16, "chunk_size": 8, **train}})


def _run(cfg, *, sequential=False):
    exp = build_experiment(cfg, sequential=sequential)
    state = exp.algorithm.init(exp.keys["init"])
    losses = []
    for r in range(1, ROUNDS + 1):
        state, stats = run_round(exp, state, r)
        losses.append(stats.train_loss)
    return exp, state, losses


def _assert_same_training(a, b, model: str) -> None:
    """Two runs ``(exp, state, losses)`` of the same math, rounded in another order."""
    exp, state_a, loss_a = a
    _, state_b, loss_b = b
    if model == "pfedrec":
        # Its own SGD (two updates per batch: head, then items) carries a rounding
        # difference linearly (SGD_STEP_ULPS per update, of the largest param).
        budget = dict(ulps=2 * max_local_steps(exp, ROUNDS) * SGD_STEP_ULPS)
    else:
        # Adam moves an element by lr x a gradient's relative rounding difference per step.
        budget = dict(ulps=ADAM_ULPS, scale=adam_reach(exp, ROUNDS))
    assert_trees_close(state_a.shared, state_b.shared, what="shared", **budget)
    assert_trees_close(state_a.private_store, state_b.private_store, what="private", **budget)
    # Losses: means over clients and steps of batch means of logits (~100 roundings).
    assert_trees_close(loss_a, loss_b, ulps=2**8, what="losses")


@pytest.mark.parametrize("model", ["fedmf", "fedncf"])
def test_sparse_equals_dense(model):
    """Gathered item rows + scatter-added deltas == full tables (Adam, mu > 0, 2 epochs)."""
    extra = {"mu": 0.1, "local_epochs": 2}
    sparse = _run(_config(model, sparse=True, **extra))
    dense = _run(_config(model, sparse=False, **extra))
    _assert_same_training(sparse, dense, model)


@pytest.mark.parametrize("model", ["fedmf", "fedncf", "pfedrec"])
def test_vmap_matches_per_client_loop(model):
    vmapped = _run(_config(model))
    looped = _run(_config(model), sequential=True)
    _assert_same_training(vmapped, looped, model)
