"""Server optimizers (federated/server_optimizers.py): Reddi et al.'s updates,
frozen untouched rows, what "touched" means per aggregator, FedAvg's bits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from feddmr_jax.federated.aggregation import (accumulate, client_weights, init_accumulator,
                                              is_finite, server_update)
from feddmr_jax.compiler_options import for_backend
from feddmr_jax.federated.algorithm import RoundConfig, build_algorithm
from feddmr_jax.federated.communication import rows_used
from feddmr_jax.federated.robust import init_buffer, write_buffer
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.federated.sampling import sample_clients
from feddmr_jax.federated.server_optimizers import (SERVER_OPTIMIZERS, build_server_optimizer,
                                                    touched_rows)
from feddmr_jax.methods import get_method, uses_dropout
from feddmr_jax.models.base import Leaves
from feddmr_jax.train import build_experiment, build_local_step, run_round

from engine_helpers import tiny_config

ETA, B1, B2, TAU, BETA = 0.1, 0.9, 0.99, 1e-3, 0.9
# Three rounds of aggregated updates Delta_t of one coordinate (Reddi et al.'s notation).
DELTAS = [0.5, -0.2, 0.05]


def reference(name: str, deltas) -> list[float]:
    """x_t after each round from x_0 = 0, Algorithm 2 / FedAvgM in float64 (independent)."""
    x, m, v, out = 0.0, 0.0, TAU ** 2, []
    for d in deltas:
        if name == "momentum":
            m = BETA * m + d
            x = x + ETA * m
        else:
            m = B1 * m + (1 - B1) * d
            if name == "adagrad":
                v = v + d * d
            elif name == "yogi":
                v = v - (1 - B2) * d * d * np.sign(v - d * d)
            else:
                v = B2 * v + (1 - B2) * d * d
            x = x + ETA * m / (np.sqrt(v) + TAU)
        out.append(x)
    return out


def _tree(value) -> Leaves:
    return Leaves({"items": jnp.full((1, 1), value, jnp.float32)}, {"w": jnp.float32(value)})


@pytest.mark.parametrize("name", ["momentum", "adam", "yogi", "adagrad"])
def test_updates_follow_the_paper_line_by_line(name):
    opt = build_server_optimizer(name, ETA, momentum=BETA, b1=B1, b2=B2, eps=TAU)
    shared = _tree(0.0)
    state = opt.init(shared)
    # float32 against the float64 reference: ~10 roundings of values of order 1 per
    # round, 3 rounds: well under 1e-5 relative (float32 epsilon is 1.2e-7).
    for d, expected in zip(DELTAS, reference(name, DELTAS)):
        shared, state = server_update(shared, state, _tree(d), opt)
        for leaf in jax.tree.leaves(shared):
            assert float(np.asarray(leaf).reshape(-1)[0]) == pytest.approx(expected, rel=1e-5)
    assert int(state.count) == len(DELTAS)


def test_adaptive_state_starts_at_tau_squared_without_bias_correction():
    opt = build_server_optimizer("adam", ETA, b1=B1, b2=B2, eps=TAU)
    state = opt.init(_tree(0.0))
    assert float(state.v.dense["w"]) == np.float32(TAU ** 2) and float(state.m.dense["w"]) == 0
    # One step: m_0 = 0.1 * 0.5 = 0.05 (Adam with bias correction would step by eta itself).
    step, _ = opt.update(_tree(-0.5), state, touched=None)
    m0, v0 = (1 - B1) * 0.5, B2 * TAU ** 2 + (1 - B2) * 0.25
    assert float(step.dense["w"]) == pytest.approx(ETA * m0 / (np.sqrt(v0) + TAU), rel=1e-6)


@pytest.mark.parametrize("name", ["momentum", "adam", "yogi", "adagrad"])
def test_untouched_rows_and_their_state_do_not_move(name):
    opt = build_server_optimizer(name, ETA, momentum=BETA, b1=B1, b2=B2, eps=TAU)
    shared = Leaves({"items": jnp.arange(8.0).reshape(4, 2)}, {"w": jnp.ones(3)})
    state = opt.init(shared)
    touched = Leaves({"items": jnp.array([[True], [True], [False], [False]])},
                     {"w": jnp.ones((), bool)})
    delta = Leaves({"items": jnp.array([[0.1, 0.2], [0.3, -0.1], [0.0, 0.0], [0.0, 0.0]])},
                   {"w": jnp.full(3, 0.2)})
    before = shared
    for _ in range(3):          # stale moments would move rows 2-3 from round 2 on
        shared, state = server_update(shared, state, delta, opt, touched)
    np.testing.assert_array_equal(shared.tables["items"][2:], before.tables["items"][2:])
    assert np.all(np.asarray(shared.tables["items"][:2]) != np.asarray(before.tables["items"][:2]))
    fresh = opt.init(before)
    for field in ("m", "v"):
        if hasattr(state, field):
            np.testing.assert_array_equal(getattr(state, field).tables["items"][2:],
                                          getattr(fresh, field).tables["items"][2:])
    # Round 4 with nothing touched at all: nothing moves, the round still counts.
    nothing = jax.tree.map(lambda k: jnp.zeros_like(k), touched)
    frozen, after = server_update(shared, state, jax.tree.map(jnp.zeros_like, delta), opt,
                                  nothing)
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(shared)):
        np.testing.assert_array_equal(a, b)
    assert int(after.count) == 4


SHARED = Leaves({"items": jnp.zeros((5, 2))}, {"w": jnp.zeros(())})


def _chunk_sums(buffer=None, factor=None):
    """Client 0 used rows 0 and 2, client 1 row 2, client 2 (padding) row 4."""
    delta = Leaves({"items": jnp.ones((3, 2, 2))}, {"w": jnp.ones(3)})
    rows = jnp.array([[0, 2], [2, 0], [4, 4]])
    row_mask = jnp.array([[True, True], [True, False], [True, True]])
    mask = jnp.array([True, True, False])
    acc = init_accumulator(SHARED, buffer, row_decay=factor is not None)
    acc = accumulate(acc, delta, client_weights(jnp.ones(3), mask, "uniform"),
                     is_finite(delta), mask, rows, row_mask, factor)
    if buffer is not None:
        acc = acc._replace(buffer=write_buffer(acc.buffer, delta, jnp.arange(3), mask, rows,
                                               row_mask))
    return acc


def test_touched_rows_per_aggregator():
    plain = touched_rows(_chunk_sums(), dp=False, robust=False)
    np.testing.assert_array_equal(plain.tables["items"][:, 0], [1, 0, 1, 0, 0])
    assert bool(plain.dense["w"])
    robust = touched_rows(_chunk_sums(buffer=init_buffer(SHARED, 3)), dp=False, robust=True)
    np.testing.assert_array_equal(robust.tables["items"][:, 0], [1, 0, 1, 0, 0])
    assert bool(robust.dense["w"])
    decay = touched_rows(_chunk_sums(factor={"items": jnp.ones((3, 2))}), dp=False,
                         robust=False)
    assert np.all(decay.tables["items"])                        # every row decays
    dp = touched_rows(init_accumulator(SHARED), dp=True, robust=False)
    assert all(bool(np.all(x)) for x in jax.tree.leaves(dp))     # noise on every row
    empty = touched_rows(init_accumulator(SHARED), dp=False, robust=False)
    assert not any(bool(np.any(x)) for x in jax.tree.leaves(empty))


def _rounds(exp, algorithm, rounds):
    state = algorithm.init(exp.keys["init"])
    for r in range(1, rounds + 1):
        state, _ = run_round(dataclasses.replace(exp, algorithm=algorithm), state, r)
    return state


def test_sgd_at_rate_one_is_todays_fedavg_bit_for_bit():
    """The config's sgd equals optax.sgd(1.0) handed to build_algorithm (today's path)."""
    exp = build_experiment(tiny_config(server_optimizer="sgd", server_lr=1.0))
    state = _rounds(exp, exp.algorithm, 3)
    t, method = exp.cfg.train, get_method(exp.cfg.train.model)
    rounds = RoundConfig(num_clients=exp.split.num_users, num_items=exp.split.num_items,
                         local_epochs=t.local_epochs, batch_size=t.batch_size,
                         dropout_keys=uses_dropout(exp.cfg.model),
                         compiler_options=for_backend(method.cpu_compiler_options))
    plain = build_algorithm(exp.model, build_local_step(method, exp.model, t,
                                                        exp.split.num_items),
                            optax.sgd(1.0), rounds)
    reference_state = _rounds(exp, plain, 3)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_engine_adam_freezes_rows_no_participant_used():
    """One client per round of a larger catalogue: most rows untouched in round 1."""
    cfg = tiny_config(server_optimizer="adam", server_lr=0.05, clients_per_round=1)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic_items=300))
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    before = np.asarray(state.shared.tables["items"]).copy()
    participants = sample_clients(exp.keys["sample"], 1, exp.split.num_users, 1)
    used = set()
    for chunk in plan_round(exp.planner, participants, 1):
        for c in np.flatnonzero(chunk.client_mask):
            used |= set(chunk.items[c][chunk.mask[c]].tolist())
            used |= set(chunk.history[c][chunk.history_mask[c]].tolist())
            assert rows_used(chunk.items[c:c + 1], chunk.mask[c:c + 1], chunk.history[c:c + 1],
                             chunk.history_mask[c:c + 1])[0] == len(used)
    state, _ = run_round(exp, state, 1)
    after = np.asarray(state.shared.tables["items"])
    untouched = np.setdiff1d(np.arange(exp.split.num_items), sorted(used))
    assert len(untouched) > exp.split.num_items // 2
    np.testing.assert_array_equal(after[untouched], before[untouched])
    np.testing.assert_array_equal(np.asarray(state.server_opt_state.v.tables["items"])[untouched],
                                  np.float32(1e-3 ** 2))   # v_{-1} = tau^2, as cast
    moved = np.any(after != before, axis=1)
    assert moved[sorted(used)].all()


def test_server_optimizer_names_match_the_config():
    from feddmr_jax.config import SERVER_OPTIMIZERS as CONFIG_NAMES
    assert CONFIG_NAMES == SERVER_OPTIMIZERS
    with pytest.raises(ValueError, match="adamw"):
        build_server_optimizer("adamw", 1.0)
