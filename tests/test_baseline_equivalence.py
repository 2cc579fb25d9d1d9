"""Engine equivalences for the baselines: sparse vs dense tables (FedMF, FedNCF)
and the vmapped client axis vs a per-client Python loop (FedMF, FedNCF, PFedRec)."""

from __future__ import annotations

import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.train import build_experiment, run_round

from engine_helpers import max_abs_diff

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
    return state, losses


@pytest.mark.parametrize("model", ["fedmf", "fedncf"])
def test_sparse_equals_dense(model):
    """Gathered item rows + scatter-added deltas == full tables (Adam, mu > 0, 2 epochs)."""
    extra = {"mu": 0.1, "local_epochs": 2}
    sparse, loss_s = _run(_config(model, sparse=True, **extra))
    dense, loss_d = _run(_config(model, sparse=False, **extra))
    assert max_abs_diff(sparse.shared, dense.shared) < 1e-5
    assert max_abs_diff(sparse.private_store, dense.private_store) < 1e-5
    np.testing.assert_allclose(loss_s, loss_d, rtol=1e-5)


@pytest.mark.parametrize("model", ["fedmf", "fedncf", "pfedrec"])
def test_vmap_matches_per_client_loop(model):
    vmapped, loss_v = _run(_config(model))
    looped, loss_l = _run(_config(model), sequential=True)
    assert max_abs_diff(vmapped.shared, looped.shared) < 1e-5
    assert max_abs_diff(vmapped.private_store, looped.private_store) < 1e-5
    np.testing.assert_allclose(loss_v, loss_l, rtol=1e-5)
