"""Evaluation modes (``train.eval_mode``): local = the client's model right after its own
local training in its last round; global = the aggregated shared params + its private ones.

The local mode of every method is built once in the engine (federated/parallel.py
scores the client's candidates at the end of its local update). Checks:

* PFedRec (reference default: local) gives, with partial participation over
  several rounds, the metrics of the reference's local evaluation, redone here
  in numpy one client at a time (clients not sampled keep their last scores;
  before its first round a client scores with the initial global model). This
  test was written against the engine's earlier evaluation view
  (private_store EVAL_VIEW, candidate item rows) and passed there first.
* With a learning rate of 0 nothing moves, so local and global must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.federated.sampling import sample_clients
from feddmr_jax.metrics import mean_metrics, ranking_metrics
from feddmr_jax.methods.pfedrec import pfedrec_item_lr
from feddmr_jax.train import build_experiment, evaluate_state, run_round

from engine_helpers import copy_tree
from float_compare import METRIC_ULPS, assert_trees_close

DATA = {"dataset": "synthetic", "synthetic_users": 20, "synthetic_items": 40,
        "synthetic_interactions": 8.0, "eval_negatives": 10}



def _head(store):
    """Every user's PFedRec score head ``(w [U, d], b [U])`` (an ``nn.Dense(1)``)."""
    head = store.dense["user_head"]
    return np.asarray(head["kernel"])[..., 0], np.asarray(head["bias"])[..., 0]

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _numpy_pfedrec_round(table, w, b, items, labels, head_lr, item_lr):
    """The reference's batch on all of one client's examples: head SGD, then items SGD."""
    table, w, b = (np.array(x, np.float64) for x in (table, w, b))
    n = len(items)
    rows = table[items]
    g = (_sigmoid(rows @ w + b) - labels) / n
    w, b = w - head_lr * (g[:, None] * rows).sum(0), b - head_lr * g.sum()
    g = (_sigmoid(rows @ w + b) - labels) / n
    grad = np.zeros_like(table)
    np.add.at(grad, items, g[:, None] * w[None, :])
    return table - item_lr * grad, w, b


def _examples(chunks, user):
    for chunk in chunks:
        hit = np.flatnonzero((chunk.client_ids == user) & chunk.client_mask)
        if hit.size:
            keep = chunk.mask[hit[0]]
            return chunk.items[hit[0]][keep], chunk.labels[hit[0]][keep]
    raise AssertionError(f"client {user} not in the round")


def _metrics(scores, eval_set):
    return mean_metrics(ranking_metrics(scores.astype(np.float32), eval_set.labels,
                                        eval_set.mask))


@pytest.mark.parametrize("eval_mode, sequential", [(None, False), ("local", False),
                                                    ("local", True)])
def test_pfedrec_local_mode_is_the_reference_local_evaluation(eval_mode, sequential):
    # One batch per client (batch >= padded examples): no shuffling to mirror.
    train = {"model": "pfedrec", "rounds": 3, "batch_size": 512, "chunk_size": 4,
             "clients_per_round": 7}
    if eval_mode is not None:
        train["eval_mode"] = eval_mode
    cfg = config_lib.build_config({"data": DATA, "train": train, "model": {"dim": 4}})
    exp = build_experiment(cfg, sequential=sequential)
    state = exp.algorithm.init(exp.keys["init"])
    mcfg, num_users = exp.cfg.model, exp.split.num_users
    item_lr = pfedrec_item_lr(exp.split.num_items, mcfg.lr, mcfg.lr_eta)
    cands = np.concatenate([exp.val_set.candidates, exp.test_set.candidates], axis=1)
    cv = exp.val_set.candidates.shape[1]
    table0 = np.asarray(state.shared.tables["items"], np.float64)
    w0, b0 = _head(state.private_store)
    scores = np.stack([table0[cands[u]] @ np.asarray(w0[u], np.float64)
                       + float(b0[u]) for u in range(num_users)])
    seen = set()
    for r in (1, 2, 3):
        before = copy_tree(state)
        participants = sample_clients(exp.keys["sample"], r, num_users, exp.clients_per_round)
        chunks = plan_round(exp.planner, participants, r)
        for u in participants:
            items, labels = _examples(chunks, u)
            w_before, b_before = _head(before.private_store)
            table, w, b = _numpy_pfedrec_round(
                before.shared.tables["items"], w_before[u], b_before[u], items, labels,
                mcfg.lr, item_lr)
            scores[u] = table[cands[u]] @ w + b
        seen |= set(participants.tolist())
        state, _ = run_round(exp, state, r)
        for eval_set, part in ((exp.val_set, scores[:, :cv]), (exp.test_set, scores[:, cv:])):
            got = evaluate_state(exp, state, eval_set)
            want = _metrics(part, eval_set)
            # The same ranks: a few ulps of 1 (float_compare.METRIC_ULPS).
            names = ("hr@10", "ndcg@10", "auc", "mrr")
            assert_trees_close({k: got[k] for k in names}, {k: want[k] for k in names},
                               ulps=METRIC_ULPS, scale=1.0, what=f"round {r}")
    assert 0 < len(seen) < num_users        # some clients never trained: initial scores count


