"""Synthetic generator: seeded, sized, power-law, and learnable by a factor model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feddmr_jax.data import build_eval_sets, generate_synthetic, load_dataset, split_interactions
from feddmr_jax.errors import DataError


@pytest.fixture(scope="module")
def default():
    return load_dataset("synthetic")


def test_default_size_and_contract(default):
    t = default.table
    assert default.num_users == 2000 and 950 <= default.num_items <= 1000
    assert [str(d) for d in t.dtypes] == ["int32", "int32", "int64", "float32"]
    assert set(t.user) == set(range(2000)) and set(t.item) == set(range(default.num_items))
    assert not t.duplicated(["user", "item"]).any()
    per_user = t.groupby("user").size()
    assert per_user.min() >= 5
    assert 24 <= per_user.mean() <= 33  # target 30 (heavy users are capped)


def test_deterministic_by_seed(default):
    again = generate_synthetic(seed=0)
    pd.testing.assert_frame_equal(default.table, again.table)
    other = generate_synthetic(seed=1)
    assert not default.table.equals(other.table)


def test_options_and_sizes():
    inter = load_dataset("synthetic", num_users=5000, num_items=3000, mean_interactions=12, seed=4)
    per_user = inter.table.groupby("user").size()
    assert inter.num_users == 5000 and per_user.min() >= 5
    assert 10 <= per_user.mean() <= 14
    ts = inter.table.timestamp
    assert ts.min() >= 1_500_000_000 and ts.max() <= 1_500_000_000 + 2 * 365 * 86_400


def test_power_law_activity_and_popularity():
    inter = generate_synthetic(num_users=20000, num_items=5000, mean_interactions=20, seed=5)
    per_user = np.sort(inter.table.groupby("user").size().to_numpy())[::-1]
    per_item = np.sort(inter.table.groupby("item").size().to_numpy())[::-1]
    # heavy tails: the top 10 % of users / items hold far more than 10 % of interactions
    assert per_user[:2000].sum() / per_user.sum() > 0.3
    assert per_item[:500].sum() / per_item.sum() > 0.3
    assert per_user.max() > 20 * np.median(per_user)


def test_invalid_sizes():
    with pytest.raises(DataError, match="num_items >= 10"):
        generate_synthetic(num_users=10, num_items=5)


def _hit_rate(scores, cand, k=10):
    s = np.take_along_axis(scores, cand, axis=1)
    return float(np.mean((s[:, 1:] >= s[:, :1]).sum(axis=1) < k))


def test_factor_model_beats_popularity():
    inter = generate_synthetic(num_users=1500, num_items=800, mean_interactions=30, seed=6)
    split = split_interactions(inter, "loo")
    _, test = build_eval_sets(split, 99, seed=0)
    x = np.zeros((split.num_users, split.num_items), np.float32)
    x[split.train.user, split.train.item] = 1.0
    x[split.val.user, split.val.item] = 1.0
    pop = np.broadcast_to(x.sum(axis=0), x.shape)
    _, v = np.linalg.eigh(x.T @ x)  # rank-16 truncated SVD via the item Gram matrix
    v = v[:, -16:]
    factor = (x @ v) @ v.T
    hr_pop, hr_factor = _hit_rate(pop, test.candidates), _hit_rate(factor, test.candidates)
    assert hr_factor > hr_pop + 0.15, (hr_pop, hr_factor)
