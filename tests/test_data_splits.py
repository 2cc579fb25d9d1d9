"""Split invariants on hand-made and synthetic interactions."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from feddmr_jax.data import generate_synthetic, positives_csr, split_interactions, train_csr
from feddmr_jax.data.tidy import build_interactions
from feddmr_jax.data.types import Interactions


def _inter(rows):
    """rows: (user, item, timestamp) with original ids."""
    u, i, t = (np.array(c) for c in zip(*rows))
    return build_interactions("hand", u, i, None, t)


def _items(frame, split, user_orig):
    uid = int(np.flatnonzero(split.user_ids == user_orig)[0])
    sel = frame[frame.user == uid]
    return [int(split.item_ids[i]) for i in sel.item]


HAND = [  # user 1: 4 items, a tie at t=5; user 2: 2 items (dropped); user 3: 3 items
    (1, 40, 5), (1, 10, 1), (1, 30, 5), (1, 20, 3),
    (2, 10, 1), (2, 20, 2),
    (3, 50, 9), (3, 10, 7), (3, 20, 8),
]


def test_loo_hand_example(caplog):
    with caplog.at_level(logging.WARNING):
        split = split_interactions(_inter(HAND), "loo")
    assert split.dropped_users == 1 and "dropped 1 of 3 users" in caplog.text
    assert list(split.user_ids) == [1, 3] and split.num_users == 2 and split.num_items == 5
    # user 1: t=5 tie broken by file row: 30 comes after 40, so 30 is the latest
    assert _items(split.test, split, 1) == [30] and _items(split.val, split, 1) == [40]
    assert _items(split.train, split, 1) == [10, 20]
    assert _items(split.test, split, 3) == [50] and _items(split.val, split, 3) == [20]
    assert _items(split.train, split, 3) == [10]
    for part in (split.train, split.val, split.test):
        assert list(part.columns) == ["user", "item", "timestamp", "rating"]
        assert part.equals(part.sort_values(["user", "timestamp"], kind="stable"))


def test_row_tie_break_follows_the_row_order():
    """Reversing the rows swaps which of user 1's tied items is held out; nothing else moves."""
    inter = _inter(HAND)
    flipped = inter.table.iloc[::-1].reset_index(drop=True)
    other = Interactions("hand", flipped, inter.user_ids, inter.item_ids)
    split = split_interactions(other)
    assert _items(split.test, split, 1) == [40] and _items(split.val, split, 1) == [30]
    assert _items(split.test, split, 3) == [50] and _items(split.val, split, 3) == [20]


@pytest.mark.parametrize("n, expected", [(3, (1, 1, 1)), (4, (2, 1, 1)), (10, (8, 1, 1)),
                                         (15, (11, 2, 2)), (25, (19, 3, 3)), (100, (80, 10, 10))])
def test_ratio_rounding(n, expected):
    rows = [(7, i, i) for i in range(n)] + [(8, 0, 0), (8, 1, 1), (8, 2, 2)]
    split = split_interactions(_inter(rows), "ratio")
    uid = int(np.flatnonzero(split.user_ids == 7)[0])
    got = tuple(int((p.user == uid).sum()) for p in (split.train, split.val, split.test))
    assert got == expected
    # test = the latest items, validation just before
    assert _items(split.test, split, 7) == list(range(n - expected[2], n))


@pytest.fixture(scope="module")
def synth():
    return generate_synthetic(num_users=300, num_items=400, mean_interactions=15, seed=1)


@pytest.mark.parametrize("scheme", ["loo", "ratio"])
def test_split_invariants_on_synthetic(synth, scheme):
    split = split_interactions(synth, scheme)
    assert split.dropped_users == 0 and split.num_users == synth.num_users
    total = len(split.train) + len(split.val) + len(split.test)
    assert total == len(synth.table)
    keys = [set(zip(p.user, p.item)) for p in (split.train, split.val, split.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    for part in (split.train, split.val, split.test):
        assert part.groupby("user").size().min() >= 1
    if scheme == "loo":
        assert len(split.val) == len(split.test) == split.num_users
    last_train = split.train.groupby("user").timestamp.max()
    first_val = split.val.groupby("user").timestamp.min()
    last_val = split.val.groupby("user").timestamp.max()
    first_test = split.test.groupby("user").timestamp.min()
    assert (first_val >= last_train).all() and (first_test >= last_val).all()


def test_train_csr_chronological_and_positives_sorted(synth):
    split = split_interactions(synth, "loo")
    csr = train_csr(split)
    assert csr.num_users == split.num_users and csr.indptr[-1] == len(split.train)
    assert np.array_equal(csr.lengths, split.train.groupby("user").size().to_numpy())
    u = 5
    rows = split.train[split.train.user == u]
    assert list(csr.items[csr.indptr[u]:csr.indptr[u + 1]]) == list(rows.item)
    pos = positives_csr(split)
    assert pos.indptr[-1] == len(synth.table)
    seg = pos.items[pos.indptr[u]:pos.indptr[u + 1]]
    expected = sorted(set(rows.item) | {int(split.val.item[u]), int(split.test.item[u])})
    assert list(seg) == expected


def test_csr_lengths_of_rows_equal_the_full_lengths(synth):
    csr = train_csr(split_interactions(synth, "loo"))
    rows = np.array([5, 0, 5, csr.num_users - 1])
    np.testing.assert_array_equal(csr.lengths_of(rows), csr.lengths[rows])
    assert csr.lengths_of(np.array([], np.int64)).shape == (0,)