def _feddmr_config(**train):
    return config_lib.build_config({
        "data": DATA,
        "train": {"model": "feddmr", "rounds": 2, "batch_size": 16, "chunk_size": 4,
                  "clients_per_round": 12, "eval_mode": "local", **train},
        "model": {"dim": 8, "heads": 2, "layers": 1, "history_len": 4}})


def test_local_and_global_agree_when_nothing_is_learned():
    """lr 0: the local model is the global one, so the stored scores (and metrics) are
    the global evaluation's, for clients that trained and clients that did not.
    (That they differ once something is learned: test_local_eval.py.)"""
    import jax

    from feddmr_jax.evaluate import evaluate, score_user
    from feddmr_jax.federated.private_store import EVAL_SCORES

    exp = build_experiment(_feddmr_config(lr=0.0, embedding_lr=0.0))
    assert exp.eval_mode == "local"
    state = exp.algorithm.init(exp.keys["init"])
    for r in (1, 2):
        state, _ = run_round(exp, state, r)
    stored = np.asarray(state.private_store.dense[EVAL_SCORES])
    score_all = jax.jit(jax.vmap(lambda *a: score_user(exp.model, *a),
                                 in_axes=(None, None, 0, 0, 0, 0)))
    users = np.arange(exp.split.num_users, dtype=np.int32)
    cv = exp.val_set.candidates.shape[1]
    for eval_set, cols in ((exp.val_set, slice(0, cv)), (exp.test_set, slice(cv, None))):
        scores = score_all(state.shared, state.private_store, users, eval_set.candidates,
                           exp.planner.history, exp.planner.history_mask)
        # One forward pass (a layer of attention, norms, FFN, head: ~100 roundings) in two
        # programs: 2**8 ulps of the scores.
        assert_trees_close(stored[:, cols], scores, ulps=2**8, what="stored scores")
        local = evaluate_state(exp, state, eval_set)
        glob = evaluate(exp.scorer, state.shared, state.private_store, eval_set,
                        exp.planner.history, exp.planner.history_mask)
        names = ("hr@10", "ndcg@10", "auc", "mrr")
        assert_trees_close({k: local[k] for k in names}, {k: glob[k] for k in names},
                           ulps=METRIC_ULPS, scale=1.0, what="local vs global")


def test_local_mode_is_refused_with_full_ranking():
    from feddmr_jax.errors import ConfigError

    cfg = config_lib.build_config({"data": {**DATA, "split": "ratio"},
                                   "train": {"model": "pfedrec"}, "model": {"dim": 4}})
    with pytest.raises(ConfigError, match="eval_mode 'local' .* ranks all items"):
        build_experiment(cfg)
    # global works with ratio, also for PFedRec
    exp = build_experiment(config_lib.build_config({
        "data": {**DATA, "split": "ratio"}, "train": {"model": "pfedrec", "eval_mode": "global"},
        "model": {"dim": 4}}))
    assert exp.eval_mode == "global"
