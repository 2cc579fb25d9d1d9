"""FedRAP in the engine: private item tables read and written by rows, its
per-round optimizer, the store-size bound, evaluation by rows, and resume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.evaluate import evaluate, make_scorer
from feddmr_jax.federated.client import ClientData, make_client_update
from feddmr_jax.federated.private_store import PrivateStoreTooLarge, store_bytes
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.methods import get_method
from feddmr_jax.models import FedRAPConfig
from feddmr_jax.train import (Interrupted, build_experiment, build_local_step,
                              evaluate_state, load_run_config, run_round, train)

from engine_helpers import copy_tree, max_abs_diff, max_local_steps, tiny_config
from float_compare import (METRIC_ULPS, SGD_STEP_ULPS, assert_trees_close, assert_trees_equal,
                           max_abs)

# Mild learning rates (the reference's lr_args = 200 diverges on batches this small); no weight
# decay by default (the tests of weight decay, below, turn it on).
RAW = {"data": {"dataset": "synthetic", "synthetic_users": 20, "synthetic_items": 40,
                "synthetic_interactions": 8.0, "eval_negatives": 10},
       "train": {"model": "fedrap", "rounds": 2, "batch_size": 16, "chunk_size": 8,
                 "local_epochs": 2},
       "model": {"dim": 4, "lr_args": 2.0, "lr_network": 0.1, "weight_decay": 0.0}}


def _config(train=None, model=None) -> config_lib.RunConfig:
    return config_lib.build_config({**RAW, "train": {**RAW["train"], **(train or {})},
                                    "model": {**RAW["model"], **(model or {})}})


def _run(cfg, rounds=2):
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    init = copy_tree(state)
    for r in range(1, rounds + 1):
        state, _ = run_round(exp, state, r)
    return exp, init, state


@pytest.fixture(scope="module")
def sparse_run():
    return _run(_config())


def _assert_same_sgd_training(exp, rounds, a, b):
    """Two ``rounds``-round FedRAP states of the same math, rounded in another order:
    FedRAP's SGD carries a rounding difference linearly (float_compare.SGD_STEP_ULPS per
    step, of the largest param)."""
    ulps = max_local_steps(exp, rounds) * SGD_STEP_ULPS
    assert_trees_close(a.shared, b.shared, ulps=ulps, scale=max_abs(b.shared), what="shared")
    assert_trees_close(a.private_store, b.private_store, ulps=ulps,
                       scale=max_abs(b.private_store), what="private")


def test_sparse_equals_dense(sparse_run):
    exp, _, sparse = sparse_run
    exp_d, _, dense = _run(_config({"sparse": False}))
    _assert_same_sgd_training(exp, 2, sparse, dense)
    # The same ranks: a few ulps of 1 (float_compare.METRIC_ULPS).
    assert_trees_close(evaluate_state(exp, sparse, exp.test_set),
                       evaluate_state(exp_d, dense, exp_d.test_set), ulps=METRIC_ULPS,
                       scale=1.0, what="test metrics")


def test_vmap_equals_per_client_loop(sparse_run):
    """The loop gathers each client's whole D_u and slices its rows; the chunk step
    gathers only the rows from the store: same result."""
    exp, _, vmapped = sparse_run
    loop_exp = build_experiment(_config(), sequential=True)
    state = loop_exp.algorithm.init(loop_exp.keys["init"])
    for r in (1, 2):
        state, _ = run_round(loop_exp, state, r)
    _assert_same_sgd_training(exp, 2, vmapped, state)


def test_only_the_rows_a_client_used_change(sparse_run):
    exp, init, _ = sparse_run
    state = exp.algorithm.init(exp.keys["init"])
    state, _ = run_round(exp, state, 1)
    chunk = plan_round(exp.planner, np.arange(exp.split.num_users), 1)[0]
    u = int(chunk.client_ids[0])
    used = np.unique(chunk.items[0][chunk.mask[0]])
    before = np.asarray(init.private_store.tables["items_personal"][u])
    after = np.asarray(state.private_store.tables["items_personal"][u])
    unused = np.setdiff1d(np.arange(exp.split.num_items), used)
    np.testing.assert_array_equal(after[unused], before[unused])
    assert np.all(np.any(after[used] != before[used], axis=1))
    # Other clients' tables are untouched by client u's rows (each writes only its own).
    assert max_abs_diff(init.private_store.tables["items_personal"],
                        state.private_store.tables["items_personal"]) > 1e-3


def test_round_schedule_scales_the_step():
    """lr(round r) = lr * round_decay ** (r - 1): one SGD step at round 3 is 0.97^2 of round 1's."""
    cfg = _config(model={"lam": 0.0, "mu": 0.0, "round_decay": 0.97})
    exp = build_experiment(cfg)
    step = build_local_step(get_method("fedrap"), exp.model, cfg.train, exp.split.num_items)
    update = jax.jit(make_client_update(step, local_epochs=1, batch_size=8))
    state = exp.algorithm.init(exp.keys["init"])
    private = jax.tree.map(lambda s: s[0], state.private_store)
    items = jnp.array([0, 3, 5, 3, 1, 2, 7, 9])
    deltas = []
    for r in (1, 3):
        data = ClientData(items, jnp.array([1.0, 1, 0, 0, 0, 0, 0, 0]), jnp.ones(8, bool),
                          jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool), r)
        out = update(state.shared, private, data, jax.random.key(0))
        deltas.append(np.asarray(out.shared.tables["items"] - state.shared.tables["items"]))
    assert np.abs(deltas[0]).max() > 1e-4
    # The same gradient, lr x 0.97**2 (a few ulps off in float32); the deltas round as the
    # new params do (1/2 ulp of |params| each, the larger term): 8 ulps of the largest
    # param, 4x the worst case. A wrong schedule (0.97 instead of 0.97**2) is off by 3e-3.
    table = np.asarray(state.shared.tables["items"])
    assert_trees_close(deltas[1], deltas[0] * 0.97 ** 2, ulps=8,
                       scale=max(max_abs(table), max_abs(deltas)), what="round-3 step")


