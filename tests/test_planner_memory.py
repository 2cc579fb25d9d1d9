"""Memory bounded by the chunk: training negatives drawn per chunk by a counter-based
draw (a client's negatives depend only on seed, round and its id), exclusions kept
exactly, memories gathered per chunk from the CSR."""

from __future__ import annotations

import numpy as np
import pytest

from feddmr_jax.data import (TrainCSR, draw_train_negatives, generate_synthetic,
                             recent_history, split_interactions, train_csr, train_exclusions)
from feddmr_jax.data import train_negatives
from feddmr_jax.errors import DataError
from feddmr_jax.federated import rounds
from feddmr_jax.federated.rounds import build_planner, iter_round, plan_round


@pytest.fixture(scope="module")
def split():
    inter = generate_synthetic(num_users=60, num_items=50, mean_interactions=10, seed=4)
    return split_interactions(inter, "loo")


def _sets(split, *parts):
    out = [set() for _ in range(split.num_users)]
    for part in parts:
        frame = getattr(split, part)
        for u, i in zip(frame.user, frame.item):
            out[u].add(int(i))
    return out


def _client_examples(chunks, client):
    """The real example items of ``client`` in a round's chunks."""
    for c in chunks:
        hit = np.flatnonzero((c.client_ids == client) & c.client_mask)
        if hit.size:
            return c.items[hit[0]][c.mask[hit[0]]]
    raise AssertionError(f"client {client} not in the round")


def test_negatives_do_not_depend_on_co_participants_or_chunking(split):
    train, exclude = train_csr(split), train_exclusions(split, "strict")
    kw = dict(history_len=3, num_negatives=4, batch_size=16, seed=7)
    everyone = np.arange(split.num_users)
    few = np.array([3, 17, 40])
    a = plan_round(build_planner(train, exclude, chunk_size=8, **kw), everyone, 2)
    b = plan_round(build_planner(train, exclude, chunk_size=2, **kw), few, 2)
    for client in few:
        assert np.array_equal(_client_examples(a, client), _client_examples(b, client))
    # Direct draws: one user alone equals its rows in a bigger, reordered call.
    alone = draw_train_negatives(train, exclude, np.array([17]), seed=7, round_index=2)
    mixed = draw_train_negatives(train, exclude, np.array([40, 17, 3]), seed=7, round_index=2)
    start = train.lengths[40]
    assert np.array_equal(alone, mixed[start:start + train.lengths[17]])
    other_round = draw_train_negatives(train, exclude, np.array([17]), seed=7, round_index=3)
    other_seed = draw_train_negatives(train, exclude, np.array([17]), seed=8, round_index=2)
    assert not np.array_equal(alone, other_round) and not np.array_equal(alone, other_seed)


@pytest.mark.parametrize("mode, parts", [("strict", ("train",)),
                                         ("reference", ("train", "val", "test"))])
def test_counter_draw_keeps_the_exclusions(split, mode, parts):
    train, exclude = train_csr(split), train_exclusions(split, mode)
    users = np.arange(split.num_users)
    row_user = np.repeat(users, train.lengths)
    drawn = [set() for _ in users]
    for r in range(40):
        neg = draw_train_negatives(train, exclude, users, seed=0, round_index=r)
        for u, row in zip(row_user, neg):
            drawn[u].update(row.tolist())
    excluded = _sets(split, *parts)
    assert all(not d & e for d, e in zip(drawn, excluded))
    held = sum(len(d & h) for d, h in zip(drawn, _sets(split, "val", "test")))
    if mode == "strict":
        assert held >= split.num_users       # held-out items are drawn
    else:
        assert held == 0


def test_counter_draw_is_uniform_over_allowed_items_and_handles_duplicates():
    # User 0 excludes 1, 4, 7 (7 twice: an item in two parts); user 1 all but 2 and 5.
    exclude = TrainCSR(indptr=np.array([0, 4, 12]),
                       items=np.array([1, 4, 7, 7, 0, 1, 3, 4, 6, 7, 8, 9], np.int32),
                       num_items=10)
    train = TrainCSR(indptr=np.array([0, 500, 1000]), items=np.zeros(1000, np.int32),
                     num_items=10)
    neg = draw_train_negatives(train, exclude, np.array([0, 1]), seed=1, round_index=1,
                               num_negatives=7)
    counts = np.bincount(neg[:500].ravel(), minlength=10)
    assert set(np.flatnonzero(counts)) == {0, 2, 3, 5, 6, 8, 9}
    expected = 500 * 7 / 7
    assert np.all(np.abs(counts[counts > 0] - expected) < 5 * np.sqrt(expected))
    assert set(np.unique(neg[500:])) == {2, 5}
    full = TrainCSR(indptr=np.array([0, 10]), items=np.arange(10, dtype=np.int32), num_items=10)
    with pytest.raises(DataError, match="has positives for all 10 items"):
        draw_train_negatives(full, full, np.array([0]), seed=0, round_index=1)


@pytest.mark.parametrize("mode", ["strict", "reference"])
def test_allowed_items_listed_densely_equal_the_search(split, mode):
    """``_nth_allowed``'s two ways (a dense table of small chunks, a searchsorted of
    big ones) pick the same item for every entry, duplicates in the exclusions included."""
    exclude = train_exclusions(split, mode)
    dup = TrainCSR(indptr=np.array([0, 4, 12, 12]),
                   items=np.array([1, 4, 7, 7, 0, 1, 3, 4, 6, 7, 8, 9], np.int32), num_items=10)
    rng = np.random.default_rng(0)
    for csr, users in ((exclude, rng.permutation(split.num_users)[:25]),
                       (exclude, np.arange(split.num_users)), (dup, np.array([2, 0, 1]))):
        entry_user = rng.integers(0, len(users), 3000)
        bits = rng.integers(0, np.iinfo(np.uint64).max, 3000, dtype=np.uint64, endpoint=True)
        nth = train_negatives._nth_allowed
        listed, allowed = nth(csr, users, entry_user, bits, dense=True)
        searched, allowed_s = nth(csr, users, entry_user, bits, dense=False)
        assert np.array_equal(listed, searched) and np.array_equal(allowed, allowed_s)
        assert len(np.unique(listed)) > 5                    # not a constant
    assert len(users) * 10 <= train_negatives.DENSE_ALLOWED_CELLS   # listed densely by default


def test_iter_round_draws_and_gathers_per_chunk(split, monkeypatch):
    train, exclude = train_csr(split), train_exclusions(split, "strict")
    planner = build_planner(train, exclude, history_len=3, num_negatives=4, batch_size=16,
                            chunk_size=4, seed=0)
    calls = []
    real_draw = rounds.draw_train_negatives

    def spy(train, exclude, users, **kw):
        calls.append(len(users))
        return real_draw(train, exclude, users, **kw)

    monkeypatch.setattr(rounds, "draw_train_negatives", spy)
    chunks = iter_round(planner, np.arange(split.num_users), 1)
    first = next(chunks)
    assert calls == [int(first.client_mask.sum())]       # nothing drawn ahead
    rest = list(chunks)
    assert max(calls) <= max(planner.clients_per_chunk.values())
    assert sum(calls) == split.num_users
    for c in [first] + rest:
        hist, mask = recent_history(train, 3, rows=c.client_ids)
        assert np.array_equal(c.history, hist)
        assert np.array_equal(c.history_mask, mask & c.client_mask[:, None])
    assert np.array_equal(planner.history, recent_history(train, 3)[0])
