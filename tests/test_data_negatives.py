"""Negative sampling invariants: no positives, disjoint, deterministic, fresh per round."""

from __future__ import annotations

import numpy as np
import pytest

from feddmr_jax.data import (build_eval_sets, generate_synthetic, positives_csr,
                             sample_eval_negatives, sample_train_negatives, split_interactions,
                             train_csr)
from feddmr_jax.data.tidy import build_interactions
from feddmr_jax.data.types import TrainCSR
from feddmr_jax.errors import DataError


@pytest.fixture(scope="module")
def split():
    inter = generate_synthetic(num_users=400, num_items=600, mean_interactions=20, seed=2)
    return split_interactions(inter, "loo")


def _positive_sets(split):
    pos = positives_csr(split)
    return [set(pos.items[pos.indptr[u]:pos.indptr[u + 1]]) for u in range(split.num_users)]


def test_eval_negatives_invariants(split):
    val, test = sample_eval_negatives(split, 99, seed=0)
    assert val.shape == test.shape == (split.num_users, 99) and val.dtype == np.int32
    sets = _positive_sets(split)
    for u in range(split.num_users):
        assert len(set(val[u])) == 99 and len(set(test[u])) == 99
        assert not set(val[u]) & set(test[u])
        assert not (set(val[u]) | set(test[u])) & sets[u]
    assert val.min() >= 0 and val.max() < split.num_items


def test_eval_negatives_deterministic_by_seed(split):
    a = sample_eval_negatives(split, 99, seed=0)
    b = sample_eval_negatives(split, 99, seed=0)
    c = sample_eval_negatives(split, 99, seed=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_crowded_users_use_exact_fallback():
    # user 0 knows 200 of 210 items: only 10 non-positives, 5 + 5 needed
    rows = [(0, i, i) for i in range(200)] + [(1, i, i) for i in range(200, 210)]
    rows += [(1, 0, 300), (1, 1, 301)]
    u, i, t = (np.array(c) for c in zip(*rows))
    split = split_interactions(build_interactions("crowded", u, i, None, t))
    val, test = sample_eval_negatives(split, 5, seed=0)
    assert sorted(set(val[0]) | set(test[0])) == list(range(200, 210))
    with pytest.raises(DataError, match=r"^user 0 has only 10 non-positive items of 210, "
                                        "fewer than the 12"):   # the original id, plain
        sample_eval_negatives(split, 6, seed=0)


def test_build_eval_sets_loo(split):
    val, test = build_eval_sets(split, 99, seed=0)
    neg_val, neg_test = sample_eval_negatives(split, 99, seed=0)
    assert val.candidates.shape == (split.num_users, 100)
    assert np.array_equal(val.candidates[:, 0], split.val.item.to_numpy())
    assert np.array_equal(test.candidates[:, 0], split.test.item.to_numpy())
    assert np.array_equal(val.candidates[:, 1:], neg_val)
    assert np.array_equal(test.candidates[:, 1:], neg_test)
    assert val.labels[:, 0].all() and not val.labels[:, 1:].any() and val.mask.all()


def test_eval_negatives_drawn_per_block_of_users(split, monkeypatch):
    """Blocks bound the build's memory: no draw sees more users than a block, and the
    blocked negatives keep every invariant (and build_eval_sets writes the same ones)."""
    from feddmr_jax.data import negatives

    rows = []
    real = negatives._sample
    monkeypatch.setattr(negatives, "_sample",
                        lambda rng, user, *a, **k: rows.append(len(user)) or real(rng, user, *a, **k))
    monkeypatch.setattr(negatives, "EVAL_BLOCK_USERS", 64)
    val, test = sample_eval_negatives(split, 99, seed=0)
    assert rows == [64] * (split.num_users // 64) + [split.num_users % 64]
    sets = _positive_sets(split)
    for u in range(split.num_users):
        assert len(set(val[u])) == 99 and not set(val[u]) & set(test[u])
        assert not (set(val[u]) | set(test[u])) & sets[u]
    ev_val, ev_test = build_eval_sets(split, 99, seed=0)
    assert np.array_equal(ev_val.candidates[:, 1:], val)
    assert np.array_equal(ev_test.candidates[:, 1:], test)
    assert np.array_equal(sample_eval_negatives(split, 99, seed=0)[0], val)  # deterministic


def test_loo_labels_and_mask_are_shared_read_only_rows(split):
    val, test = build_eval_sets(split, 99, seed=0)
    for ev in (val, test):
        assert ev.labels.shape == ev.mask.shape == (split.num_users, 100)
        assert not ev.labels.flags.writeable and not ev.mask.flags.writeable
        assert ev.labels.strides[0] == 0 and ev.mask.strides[0] == 0   # one row in memory
        assert ev.candidates.flags.c_contiguous


def test_build_eval_sets_ratio():
    inter = generate_synthetic(num_users=50, num_items=100, mean_interactions=20, seed=3)
    split = split_interactions(inter, "ratio")
    val, test = build_eval_sets(split)
    n = split.num_items
    assert val.candidates.shape == (50, n) and (val.candidates[7] == np.arange(n)).all()
    u = 7
    tr = set(split.train.item[split.train.user == u])
    va = set(split.val.item[split.val.user == u])
    te = set(split.test.item[split.test.user == u])
    assert set(np.flatnonzero(val.labels[u])) == va and set(np.flatnonzero(test.labels[u])) == te
    assert set(np.flatnonzero(~val.mask[u])) == tr
    assert set(np.flatnonzero(~test.mask[u])) == tr | va


def test_train_negatives_aligned_and_valid(split):
    train, pos = train_csr(split), positives_csr(split)
    users = np.array([9, 3, 200])
    neg = sample_train_negatives(train, pos, np.random.default_rng([0, 1]), 4, users=users)
    assert neg.shape == (int(train.lengths[users].sum()), 4) and neg.dtype == np.int32
    sets = _positive_sets(split)
    row_user = np.repeat(users, train.lengths[users])
    assert all(not set(neg[r]) & sets[row_user[r]] for r in range(len(neg)))
    full = sample_train_negatives(train, pos, np.random.default_rng([0, 1]))
    assert full.shape == (train.indptr[-1], 4)


def test_train_negatives_fresh_per_round_and_reproducible(split):
    train, pos = train_csr(split), positives_csr(split)
    r1 = sample_train_negatives(train, pos, np.random.default_rng([0, 1]))
    r1b = sample_train_negatives(train, pos, np.random.default_rng([0, 1]))
    r2 = sample_train_negatives(train, pos, np.random.default_rng([0, 2]))
    assert np.array_equal(r1, r1b) and not np.array_equal(r1, r2)


def test_train_negatives_crowded_and_impossible():
    exclude = TrainCSR(indptr=np.array([0, 9, 12]), items=np.array(
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2], np.int32), num_items=10)
    train = TrainCSR(indptr=np.array([0, 3, 4]), items=np.array([0, 1, 2, 0], np.int32),
                     num_items=10)
    neg = sample_train_negatives(train, exclude, np.random.default_rng(0), 6)
    assert (neg[:3] == 9).all() and not np.isin(neg[3], [0, 1, 2]).any()
    full = TrainCSR(indptr=np.array([0, 10]), items=np.arange(10, dtype=np.int32), num_items=10)
    with pytest.raises(DataError, match="has positives for all 10 items"):
        sample_train_negatives(full, full, np.random.default_rng(0))
