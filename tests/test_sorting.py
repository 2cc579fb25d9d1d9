"""federated/sorting.py: the packed-key sorts equal what they replace."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax.federated import sorting
from feddmr_jax.federated.sorting import epoch_order, unique_rows


@pytest.mark.parametrize("n,fill,size", [(1, 5, 2), (7, 3, 5), (64, 40, 65), (300, 1682, 301),
                                         (513, 20, 21)])
def test_unique_rows_equals_jnp_unique(n, fill, size):
    rng = np.random.default_rng(n)
    for trial in range(5):
        ids = rng.integers(0, fill + 1, n).astype(np.int32)     # fill itself included
        if trial == 1:
            ids[:] = fill                                         # all padding
        if trial == 2:
            ids[: n // 2] = fill
        size_ok = max(size, len(np.unique(ids)))
        want_u, want_inv = jnp.unique(ids, size=size_ok, fill_value=fill, return_inverse=True)
        got_u, got_inv = jax.jit(unique_rows, static_argnums=(1, 2))(ids, size_ok, fill)
        np.testing.assert_array_equal(got_u, want_u)
        np.testing.assert_array_equal(got_inv, np.asarray(want_inv).reshape(-1))
        np.testing.assert_array_equal(np.asarray(got_u)[np.asarray(got_inv)], ids)


def test_unique_rows_falls_back_when_the_key_does_not_fit(monkeypatch):
    calls = []
    real_unique = jnp.unique

    def spy(*args, **kwargs):
        calls.append(1)
        return real_unique(*args, **kwargs)

    monkeypatch.setattr(sorting.jnp, "unique", spy)
    ids = np.array([3, 2 ** 22, 3, 7], np.int32)             # (2**22 + 1) * 4 < 2**31: packed
    unique_rows(ids, 5, 2 ** 22)
    assert not calls
    big = 2 ** 30                                             # (2**30 + 1) * 4 > 2**31
    u, inv = unique_rows(np.array([3, big, 3, 7], np.int32), 5, big)
    assert calls
    np.testing.assert_array_equal(u, [3, 7, big, big, big])
    np.testing.assert_array_equal(inv, [0, 2, 0, 1])


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 300])
def test_epoch_order_puts_real_examples_first_as_a_permutation(n):
    for seed in range(4):
        key = jax.random.key(seed)
        mask = np.asarray(jax.random.uniform(jax.random.fold_in(key, 9), (n,)) < 0.6)
        order = np.asarray(epoch_order(key, mask))
        assert sorted(order.tolist()) == list(range(n))
        k = int(mask.sum())
        assert mask[order[:k]].all() and not mask[order[k:]].any()
        np.testing.assert_array_equal(order[k:], np.flatnonzero(~mask))  # padding in row order
        # the documented keys (tests/reference_round.py reads the order the same way)
        words = np.asarray(jax.random.bits(key, (n,), jnp.uint32)) >> 17
        real = np.flatnonzero(mask)
        np.testing.assert_array_equal(order[:k], real[np.argsort(words[real], kind="stable")])


def test_epoch_order_is_uniform_over_positions():
    """Each real example reaches the first place about equally often (a chi-square bound)."""
    n, trials = 8, 4000
    mask = np.ones(n, bool)
    keys = jax.random.split(jax.random.key(0), trials)
    firsts = np.asarray(jax.vmap(lambda k: epoch_order(k, mask)[0])(keys))
    counts = np.array([collections.Counter(firsts.tolist())[i] for i in range(n)])
    expected = trials / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.3          # 7 degrees of freedom, p = 0.001


def test_epoch_order_does_not_depend_on_the_row_width():
    """A client's real examples are visited in the same order whatever padding its
    shape class adds (the planner chooses the classes per run)."""
    key = jax.random.key(5)
    real = 37
    orders = [np.asarray(epoch_order(key, np.arange(w) < real))[:real] for w in (37, 40, 64, 512)]
    for order in orders[1:]:
        np.testing.assert_array_equal(order, orders[0])


def test_epoch_order_of_a_row_wider_than_the_fixed_position_bits():
    n = (1 << 16) + 3
    mask = np.arange(n) < n - 2
    order = np.asarray(jax.jit(epoch_order)(jax.random.key(1), mask))
    assert np.array_equal(np.sort(order), np.arange(n))
    assert set(order[-2:].tolist()) == {n - 2, n - 1}
