"""Sparse mode equals dense mode where it used to end quietly apart (issue 26, items 4 and 5).

* Fault injection with row decay: a scaled (or sign-flipped) client is the same
  attack in both modes, its whole delta (the decay of the rows it did not
  gather included) times the factor; a NaN upload is dropped in both.
* ``train.l2``: the penalty covers the minibatch's item rows (and every dense
  leaf), so its gradient reaches the same rows in both modes, whatever the
  client optimizer (SGD with row decay, FedRAP without it, Adam).

Each case runs one round from the same initial state in both modes and
compares the shared params and the private store within a tolerance derived
from the computation (:func:`_tolerance`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.federated.aggregation import accumulate, init_accumulator
from feddmr_jax.federated.faults import assign_faults
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.losses import Batch, l2
from feddmr_jax.models.base import Context, Leaves, ModelParams
from feddmr_jax.train import build_experiment, run_round

from engine_helpers import copy_tree, max_abs_diff

EPS32 = float(np.finfo(np.float32).eps)

DATA = {"dataset": "synthetic", "synthetic_users": 20, "synthetic_items": 40,
        "synthetic_interactions": 8.0, "eval_negatives": 10}
# Every method whose local optimizer decays every item row (``row_decay``); weight decay
# 1e-2 (not FedRAP's 1e-4) makes the decay part of a delta large enough that treating it
# apart from the rest shows far above float rounding.
DECAY_METHODS = {
    "fedrap": ({"model": "fedrap", "batch_size": 16, "local_epochs": 2},
               {"dim": 4, "lr_args": 2.0, "lr_network": 0.1, "weight_decay": 1e-2}),
    "pfedrec": ({"model": "pfedrec", "batch_size": 16},
                {"dim": 4, "lr_eta": 1.0, "weight_decay": 1e-2}),
    "local": ({"model": "local", "batch_size": 16},
              {"dim": 4, "lr_eta": 1.0, "weight_decay": 1e-2}),
}
# One round with both faults: 6 of the 20 clients sign-flipped, 3 uploading NaN.
FAULTS = {"fault_scale": 0.3, "fault_factor": -1.0, "fault_nan": 0.15}


def _config(train: dict, model: dict, sparse: bool) -> config_lib.RunConfig:
    return config_lib.build_config({
        "data": DATA, "model": model,
        "train": {"rounds": 1, "chunk_size": 8, **train, "sparse": sparse}})


def _first_round(train: dict, model: dict, sparse: bool):
    """``(exp, initial state, state after round 1, round stats)``."""
    exp = build_experiment(_config(train, model, sparse))
    state = exp.algorithm.init(exp.keys["init"])
    init = copy_tree(state)
    state, stats = run_round(exp, state, 1)
    return exp, init, copy_tree(state), stats


def _tolerance(exp, init, after, factor: float = 1.0) -> float:
    """Bound on |sparse - dense| after one round from the same state.

    Both modes do the same arithmetic on every trained row. They differ in
    (a) an untouched row's decay: dense multiplies it by ``1 - lr_t wd`` at
    each of the client's S steps, sparse by their product f (measured on the
    probe row) once: S + 1 roundings against S, each relative eps; (b) the
    server's sum over the P participants of a row: dense adds
    ``s_u (new_u - C)``, sparse ``s_u (new_u - C f_u)`` and then
    ``C sum_u s_u (f_u - 1) / W``, in another order; every addition rounds at
    relative eps of a partial sum bounded by ``P * M``, so the mean moves by
    at most about ``(P + 3) eps M``, with M the largest magnitude in the sums:
    ``|factor|`` times a client's largest table value, taken as twice the
    largest value before or after the round (a margin for a client's own
    rows; one round at these small learning rates moves them far less).
    Hence ``(S + P + 3) eps M``, with a factor 4 for the constants of those
    bounds. (Observed: at most 2.4e-7, against a tolerance near 1e-4; the
    effects tested move values by 0.1.)
    """
    chunks = plan_round(exp.planner, np.arange(exp.split.num_users), 1)
    t = exp.cfg.train
    steps = t.local_epochs * max(-(-c.items.shape[1] // min(t.batch_size, c.items.shape[1]))
                                 for c in chunks)
    values = [np.max(np.abs(x)) for x in jax.tree.leaves((init.shared, init.private_store,
                                                         after.shared, after.private_store))
              if np.size(x)]
    magnitude = 2.0 * max(abs(factor), 1.0) * max(values)
    return 4.0 * (steps + exp.split.num_users + 3) * EPS32 * magnitude


def _assert_sparse_equals_dense(train: dict, model: dict, factor: float = 1.0):
    exp, init_s, sparse, stats_s = _first_round(train, model, True)
    exp_d, init_d, dense, stats_d = _first_round(train, model, False)
    assert max_abs_diff(init_s, init_d) == 0.0                       # same starting point
    tol = _tolerance(exp_d, init_d, dense, factor)
    assert tol < 1e-3                                                 # far below the effects
    shared, private = (max_abs_diff(sparse.shared, dense.shared),
                       max_abs_diff(sparse.private_store, dense.private_store))
    assert shared <= tol and private <= tol, (shared, private, tol)
    assert (stats_s.accepted, stats_s.dropped) == (stats_d.accepted, stats_d.dropped)
    return exp_d, init_d, dense, stats_d


@pytest.mark.parametrize("method", sorted(DECAY_METHODS))
def test_faults_hit_sparse_and_dense_alike_with_row_decay(method):
    """Item 4: sparse mode used to scale only the excess over the decayed rows (the decay
    factor entered the server's sum unscaled): the shared tables of FedRAP and PFedRec
    differed by 0.1 here. ``local`` uploads nothing (no shared params): the faults
    change nothing in either mode, and nothing is dropped."""
    train, model = DECAY_METHODS[method]
    exp, _, _, stats = _assert_sparse_equals_dense({**train, **FAULTS}, model,
                                                   FAULTS["fault_factor"])
    drawn = assign_faults(np.arange(exp.split.num_users), 1, exp.cfg.train.seed,
                          exp.cfg.train.faults())
    assert (drawn.update_scale == FAULTS["fault_factor"]).sum() == 6
    nan = int(drawn.update_nan.sum())
    assert nan == 3
    assert stats.dropped == (0 if method == "local" else nan)


def test_non_finite_client_leaves_the_decay_sum_finite():
    """A dropped client's decay factor must not reach the sum (0 * NaN is NaN): a client
    whose training diverged uploads NaN rows and a NaN factor; the server drops both."""
    shared = Leaves({"items": jnp.ones((3, 2))}, {})
    acc = init_accumulator(shared, row_decay=True)
    delta = Leaves({"items": jnp.stack([jnp.zeros((2, 2)), jnp.full((2, 2), jnp.nan)])}, {})
    factor = {"items": jnp.array([[0.5, 0.25], [jnp.nan, jnp.nan]])}
    finite = jnp.array([True, False])
    acc = accumulate(acc, delta, jnp.ones(2), finite, jnp.ones(2, bool),
                     jnp.array([[0, 1], [1, 2]]), jnp.ones((2, 2), bool), factor)
    np.testing.assert_array_equal(acc.decay["items"], [-0.5, -0.75])
    assert float(acc.weight) == 1.0 and float(acc.dropped) == 1.0


# --- item 5: train.l2 ---------------------------------------------------------------------

L2_CASES = {
    # FedRAP without weight decay: no row decay; SGD.
    "fedrap_no_decay": ({**DECAY_METHODS["fedrap"][0], "l2": 1e-2},
                        {**DECAY_METHODS["fedrap"][1], "weight_decay": 0.0}),
    # FedRAP with both: the probe row used to measure l2 as decay too.
    "fedrap_decay": ({**DECAY_METHODS["fedrap"][0], "l2": 1e-2}, DECAY_METHODS["fedrap"][1]),
    "pfedrec_no_decay": ({**DECAY_METHODS["pfedrec"][0], "l2": 1e-2},
                         {**DECAY_METHODS["pfedrec"][1], "weight_decay": 0.0}),
}


@pytest.mark.parametrize("case", sorted(L2_CASES))
def test_l2_gives_the_same_round_in_sparse_and_dense_mode(case):
    """Item 5: ``train.l2`` penalized the whole tables in dense mode and the local rows in
    sparse mode: after this round FedRAP's private tables differed by 0.23 (no weight
    decay) and PFedRec's stored evaluation scores by 0.16."""
    train, model = L2_CASES[case]
    _, init, dense, _ = _assert_sparse_equals_dense(train, model)
    assert max_abs_diff(init.shared, dense.shared) > 1e-3           # it trained


