"""Model dropout > 0 in training: runs, is deterministic per seed, differs from
dropout 0, and leaves evaluation deterministic."""

from __future__ import annotations

import dataclasses

import numpy as np

from feddmr_jax.train import build_experiment, evaluate_state, run_round

from engine_helpers import max_abs_diff, tiny_config


def _round(dropout: float, seed: int = 0):
    cfg = tiny_config(seed=seed)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=dropout))
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    state, stats = run_round(exp, state, 1)
    return exp, state, stats


def test_dropout_training_is_finite_deterministic_and_differs_from_none():
    exp, state, stats = _round(0.3)
    assert np.isfinite(stats.train_loss)
    _, again, stats2 = _round(0.3)
    assert max_abs_diff(state.shared, again.shared) == 0.0
    assert max_abs_diff(state.private_store, again.private_store) == 0.0
    assert stats.train_loss == stats2.train_loss
    first = evaluate_state(exp, state, exp.val_set)
    assert first == evaluate_state(exp, state, exp.val_set)     # no dropout at evaluation
    assert all(np.isfinite(v) for v in first.values())
    _, plain, _ = _round(0.0)
    assert max_abs_diff(state.shared, plain.shared) > 1e-4