def test_store_bound_is_a_clear_error():
    cfg = _config({"max_private_gb": 1e-6})
    with pytest.raises(PrivateStoreTooLarge, match=r"train\.max_private_gb.*") as err:
        build_experiment(cfg)
    assert "items_personal" in str(err.value) and "20 clients" in str(err.value)


def test_store_bytes_counts_the_private_tables(sparse_run):
    exp = sparse_run[0]
    per_client = (exp.split.num_items * 4 + 4 + 1) * 4      # D_u [I, 4], w [4], b []
    assert store_bytes(exp.model, 20) == 20 * per_client


@pytest.mark.parametrize("which", ["fedrap", "feddmr"])
def test_scoring_by_rows_equals_scoring_whole_tables(sparse_run, which):
    """The by-rows evaluator (local table of candidates + memory, deduplicated) scores as the
    whole tables do; FedDMR checks the memory masking of the target item survives it."""
    if which == "fedrap":
        exp, _, state = sparse_run
    else:
        exp = build_experiment(tiny_config())
        state = exp.algorithm.init(exp.keys["init"])
    args = (state.shared, state.private_store, exp.test_set, exp.planner.history,
            exp.planner.history_mask)
    by_rows = evaluate(make_scorer(exp.model, by_rows=True), *args)
    whole = evaluate(make_scorer(exp.model, by_rows=False), *args)
    # The same ranks: a few ulps of 1 (float_compare.METRIC_ULPS).
    assert_trees_close(by_rows, whole, ulps=METRIC_ULPS, scale=1.0, what="by rows")


def test_resume_continues_exactly(tmp_path):
    cfg = _config({"rounds": 3, "checkpoint_every": 1})
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "cut", progress=False, stop_after_round=1)
    saved = load_run_config(tmp_path / "cut")
    assert saved == cfg and isinstance(saved.model, FedRAPConfig)
    resumed = train(saved, tmp_path / "cut", progress=False, resume=True)
    assert resumed["best_round"] == full["best_round"]
    # The same programs on the same (restored) state: bit for bit.
    assert_trees_equal(resumed["test"], full["test"], what="test metrics")


WEIGHT_DECAY = 1e-4


@pytest.fixture(scope="module")
def decay_runs():
    """Sparse and dense runs with weight decay: ``{sparse: (exp, init, after round 1, after 3)}``."""
    runs = {}
    for sparse in (True, False):
        exp = build_experiment(_config({"sparse": sparse, "rounds": 3},
                                       {"weight_decay": WEIGHT_DECAY}))
        state = exp.algorithm.init(exp.keys["init"])
        init = copy_tree(state)
        state, _ = run_round(exp, state, 1)
        first = copy_tree(state)
        for r in (2, 3):
            state, _ = run_round(exp, state, r)
        runs[sparse] = (exp, init, first, state)
    return runs