def _l2_batch(items, mask, history, history_mask):
    return Batch(jnp.array(items), jnp.ones(len(items)), jnp.array(mask),
                 Context(jnp.array(history, jnp.int32), jnp.array(history_mask)))


def test_l2_covers_the_batch_rows_once_and_every_dense_leaf():
    """By hand: rows {0, 2} from the examples (2 twice, 3 masked) and 4 from the memory
    (1 masked); every dense leaf; shared and private tables alike."""
    table = jnp.arange(12.0).reshape(6, 2)
    params = ModelParams(private=Leaves({"personal": 2.0 * table}, {"w": jnp.array(3.0)}),
                         shared=Leaves({"items": table}, {"b": jnp.array([1.0, -1.0])}))
    batch = _l2_batch([0, 2, 2, 3], [True, True, True, False], [4, 1], [True, False])
    rows = [0, 2, 4]
    sq = float(np.sum(np.asarray(table)[rows] ** 2))
    expected = 0.5 * 0.1 * (sq + 4.0 * sq + 9.0 + 2.0)
    assert float(l2(0.1)(params, params.shared, batch)) == pytest.approx(expected, rel=1e-6)
    grad = jax.grad(lambda p: l2(0.1)(p, p.shared, batch))(params)
    used = np.zeros((6, 1), bool)
    used[rows] = True
    np.testing.assert_allclose(grad.shared.tables["items"], np.where(used, 0.1 * table, 0.0),
                               rtol=1e-6)
    np.testing.assert_allclose(grad.private.tables["personal"],
                               np.where(used, 0.2 * table, 0.0), rtol=1e-6)
    assert float(grad.private.dense["w"]) == pytest.approx(0.3)
    np.testing.assert_allclose(grad.shared.dense["b"], [0.1, -0.1], rtol=1e-6)


