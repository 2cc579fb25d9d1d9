"""The ``ratio`` split with full ranking, end to end: a few rounds of training,
then validation and test metrics against a numpy full ranking of each user's
scores over the items it has not seen (training items, and for test also the
validation items, are not ranked)."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

from feddmr_jax.evaluate import score_user
from feddmr_jax.train import build_experiment, evaluate_state, run_round

from engine_helpers import tiny_config
from float_compare import METRIC_ULPS, assert_trees_close

K = 10


def _numpy_metrics(scores, labels, ranked):
    """hr@K, ndcg@K, mrr and auc of one user (pessimistic ties), or None if no positive."""
    s, y = scores[ranked], labels[ranked]
    if not y.any():
        return None
    rank = np.array([1 + np.sum(s > v) + np.sum(s == v) - 1 for v in s])  # pessimistic
    pos = rank[y]
    hits = pos[pos <= K]
    idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(pos), K) + 1))
    out = {"hr@10": float(len(hits) > 0), "ndcg@10": sum(1 / math.log2(r + 1) for r in hits) / idcg,
           "mrr": 1.0 / pos.min()}
    neg = s[~y]
    if len(neg):
        out["auc"] = float(np.mean([(p > neg).sum() + 0.5 * (p == neg).sum()
                                    for p in s[y]]) / len(neg))
    return out


@pytest.fixture(scope="module")
def trained():
    cfg = tiny_config(rounds=3)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split="ratio"))
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    for r in range(1, 4):
        state, _ = run_round(exp, state, r)
    return exp, state


def test_full_ranking_masks_every_seen_item(trained):
    exp, _ = trained
    split = exp.split
    assert exp.val_set.candidates.shape == (split.num_users, split.num_items)
    for frame, eval_set in ((split.train, exp.val_set), (split.train, exp.test_set),
                            (split.val, exp.test_set)):
        assert not eval_set.mask[frame["user"].to_numpy(), frame["item"].to_numpy()].any()
    # Validation items are ranked in validation, and are its labels.
    val_u, val_i = split.val["user"].to_numpy(), split.val["item"].to_numpy()
    assert exp.val_set.mask[val_u, val_i].all() and exp.val_set.labels[val_u, val_i].all()


@pytest.mark.parametrize("which", ["val", "test"])
def test_metrics_equal_a_numpy_full_ranking(trained, which):
    exp, state = trained
    split = exp.split
    eval_set = exp.val_set if which == "val" else exp.test_set
    got = evaluate_state(exp, state, eval_set)
    for value in got.values():
        assert math.isfinite(value) and 0.0 <= value <= 1.0

    seen = {}
    hidden = [split.train] + ([split.val] if which == "test" else [])
    for frame in hidden:
        for u, i in zip(frame["user"].to_numpy(), frame["item"].to_numpy()):
            seen.setdefault(int(u), set()).add(int(i))
    items = np.arange(split.num_items, dtype=np.int32)
    rows = {}
    for u in range(split.num_users):
        scores = np.asarray(jax.jit(score_user, static_argnums=0)(
            exp.model, state.shared, state.private_store, np.int32(u), items,
            exp.planner.history[u], exp.planner.history_mask[u]))
        ranked = np.array([i not in seen.get(u, set()) for i in items])
        ref = _numpy_metrics(scores, eval_set.labels[u], ranked)
        if ref is not None:
            for name, value in ref.items():
                rows.setdefault(name, []).append(value)
    assert len(rows["hr@10"]) >= split.num_users // 2
    # The same ranks as the float64 numpy metrics of the same scores (METRIC_ULPS).
    assert_trees_close({name: got[name] for name in rows},
                       {name: float(np.mean(values)) for name, values in rows.items()},
                       ulps=METRIC_ULPS, scale=1.0, what=which)