def test_sparse_equals_dense_with_weight_decay(decay_runs):
    """The sparse mode's lazy decay (probe factor, whole-D_u scaling, server-side C term)
    equals the dense mode's decay of every row, over 3 rounds."""
    exp, init, _, sparse = decay_runs[True]
    exp_d, _, _, dense = decay_runs[False]
    # (A decay step too few or too many moves a row by lr_args x wd x |row| ~ 6e-4.)
    _assert_same_sgd_training(exp, 3, sparse, dense)
    assert max_abs_diff(sparse.private_store, init.private_store) > 1e-2
    assert_trees_close(evaluate_state(exp, sparse, exp.test_set),
                       evaluate_state(exp_d, dense, exp_d.test_set), ulps=METRIC_ULPS,
                       scale=1.0, what="test metrics")


def _reference_factor(cfg: FedRAPConfig, local_epochs: int, batch_size: int,
                      padded: int, real: int) -> float:
    """torch SGD's shrink of a row with zero gradient over one client's first round:
    ``prod_t (1 - lr_args * step_decay ** t * wd)`` over its steps."""
    steps = local_epochs * -(-real // min(batch_size, padded))
    lrs = cfg.lr_args * cfg.step_decay ** np.arange(steps)
    return float(np.prod(1.0 - lrs * cfg.weight_decay))


@pytest.mark.parametrize("sparse", [True, False])
def test_untouched_private_rows_decay_by_the_reference_factor(decay_runs, sparse):
    """After round 1 a D_u row client u never trained on (e.g. its held-out item's) is
    its initial row times the reference's weight-decay factor (the sparse mode used to
    leave it at its initial noise)."""
    exp, init, first, _ = decay_runs[sparse]
    chunk = plan_round(exp.planner, np.arange(exp.split.num_users), 1)[0]
    u, mask = int(chunk.client_ids[0]), np.asarray(chunk.mask[0])
    unused = np.setdiff1d(np.arange(exp.split.num_items), np.asarray(chunk.items[0])[mask])
    t = exp.cfg.train
    factor = _reference_factor(exp.cfg.model, t.local_epochs, t.batch_size, mask.size,
                               int(mask.sum()))
    assert factor < 1 - 1e-4
    before = np.asarray(init.private_store.tables["items_personal"][u])[unused]
    after = np.asarray(first.private_store.tables["items_personal"][u])[unused]
    # Each of the client's S steps rounds the row (1/2 ulp) and its factor 1 - lr_t wd
    # (a few ulps of lr_t wd ~ 2e-4, negligible): S ulps of the row; 4 S.
    steps = t.local_epochs * -(-int(mask.sum()) // min(t.batch_size, mask.size))
    assert_trees_close(after, before * factor, ulps=4 * steps, scale=max_abs(before),
                       what="decayed rows")


def test_dense_aggregation_keeps_the_decay_of_untouched_rows(decay_runs):
    """Dense mode: the new C is the uniform mean of every participant's full C table, as
    the reference's server computes it (per-client deltas from the engine's own client
    function, summed here); the aggregation used to drop the rows a client did not use."""
    exp, init, first, _ = decay_runs[False]
    round_key = jax.random.fold_in(exp.keys["train"], 1)
    total, count = 0.0, 0
    for chunk in plan_round(exp.planner, np.arange(exp.split.num_users), 1):
        for c in np.flatnonzero(np.asarray(chunk.client_mask)):
            row = jax.tree.map(lambda x: x[c], chunk)
            u = int(row.client_ids)
            private = jax.tree.map(lambda s: s[u], init.private_store)
            out = exp.algorithm.parts.client_fn(init.shared, private, row,
                                                jax.random.fold_in(round_key, u))
            total, count = total + np.asarray(out.delta.tables["items"], np.float64), count + 1
    assert count == exp.split.num_users
    expected = init.shared.tables["items"] + total / count
    # The engine's vmapped chunk against the client function called one client at a
    # time: one round of SGD rounded in another order (float_compare.SGD_STEP_ULPS).
    assert_trees_close(first.shared.tables["items"], expected,
                       ulps=max_local_steps(exp, 1) * SGD_STEP_ULPS, what="C")


def test_weight_decay_with_a_robust_aggregator_trains_dense():
    """The sparse excess upload is not a delta a robust aggregator can take: such a run
    trains on whole tables (build_algorithm refuses sparse row decay with it)."""
    exp = build_experiment(_config({"aggregator": "median"}, {"weight_decay": WEIGHT_DECAY}))
    state = exp.algorithm.init(exp.keys["init"])
    chunk = plan_round(exp.planner, np.arange(exp.split.num_users), 1)[0]
    row = jax.tree.map(lambda x: x[0], chunk)
    out = jax.eval_shape(exp.algorithm.parts.client_fn, state.shared,
                         jax.tree.map(lambda s: s[0], state.private_store), row, exp.keys["init"])
    assert out.delta.tables["items"].shape[0] == exp.split.num_items     # whole table
    assert out.shared_factor is None
