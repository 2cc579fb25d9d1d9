"""PFedRec in the engine: the two-pass local step through build_algorithm, and
evaluation with each client's own locally updated model (``local`` evaluation
mode: the scores each client computed right after its local training).

The reference (Zhangcx19/IJCAI-23-PFedRec, engine.py ``fed_evaluate``) scores a
user's candidates with the item table and head the user had right after its
last local training, not with the server's aggregated table. These tests redo
that computation by hand in numpy, one client at a time, and compare.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.federated.private_store import EVAL_SCORES
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.metrics import mean_metrics, ranking_metrics
from feddmr_jax.methods.pfedrec import pfedrec_item_lr
from feddmr_jax.train import build_experiment, evaluate_state, run_round

from engine_helpers import adam_reach, copy_tree, max_local_steps
from float_compare import (ADAM_ULPS, METRIC_ULPS, SGD_STEP_ULPS, assert_trees_close,
                           assert_trees_equal)

RAW = {"data": {"dataset": "synthetic", "synthetic_users": 20, "synthetic_items": 40,
                "synthetic_interactions": 8.0, "eval_negatives": 10},
       # One batch per client (batch >= every client's padded examples): the
       # minibatch order cannot matter, so numpy needs no shuffling.
       "train": {"model": "pfedrec", "rounds": 2, "batch_size": 512, "chunk_size": 8},
       "model": {"dim": 4}}


def _config(**train) -> config_lib.RunConfig:
    raw = {**RAW, "train": {**RAW["train"], **train}}
    return config_lib.build_config(raw)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_client_round(table, w, b, items, labels, head_lr, item_lr):
    """The reference's batch on all of one client's examples: head SGD, then items SGD."""
    table, w, b = (np.array(x, np.float64) for x in (table, w, b))
    n = len(items)
    rows = table[items]
    g = (sigmoid(rows @ w + b) - labels) / n
    w, b = w - head_lr * (g[:, None] * rows).sum(0), b - head_lr * g.sum()
    g = (sigmoid(rows @ w + b) - labels) / n
    grad = np.zeros_like(table)
    np.add.at(grad, items, g[:, None] * w[None, :])
    return table - item_lr * grad, w, b


@pytest.fixture(scope="module")
def one_round():
    cfg = _config()
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    before = copy_tree(state)
    state, _ = run_round(exp, state, 1)
    return exp, before, state


def _client_examples(exp, user, round_index):
    for chunk in plan_round(exp.planner, np.arange(exp.split.num_users), round_index):
        hit = np.flatnonzero((chunk.client_ids == user) & chunk.client_mask)
        if hit.size:
            c = hit[0]
            keep = chunk.mask[c]
            return chunk.items[c][keep], chunk.labels[c][keep]
    raise AssertionError(f"client {user} not in round {round_index}")


def _hand_views(exp, before):
    """Per user: (numpy table after its local round, head w, head b)."""
    cfg = exp.cfg.model
    table0 = np.asarray(before.shared.tables["items"])
    item_lr = pfedrec_item_lr(exp.split.num_items, cfg.lr, cfg.lr_eta)
    out = []
    for u in range(exp.split.num_users):
        items, labels = _client_examples(exp, u, 1)
        w, b = _head(before.private_store)
        out.append(numpy_client_round(table0, w[u], b[u], items, labels, cfg.lr, item_lr))
    return out


def _head(store):
    """Every user's score head ``(w [U, d], b [U])`` (the modules' ``nn.Dense(1)``)."""
    head = store.dense["user_head"]
    return np.asarray(head["kernel"])[..., 0], np.asarray(head["bias"])[..., 0]


def test_scores_and_head_match_hand_computation(one_round):
    exp, before, state = one_round
    stored = np.asarray(state.private_store.dense[EVAL_SCORES])
    cands = np.concatenate([exp.val_set.candidates, exp.test_set.candidates], axis=1)
    assert stored.shape == cands.shape and stored.dtype == np.float32
    heads = _head(state.private_store)
    for u, (table, w, b) in enumerate(_hand_views(exp, before)):
        # float32 against float64: the head's and the items' SGD updates (SGD_STEP_ULPS
        # each, of the params they move), then a 4-term score: 2 SGD_STEP_ULPS + 8 ulps.
        expected = table[cands[u]] @ w + b
        assert_trees_close(stored[u], expected, ulps=2 * SGD_STEP_ULPS + 8,
                           scale=np.abs(table).max() * np.abs(w).sum() + abs(b),
                           what=f"user {u} scores")
        assert_trees_close((heads[0][u], heads[1][u]), (w, b), ulps=SGD_STEP_ULPS,
                           scale=max(np.abs(w).max(), abs(b)), what=f"user {u} head")


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_scores_with_the_local_table(one_round, split):
    exp, before, state = one_round
    assert exp.eval_mode == "local"
    eval_set = getattr(exp, f"{split}_set")
    hand = _hand_views(exp, before)
    scores = np.stack([table[eval_set.candidates[u]] @ w + b
                       for u, (table, w, b) in enumerate(hand)])
    expected = mean_metrics(ranking_metrics(scores.astype(np.float32), eval_set.labels,
                                            eval_set.mask))
    got = evaluate_state(exp, state, eval_set)
    names = ("hr@10", "ndcg@10", "auc")
    # The same ranks: a few ulps of 1 (float_compare.METRIC_ULPS).
    assert_trees_close({k: got[k] for k in names}, {k: expected[k] for k in names},
                       ulps=METRIC_ULPS, scale=1.0, what=split)
    # ... which is not what the server's aggregated table gives.
    table = np.asarray(state.shared.tables["items"])
    heads_w, heads_b = _head(state.private_store)
    global_scores = np.stack([table[eval_set.candidates[u]] @ heads_w[u] + float(heads_b[u])
                              for u in range(exp.split.num_users)])
    assert np.max(np.abs(global_scores - scores)) > 1e-2


def test_scores_start_with_the_initial_global_model(one_round):
    exp, before, _ = one_round
    cands = np.concatenate([exp.val_set.candidates, exp.test_set.candidates], axis=1)
    table = np.asarray(before.shared.tables["items"], np.float64)
    w, b = _head(before.private_store)
    want = np.stack([table[cands[u]] @ w[u] + b[u] for u in range(exp.split.num_users)])
    # A 4-term dot plus a bias in float32 against float64: 8 ulps of its largest terms.
    assert_trees_close(before.private_store.dense[EVAL_SCORES], want, ulps=8,
                       scale=np.abs(table).max() * np.abs(w).sum(1).max() + np.abs(b).max(),
                       what="initial scores")


def test_server_averages_the_item_table_over_participants(one_round):
    """table_mean = participants (the reference's mean of full tables): every client
    brings its table; untouched rows are the broadcast ones."""
    exp, before, state = one_round
    table0 = np.asarray(before.shared.tables["items"], np.float64)
    mean = np.mean([t for t, _, _ in _hand_views(exp, before)], axis=0)
    # Each client's two SGD updates in float32 (2 SGD_STEP_ULPS of the table), then the
    # mean over its 20 clients (20 ulps): against float64.
    assert_trees_close(state.shared.tables["items"], mean, ulps=2 * SGD_STEP_ULPS + 20,
                       what="mean table")
    assert np.max(np.abs(mean - table0)) > 1e-3


def test_sparse_equals_dense():
    results = []
    for sparse in (True, False):
        exp = build_experiment(_config(sparse=sparse, batch_size=16))
        state = exp.algorithm.init(exp.keys["init"])
        for r in (1, 2):
            state, _ = run_round(exp, state, r)
        results.append((state, evaluate_state(exp, state, exp.test_set)))
    (sparse, m_sparse), (dense, m_dense) = results
    # Gathered rows and full tables run the same float ops on the rows used: bit-identical.
    assert_trees_equal(sparse.shared, dense.shared, what="shared")
    assert_trees_equal(sparse.private_store, dense.private_store, what="private")
    assert m_sparse == m_dense


@pytest.mark.parametrize("model, model_args", [
    ("fedrap", {"weight_decay": 0.0, "lr_args": 1.0}),     # private item table: candidates appended for scoring
    ("fedrap", {"weight_decay": 1e-2, "lr_args": 1.0}),    # row decay: candidates inside the local table
    ("feddmr", {"history_len": 3, "heads": 2}),   # memory rows index the scoring table
    # weight decay moves rows no example reaches (PFedRec's whole-table SGD): row decay
    ("pfedrec", {"weight_decay": 1e-2, "lr_eta": 1.0}),
    ("local", {"weight_decay": 1e-2, "lr_eta": 1.0}),
])
def test_local_mode_sparse_equals_dense_for_other_models(model, model_args):
    """Sparse local evaluation (candidates looked up in the local table, or appended
    after it for scoring) gives the dense mode's stored scores, private store and
    shared params, for private item tables, weight decay and models with a memory."""
    results = []
    for sparse in (True, False):
        raw = {**RAW, "train": {**RAW["train"], "model": model, "sparse": sparse,
                                "batch_size": 16, "eval_mode": "local"},
               "model": {**RAW["model"], **model_args}}
        exp = build_experiment(config_lib.build_config(raw))
        state = exp.algorithm.init(exp.keys["init"])
        for r in (1, 2):
            state, _ = run_round(exp, state, r)
        results.append((state, evaluate_state(exp, state, exp.test_set)))
    (sparse, m_sparse), (dense, m_dense) = results
    if model == "feddmr":
        # Adam: lr x a gradient's relative rounding difference per step (ADAM_ULPS).
        budget = dict(ulps=ADAM_ULPS, scale=adam_reach(exp, rounds=2))
    else:
        # SGD (PFedRec's and the local probe's: two updates per batch) carries a rounding
        # difference linearly (SGD_STEP_ULPS per update, of the largest value); the stored
        # scores are 4-term dots of such params (a factor |w|_1 < 4, and their own 8 ulps).
        updates = (1 if model == "fedrap" else 2) * max_local_steps(exp, rounds=2)
        budget = dict(ulps=4 * updates * SGD_STEP_ULPS + 8)
    assert_trees_close(sparse.shared, dense.shared, **budget, what="shared")
    assert_trees_close(sparse.private_store, dense.private_store, **budget, what="private")
    # The same ranks: a few ulps of 1 (float_compare.METRIC_ULPS).
    assert_trees_close(m_sparse, m_dense, ulps=METRIC_ULPS, scale=1.0, what="test metrics")
    scores = np.asarray(sparse.private_store.dense[EVAL_SCORES])
    assert np.ptp(scores) > 0        # clients trained and scored (not the initial scores only)


def test_local_evaluation_refuses_a_foreign_eval_set(one_round):
    exp, _, state = one_round
    other = dataclasses.replace(exp.val_set)
    with pytest.raises(ValueError, match="val_set and test_set"):
        evaluate_state(exp, state, other)
