"""evaluate() over more than one chunk of users (the padded last chunk runs).

1100 synthetic users: one full chunk of 1024 and a last chunk of 76 real users
padded to 1024. The means must equal those of scoring every user on its own
(a chunk of one, no padding) and averaging in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.evaluate import evaluate
from feddmr_jax.train import build_experiment, evaluate_state

from float_compare import METRIC_ULPS, assert_trees_close

USERS = 1100


@pytest.fixture(scope="module")
def initial():
    cfg = config_lib.build_config({
        "data": {"dataset": "synthetic", "synthetic_users": USERS, "synthetic_items": 60,
                 "synthetic_interactions": 6.0, "eval_negatives": 10},
        "train": {"model": "fedmf", "rounds": 1, "batch_size": 32, "chunk_size": 256},
        "model": {"dim": 4}})
    exp = build_experiment(cfg)
    return exp, exp.algorithm.init(exp.keys["init"])      # random init: varied scores


def _one_by_one(exp, state, eval_set) -> dict[str, float]:
    """Every user scored alone; means over valid users (auc over auc_valid) in numpy."""
    per_user: dict[str, list[float]] = {}
    for u in range(eval_set.candidates.shape[0]):
        sl = slice(u, u + 1)
        out = exp.scorer(state.shared, state.private_store, np.array([u], np.int32),
                         eval_set.candidates[sl], eval_set.labels[sl], eval_set.mask[sl],
                         exp.planner.history[sl], exp.planner.history_mask[sl],
                         np.array([True]))
        for name, value in out.items():
            per_user.setdefault(name, []).append(float(np.asarray(value)[0]))
    assert all(per_user.pop("finite"))
    valid = np.array(per_user.pop("valid"), bool)
    auc_valid = valid & np.array(per_user.pop("auc_valid"), bool)
    return {name: float(np.mean(np.array(v)[auc_valid if name == "auc" else valid]))
            for name, v in per_user.items()}


def test_more_than_one_chunk_equals_users_one_by_one(initial):
    exp, state = initial
    assert exp.split.num_users == USERS > 1024
    chunked = evaluate_state(exp, state, exp.val_set)          # chunk_size 1024
    alone = _one_by_one(exp, state, exp.val_set)
    assert set(chunked) == set(alone)
    # Scored in chunks of another size (rounded alike or not), the same ranks: a few ulps
    # of 1 (float_compare.METRIC_ULPS); a rank flip moves a mean by >= 1/(1100*11*10).
    assert_trees_close(chunked, alone, ulps=METRIC_ULPS, scale=1.0, what="chunked")
    # A different chunking (uneven, several padded chunks) gives the same means.
    other = evaluate(exp.scorer, state.shared, state.private_store, exp.val_set,
                     exp.planner.history, exp.planner.history_mask, chunk_size=300)
    assert_trees_close(other, alone, ulps=METRIC_ULPS, scale=1.0, what="chunks of 300")
