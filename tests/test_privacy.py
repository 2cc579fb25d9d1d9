"""DP clipping/noise, privacy accounting and simulated secure aggregation."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax.errors import ConfigError
from feddmr_jax.privacy import (
    add_gaussian_noise,
    clip_stacked,
    clip_update,
    dp_epsilon,
    dp_fedavg_aggregate,
    epsilon_per_round,
    global_norm,
    mask_updates,
    noise_for_epsilon,
    pair_seed,
    unmask_dropped,
)

from float_compare import assert_trees_close


# Jitted once here (scale traced): eager lax.scan would recompile on every call.
jit_mask = jax.jit(mask_updates)
jit_unmask = jax.jit(unmask_dropped)
jit_aggregate = jax.jit(dp_fedavg_aggregate)


def stacked_tree(key, clients, scale=0.01):
    k1, k2 = jax.random.split(key)
    return {
        "items": scale * jax.random.normal(k1, (clients, 40, 8)),
        "head": {"b": scale * jax.random.normal(k2, (clients, 8))},
    }


def tree_sum(stacked, rows=None):
    if rows is not None:
        stacked = jax.tree_util.tree_map(lambda x: x[np.asarray(rows)], stacked)
    return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), stacked)


def assert_tree_close(a, b, **tol):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol), a, b
    )


def float_mask_ulps(clients: int) -> float:
    """Float masks cancel in a sum of ``clients`` uploads only up to rounding: n (n - 1)
    mask terms of size ~scale, each rounded against partial sums that grow like a random
    walk, leave ~n**1.5 ulps of the mask scale (privacy/secure_agg.py, measured there);
    the budget is 16 times that."""
    return 16 * clients**1.5


# ---------------------------------------------------------------- dp.py


def test_global_norm_and_clip_hand_computed():
    update = {"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}
    assert float(global_norm(update)) == pytest.approx(5.0)
    clipped, norm = clip_update(update, 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert float(clipped["a"][0]) == pytest.approx(0.6)
    assert float(clipped["b"][0, 0]) == pytest.approx(0.8)
    same, _ = clip_update(update, 10.0)
    assert_tree_close(same, update, rtol=0, atol=0)


def test_clip_zero_update_is_safe():
    zero = {"w": jnp.zeros((3,), jnp.bfloat16)}
    clipped, norm = clip_update(zero, 1.0)
    assert float(norm) == 0.0
    assert clipped["w"].dtype == jnp.bfloat16
    assert not np.any(np.isnan(np.asarray(clipped["w"], np.float32)))
    grads = jax.grad(lambda u: global_norm(clip_update(u, 1.0)[0]))({"w": jnp.ones(3)})
    assert np.all(np.isfinite(np.asarray(grads["w"])))


def test_clip_stacked_matches_loop():
    stacked = stacked_tree(jax.random.key(0), 6, scale=1.0)
    clipped, norms = jax.jit(clip_stacked)(stacked, 4.0)
    assert norms.shape == (6,)
    # A norm sums n = 328 squares (a batched or a single reduction may order them
    # differently): <= n ulps of the sum, n / 2 of the norm; the clip factor adds ~2 more.
    n = sum(x[0].size for x in jax.tree_util.tree_leaves(stacked))
    for c in range(6):
        one = jax.tree_util.tree_map(lambda x: x[c], stacked)
        ref, ref_norm = jax.jit(clip_update)(one, 4.0)
        assert_trees_close(norms[c], ref_norm, ulps=n / 2 + 2, what="norm")
        assert_trees_close(jax.tree_util.tree_map(lambda x: x[c], clipped), ref,
                           ulps=n / 2 + 4, what="clipped")
        new_norm = float(jax.jit(global_norm)(jax.tree_util.tree_map(lambda x: x[c], clipped)))
        # the clipped update's norm is clip (or its own) up to both norms' rounding
        assert_trees_close(new_norm, min(4.0, float(ref_norm)), ulps=n + 8, what="new norm")


def test_gaussian_noise_statistics_and_independence():
    tree = {"a": jnp.zeros((200, 100)), "b": jnp.zeros((200, 100)), "c": jnp.ones(3, jnp.bfloat16)}
    noisy = add_gaussian_noise(tree, jax.random.key(1), 2.5)
    assert noisy["c"].dtype == jnp.bfloat16 and noisy["a"].shape == (200, 100)
    a, b = np.asarray(noisy["a"]), np.asarray(noisy["b"])
    assert a.std() == pytest.approx(2.5, rel=0.02)
    assert abs(a.mean()) < 0.05
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02  # separate key per leaf
    again = add_gaussian_noise(tree, jax.random.key(1), 2.5)
    assert_tree_close(again, noisy, rtol=0, atol=0)
    assert_tree_close(add_gaussian_noise(tree, jax.random.key(1), 0.0), tree, rtol=0, atol=0)


def test_dp_fedavg_aggregate_recipe():
    stacked = stacked_tree(jax.random.key(2), 5, scale=1.0)
    mask = jnp.array([True, True, True, False, True])
    mean, norms = jit_aggregate(stacked, jax.random.key(3), 1.0, 0.0, 8.0, mask)
    clipped, _ = jax.jit(clip_stacked)(stacked, 1.0)
    expected = jax.tree_util.tree_map(lambda x: x / 8.0, tree_sum(clipped, [0, 1, 2, 4]))
    assert_tree_close(mean, expected, rtol=1e-5, atol=1e-7)
    assert norms.shape == (5,)
    big = {"w": jnp.zeros((4, 100_000))}
    noisy, _ = jit_aggregate(big, jax.random.key(4), 2.0, 1.5, 10.0)
    assert float(jnp.std(noisy["w"])) == pytest.approx(1.5 * 2.0 / 10.0, rel=0.02)


# ---------------------------------------------------------------- accounting.py


@pytest.mark.parametrize("q", [0.01, 1.0])
def test_epsilon_equals_dp_accounting_directly(q):
    import dp_accounting

    z, rounds, delta = 1.1, 200, 1e-5
    event = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    acct = dp_accounting.rdp.RdpAccountant()
    acct.compose(event, rounds)
    assert dp_epsilon(z, q, rounds, delta) == pytest.approx(acct.get_epsilon(delta), rel=1e-12)


def test_pld_epsilon_equals_dp_accounting_directly():
    import dp_accounting

    z, q, rounds, delta = 1.1, 0.01, 20, 1e-5
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    acct = dp_accounting.pld.PLDAccountant()
    acct.compose(event, rounds)
    ours = dp_epsilon(z, q, rounds, delta, accountant="pld")
    assert ours == pytest.approx(acct.get_epsilon(delta), rel=1e-9)
    assert ours <= dp_epsilon(z, q, rounds, delta)  # PLD is the tighter bound


def test_epsilon_per_round_is_cumulative_and_monotone():
    z, q, delta = 1.0, 0.05, 1e-5
    eps = epsilon_per_round(z, q, 50, delta)
    assert len(eps) == 50
    assert all(b > a for a, b in zip(eps, eps[1:]))
    for t in (1, 7, 50):
        assert eps[t - 1] == pytest.approx(dp_epsilon(z, q, t, delta), rel=1e-9)
    pld = epsilon_per_round(z, 0.01, 2, delta, accountant="pld")
    assert pld[0] < pld[1]
    assert pld[-1] == pytest.approx(dp_epsilon(z, 0.01, 2, delta, accountant="pld"), rel=1e-6)
    assert dp_epsilon(z, q, 0, delta) == 0.0


def test_more_noise_less_epsilon():
    values = [dp_epsilon(z, 0.02, 100, 1e-5) for z in (0.6, 0.8, 1.0, 2.0, 5.0)]
    assert all(b < a for a, b in zip(values, values[1:]))


def test_noise_for_epsilon_hits_target():
    q, rounds, delta, target = 0.02, 300, 1e-5, 3.0
    z = noise_for_epsilon(target, q, rounds, delta, rtol=1e-4)
    assert dp_epsilon(z, q, rounds, delta) <= target
    assert dp_epsilon(z / (1 + 2e-4), q, rounds, delta) > target
    with pytest.raises(ConfigError):
        noise_for_epsilon(1e-6, 1.0, 10, 1e-5, max_noise=10.0)


def test_missing_dp_accounting_raises_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # import now fails
    with pytest.raises(ConfigError, match=r"feddmr_jax\[privacy\]"):
        dp_epsilon(1.0, 0.1, 10, 1e-5)


def test_bad_accounting_arguments():
    bad = [(0.0, 0.1, 10, 1e-5), (1.0, 1.5, 10, 1e-5), (1.0, 0.1, -1, 1e-5), (1.0, 0.1, 5, 0)]
    for args in bad:
        with pytest.raises(ConfigError):
            dp_epsilon(*args)
    with pytest.raises(ConfigError):
        dp_epsilon(1.0, 0.1, 10, 1e-5, accountant="moments")


# ---------------------------------------------------------------- secure_agg.py


def test_pair_seed_is_symmetric():
    key = jax.random.key(5)
    data = lambda k: np.asarray(jax.random.key_data(k))  # noqa: E731
    np.testing.assert_array_equal(data(pair_seed(key, 3, 7)), data(pair_seed(key, 7, 3)))
    assert not np.array_equal(data(pair_seed(key, 3, 7)), data(pair_seed(key, 3, 8)))
    batched = jax.vmap(pair_seed, in_axes=(None, 0, 0))(key, jnp.array([3, 7]), jnp.array([7, 3]))
    np.testing.assert_array_equal(data(batched[0]), data(batched[1]))


def test_mask_sign_convention_three_clients():
    key, ids = jax.random.key(6), jnp.array([10, 2, 5])
    raw = {"w": jnp.zeros((3, 4))}
    masked = jit_mask(raw, ids, key, scale=3.0)["w"]
    prg = lambda i, j: 3.0 * jax.random.normal(pair_seed(key, i, j), (4,))  # noqa: E731
    expected = [prg(10, 2) * -1 - prg(10, 5), prg(2, 5) + prg(2, 10), prg(5, 10) - prg(5, 2)]
    for row, exp in zip(masked, expected):
        # Two PRG draws (jitted here, eager there: the normal's transform within a few
        # ulps) and their sum: 2**4 ulps of the row.
        assert_trees_close(np.asarray(row), np.asarray(exp), ulps=2**4, what="row")


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_masks_hide_updates_and_cancel_in_sum(scale):
    clients = 40
    raw = stacked_tree(jax.random.key(7), clients)
    ids = jnp.asarray(np.random.default_rng(0).choice(1_000_000, clients, replace=False))
    masked = jit_mask(raw, ids, jax.random.key(8), scale=scale)
    noise = np.asarray(masked["items"] - raw["items"]).reshape(clients, -1)
    expected_std = scale * np.sqrt(clients - 1)
    np.testing.assert_allclose(noise.std(axis=1), expected_std, rtol=0.15)
    std_error = expected_std / np.sqrt(noise.shape[1])
    assert np.all(np.abs(noise.mean(axis=1)) < 4.5 * std_error)
    assert np.abs(np.asarray(raw["items"])).max() < 0.02 * expected_std
    # Sum: exact up to float32 rounding, relative to the mask magnitude.
    assert_trees_close(tree_sum(masked), tree_sum(raw), ulps=float_mask_ulps(clients),
                       scale=scale, what="sum")


def test_padding_clients_neither_give_nor_take_masks():
    raw = stacked_tree(jax.random.key(9), 6)
    ids = jnp.array([4, 9, 0, 0, 13, 2])
    real = jnp.array([True, True, False, False, True, True])
    masked = jit_mask(raw, ids, jax.random.key(10), scale=5.0, client_mask=real)
    assert_tree_close(
        jax.tree_util.tree_map(lambda x: x[2:4], masked),
        jax.tree_util.tree_map(lambda x: x[2:4], raw),
        rtol=0,
        atol=0,
    )
    assert_trees_close(tree_sum(masked, [0, 1, 4, 5]), tree_sum(raw, [0, 1, 4, 5]),
                       ulps=float_mask_ulps(4), scale=5.0, what="sum of the real clients")


def test_dropped_clients_are_recovered():
    clients, scale = 40, 4.0
    raw = stacked_tree(jax.random.key(11), clients)
    ids = jnp.arange(100, 100 + clients) * 7
    key = jax.random.key(12)
    masked = jit_mask(raw, ids, key, scale=scale)
    dropped_rows = [3, 17, 38]
    alive = [c for c in range(clients) if c not in dropped_rows]
    masked_sum = tree_sum(masked, alive)
    raw_sum = tree_sum(raw, alive)
    err = np.abs(np.asarray(masked_sum["items"] - raw_sum["items"])).max()
    assert err > 10 * scale  # dropped clients' masks do not cancel by themselves
    recovered = jit_unmask(
        masked_sum, ids[np.array(alive)], ids[np.array(dropped_rows)], key, scale=scale
    )
    assert_trees_close(recovered, raw_sum, ulps=float_mask_ulps(clients), scale=scale,
                       what="recovered")
    # Padding in the dropped list is ignored; no drop leaves the sum as is.
    padded = jit_unmask(
        masked_sum,
        ids[np.array(alive)],
        jnp.concatenate([ids[np.array(dropped_rows)], jnp.array([0])]),
        key,
        scale=scale,
        dropped_mask=jnp.array([True, True, True, False]),
    )
    # Another program (a padded list) may round the rebuilt masks differently; both are
    # within float_mask_ulps of the raw sum.
    assert_trees_close(padded, recovered, ulps=2 * float_mask_ulps(clients), scale=scale,
                       what="padded dropped list")
    full = tree_sum(masked)
    same = jit_unmask(full, ids, jnp.zeros((0,), jnp.int32), key, scale=scale)
    assert_tree_close(same, full, rtol=0, atol=0)
