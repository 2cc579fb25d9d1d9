"""Faulty clients: NaN uploads are dropped, robust aggregators resist scaled ones."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax.federated.faults import FaultConfig, assign_faults
from feddmr_jax.federated.robust import init_buffer, robust_delta, write_buffer
from feddmr_jax.models.base import Leaves
from feddmr_jax.train import build_experiment, evaluate_state, run_round

from engine_helpers import tiny_config
from float_compare import assert_trees_equal


def test_fault_assignment_is_seeded_and_disjoint():
    p = np.arange(100)
    f = assign_faults(p, 3, 0, FaultConfig(nan=0.1, scale=0.2, dropout=0.1))
    assert len(f.dropped) == 10 and len(f.participants) == 90
    assert f.update_nan.sum() == 10 and (f.update_scale != 1).sum() == 20
    assert not np.any(f.update_nan & (f.update_scale != 1))
    g = assign_faults(p, 3, 0, FaultConfig(nan=0.1, scale=0.2, dropout=0.1))
    np.testing.assert_array_equal(f.participants, g.participants)
    h = assign_faults(p, 4, 0, FaultConfig(nan=0.1, scale=0.2, dropout=0.1))
    assert not np.array_equal(f.update_nan, h.update_nan)


def test_nan_clients_are_dropped_like_excluded_clients():
    """10% NaN uploads: finite result equal to a round that excludes those clients."""
    cfg = tiny_config(fault_nan=0.1, table_mean="touched")
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    state, stats = run_round(exp, state, 1)
    assert stats.dropped == round(0.1 * exp.split.num_users)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state))
    metrics = evaluate_state(exp, state, exp.val_set)
    assert all(np.isfinite(v) for v in metrics.values())

    # Reference: the same round (same chunks, hence the same negatives) with the
    # NaN clients masked out as if they had not been sampled.
    faults = assign_faults(np.arange(exp.split.num_users), 1, cfg.train.seed,
                           cfg.train.faults())
    bad = set(faults.participants[faults.update_nan].tolist())
    from feddmr_jax.federated.rounds import plan_round
    ref_state = exp.algorithm.init(exp.keys["init"])
    chunks = [c._replace(client_mask=c.client_mask & ~np.isin(c.client_ids, list(bad)))
              for c in plan_round(exp.planner, faults.participants, 1)]
    ref_state, ref_stats = exp.algorithm.apply(ref_state, chunks,
                                               jax.random.fold_in(exp.keys["train"], 1))
    assert ref_stats.accepted == stats.accepted
    # The same program on the same chunks: a rejected upload and a masked-out client
    # both add exactly 0 to the same sums in the same order, bit for bit.
    assert_trees_equal(state.shared, ref_state.shared, what="shared")
    assert_trees_equal(state.private_store, ref_state.private_store, what="private")


def test_robust_reducers_on_hand_values():
    shared = Leaves({"items": jnp.zeros((3, 1))}, {"w": jnp.zeros(())})
    buf = init_buffer(shared, 5)
    delta = Leaves({"items": jnp.array([[[1.0], [2.0]], [[3.0], [4.0]], [[100.0], [5.0]],
                                        [[2.0], [0.0]], [[9.0], [9.0]]])},
                   {"w": jnp.array([1.0, 2.0, 3.0, 1000.0, 7.0])})
    rows = jnp.array([[0, 1], [0, 1], [0, 1], [0, 1], [0, 1]])
    row_mask = jnp.array([[True, True], [True, True], [True, True], [True, False],
                          [False, False]])
    accept = jnp.array([True, True, True, True, False])
    buf = write_buffer(buf, delta, jnp.arange(5), accept, rows, row_mask)
    med = robust_delta(buf, "median")
    np.testing.assert_allclose(med.tables["items"][:, 0], [2.5, 4.0, 0.0])
    assert float(med.dense["w"]) == pytest.approx(2.5)
    trimmed = robust_delta(buf, "trimmed_mean", 0.25)
    # row 0 values {1, 3, 100, 2}: drop 1 and 100 -> 2.5; row 1 {2, 4, 5}: k=0 -> 11/3
    np.testing.assert_allclose(trimmed.tables["items"][:, 0], [2.5, 11 / 3, 0.0], rtol=1e-6)
    assert float(trimmed.dense["w"]) == pytest.approx(2.5)


@pytest.mark.slow
def test_trimmed_mean_resists_scaled_updates():
    """10% of clients x100: trimmed mean keeps validation HR@10 near the clean run,
    while the plain mean under the same attack collapses (the control: an attack
    that did nothing, or a trimmed mean that did not trim, would fail here)."""
    from feddmr_jax.config import DataConfig, RunConfig, TrainConfig
    from feddmr_jax.models.feddmr import FedDMRConfig

    data = DataConfig(dataset="synthetic", synthetic_users=100, synthetic_items=120,
                      synthetic_interactions=12.0, eval_negatives=30)
    model = FedDMRConfig(dim=8, heads=2, attention=False)

    def final_hr(aggregator, **extra):
        train = TrainConfig(rounds=4, lr=0.05, batch_size=64, chunk_size=100,
                            aggregator=aggregator, trim_fraction=0.2, **extra)
        exp = build_experiment(RunConfig(data=data, model=model, train=train))
        state = exp.algorithm.init(exp.keys["init"])
        for r in range(1, 5):
            state, _ = run_round(exp, state, r)
        return evaluate_state(exp, state, exp.val_set)["hr@10"]

    attack = {"fault_scale": 0.1, "fault_factor": 100.0}
    clean = final_hr("trimmed_mean")
    attacked = final_hr("trimmed_mean", **attack)
    mean_clean = final_hr("mean")
    mean_attacked = final_hr("mean", **attack)
    # Measured: trimmed 0.60 clean, 0.58 attacked; mean 0.57 clean, 0.39 attacked.
    assert abs(attacked - clean) <= 0.03 + 1e-9, (clean, attacked)
    # Controls: the attack hurts the plain mean a lot, and the trimmed mean does far better.
    assert mean_clean - mean_attacked >= 0.1, (mean_clean, mean_attacked)
    assert attacked - mean_attacked >= 0.1, (attacked, mean_attacked)