def test_l2_is_the_same_on_a_local_table_and_on_the_whole_table():
    """The penalty of the batch's rows does not depend on which other rows the table holds
    (sparse: the client's local table; dense: the catalogue): bit-identical."""
    full = jax.random.normal(jax.random.key(0), (10, 3))
    global_ids = np.array([1, 4, 7, 8])                               # the local table's rows
    local = full[global_ids]
    batch_local = _l2_batch([0, 2, 3, 2], [True, True, True, False], [1], [True])
    batch_full = _l2_batch(global_ids[[0, 2, 3, 2]], [True, True, True, False],
                           global_ids[[1]], [True])

    def params(t):
        return ModelParams(Leaves({}, {}), Leaves({"items": t}, {}))

    value_l, grad_l = jax.value_and_grad(lambda t: l2(0.5)(params(t), None, batch_local))(local)
    value_f, grad_f = jax.value_and_grad(lambda t: l2(0.5)(params(t), None, batch_full))(full)
    np.testing.assert_allclose(value_l, value_f, rtol=4 * EPS32)       # 4 terms, other order
    np.testing.assert_array_equal(np.asarray(grad_f)[global_ids], grad_l)
    others = np.setdiff1d(np.arange(10), global_ids)
    assert not np.any(np.asarray(grad_f)[others])
