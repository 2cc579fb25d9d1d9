"""The round planner (federated/rounds.py) row by row, in numpy.

Each participant appears exactly once per round; its row holds its training
positives first (label 1), then ``num_negatives`` per positive (label 0) drawn
outside the exclusion list the planner was given, then masked padding; the
negatives change from round to round. And the experiment hands the planner
every known positive (train, validation and test) to exclude.
"""

from __future__ import annotations

import numpy as np
import pytest

from feddmr_jax.data import load_dataset, positives_csr, split_interactions, train_csr
from feddmr_jax.data.types import TrainCSR
from feddmr_jax.federated.rounds import build_planner, plan_round

K = 3          # negatives per positive
BANNED = 12    # items 0..BANNED-1 are added to every user's exclusion list


@pytest.fixture(scope="module")
def split():
    inter = load_dataset("synthetic", num_users=40, num_items=60, mean_interactions=8.0, seed=3)
    return split_interactions(inter, scheme="loo")


def _with_banned(exclude: TrainCSR) -> TrainCSR:
    """``exclude`` plus items 0..BANNED-1 in every row (rows sorted by item)."""
    rows = [np.union1d(exclude.items[exclude.indptr[u]:exclude.indptr[u + 1]],
                       np.arange(BANNED)) for u in range(exclude.num_users)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return TrainCSR(indptr, np.concatenate(rows).astype(np.int32), exclude.num_items)


def _planner(split, exclude, **kw):
    opts = dict(history_len=4, num_negatives=K, batch_size=16, chunk_size=4, seed=7)
    return build_planner(train_csr(split), exclude, **{**opts, **kw})


def _rows(chunks):
    """``{client id: (items, labels, mask)}`` of the real rows; checks the padded ones."""
    out = {}
    for c in chunks:
        for j in range(len(c.client_ids)):
            if not c.client_mask[j]:
                assert not c.mask[j].any() and not c.labels[j].any()
                assert not c.history_mask[j].any() and not c.update_nan[j]
                continue
            cid = int(c.client_ids[j])
            assert cid not in out, f"client {cid} appears twice in one round"
            out[cid] = (np.asarray(c.items[j]), np.asarray(c.labels[j]), np.asarray(c.mask[j]))
    return out


def test_each_participant_once_positives_first_then_negatives_then_padding(split):
    train = train_csr(split)
    exclude = _with_banned(positives_csr(split))
    planner = _planner(split, exclude)
    participants = np.arange(0, split.num_users, 3)
    rows = _rows(plan_round(planner, participants, 1))
    assert sorted(rows) == participants.tolist()
    for u, (items, labels, mask) in rows.items():
        pos = train.items[train.indptr[u]:train.indptr[u + 1]]
        n, real = len(pos), (1 + K) * len(pos)
        np.testing.assert_array_equal(items[:n], pos)                 # chronological positives
        np.testing.assert_array_equal(labels[:n], 1.0)
        np.testing.assert_array_equal(labels[n:], 0.0)
        np.testing.assert_array_equal(mask, np.arange(len(mask)) < real)
        negatives = items[n:real]
        banned = exclude.items[exclude.indptr[u]:exclude.indptr[u + 1]]
        assert not np.isin(negatives, banned).any(), u
        assert ((0 <= negatives) & (negatives < split.num_items)).all()


def test_negatives_change_per_round_and_repeat_per_seed(split):
    planner = _planner(split, positives_csr(split))
    users = np.arange(split.num_users)
    r1, r2 = _rows(plan_round(planner, users, 1)), _rows(plan_round(planner, users, 2))
    again = _rows(plan_round(planner, users, 1))
    changed = 0
    for u in users:
        np.testing.assert_array_equal(r1[u][0], again[u][0])          # same seed and round
        changed += not np.array_equal(r1[u][0], r2[u][0])
        np.testing.assert_array_equal(r1[u][1], r2[u][1])              # same layout
    assert changed >= 0.9 * len(users)


@pytest.mark.parametrize("train_negatives", ["reference", "strict"])
def test_experiment_planner_exclusion_follows_data_train_negatives(train_negatives):
    """train.py hands the planner the exclusion list ``data.train_negatives`` names:
    ``reference`` every known positive (no held-out item is ever a negative), ``strict``
    the training positives only (held-out items are drawn, training positives never)."""
    import dataclasses

    from feddmr_jax.train import build_experiment

    from engine_helpers import tiny_config

    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                            train_negatives=train_negatives))
    exp = build_experiment(cfg)
    held_out, train_pos = {}, {}
    for part in (exp.split.val, exp.split.test):
        for u, i in zip(part["user"].to_numpy(), part["item"].to_numpy()):
            held_out.setdefault(int(u), set()).add(int(i))
    for u, i in zip(exp.split.train["user"].to_numpy(), exp.split.train["item"].to_numpy()):
        train_pos.setdefault(int(u), set()).add(int(i))
    hits = train_hits = 0
    for r in range(1, 9):
        rows = _rows(plan_round(exp.planner, np.arange(exp.split.num_users), r))
        for u, (items, labels, mask) in rows.items():
            negatives = set(items[mask & (labels == 0)].tolist())
            hits += len(negatives & held_out.get(u, set()))
            train_hits += len(negatives & train_pos.get(u, set()))
    assert train_hits == 0
    if train_negatives == "reference":
        assert hits == 0
    else:
        assert hits > 0
