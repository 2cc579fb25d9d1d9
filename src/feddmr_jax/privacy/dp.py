"""Clipping and Gaussian noise on update pytrees (user-level DP-FedAvg).

An *update* is any pytree of float arrays (a client's model delta); a stacked
batch of updates carries a leading client axis 0 (``stacked_*``).

User-level DP-FedAvg (McMahan et al., "Learning Differentially Private
Recurrent Language Models", ICLR 2018), one round with clip norm ``C``, noise
multiplier ``z`` and expected number of participants ``m = q * N`` (each of the
``N`` clients joins independently with probability ``q``):

1. each participant clips its *whole* update to global L2 norm ``C``
   (:func:`clip_update`; :func:`clip_stacked` for a stacked batch), so one
   user changes the sum by at most ``C``;
2. the server sums the clipped updates;
3. adds ``N(0, (z * C)^2)`` independently to every coordinate of the sum
   (:func:`add_gaussian_noise` with ``stddev = z * C``);
4. divides by the *expected* participant count ``m`` (a fixed constant, not the
   realised count, which would leak membership).

:func:`dp_fedavg_aggregate` does steps 1-4 on a stacked batch; the engine
clips in its chunk step (federated/parallel.py), sums across chunks and calls
:func:`noisy_mean` for steps 3-4 once per round. The privacy cost of ``T`` such
rounds is ``dp_epsilon(z, q, T, delta)`` (:mod:`feddmr_jax.privacy.accounting`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class DPSetting(NamedTuple):
    """User-level DP-FedAvg parameters of a run (the engine's ``dp`` argument).

    Attributes:
      clip_norm: ``C``: each client's whole update is clipped to L2 norm ``C``.
      noise_multiplier: ``z``; the sum gets ``N(0, (z * C)^2)`` per coordinate
        (0: clipping only, no privacy guarantee).
      expected_clients: ``m = q * N``, the fixed denominator of the mean.
    """

    clip_norm: float
    noise_multiplier: float
    expected_clients: float


def global_norm(update: PyTree) -> jax.Array:
    """Global L2 norm of a pytree.

    Args:
      update: pytree of float arrays (one client's update, no client axis).

    Returns:
      Scalar float32: ``sqrt(sum over leaves of sum(leaf ** 2))``.
    """
    leaves = jax.tree_util.tree_leaves(update)
    squares = [jnp.sum(jnp.square(jnp.asarray(x, jnp.float32))) for x in leaves]
    return jnp.sqrt(sum(squares, jnp.zeros((), jnp.float32)))


def clip_update(update: PyTree, clip_norm: float | jax.Array) -> tuple[PyTree, jax.Array]:
    """Scales an update by ``min(1, clip_norm / norm)``.

    Args:
      update: pytree of float arrays (one client, no client axis).
      clip_norm: scalar ``C > 0``.

    Returns:
      ``(clipped, norm)``: the update with global norm ``<= C`` (unchanged when
      already within; a zero update stays zero) and the scalar norm *before*
      clipping.
    """
    norm = global_norm(update)
    safe_norm = jnp.where(norm > 0, norm, 1.0)
    scale = jnp.where(norm > clip_norm, clip_norm / safe_norm, 1.0)
    clipped = jax.tree_util.tree_map(lambda x: (x * scale).astype(x.dtype), update)
    return clipped, norm


def clip_stacked(
    stacked_updates: PyTree, clip_norm: float | jax.Array
) -> tuple[PyTree, jax.Array]:
    """Clips every client's update of a stacked batch independently.

    Args:
      stacked_updates: pytree whose leaves are ``[clients, ...]``.
      clip_norm: scalar ``C > 0``, shared by all clients.

    Returns:
      ``(stacked_clipped, norms)``: same structure as the input, and the
      ``[clients]`` per-client norms before clipping.
    """
    return jax.vmap(clip_update, in_axes=(0, None))(stacked_updates, clip_norm)


def add_gaussian_noise(tree: PyTree, key: jax.Array, stddev: float | jax.Array) -> PyTree:
    """Adds independent ``N(0, stddev^2)`` noise to every coordinate.

    Leaf ``i`` (in ``tree_leaves`` order) draws from ``fold_in(key, i)``.

    Args:
      tree: pytree of float arrays.
      key: PRNG key; never reuse it for anything else.
      stddev: scalar standard deviation (``z * C`` for DP-FedAvg).

    Returns:
      Pytree of the same structure, shapes and dtypes.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    noisy = []
    for i, x in enumerate(leaves):
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
        noisy.append(x + (stddev * noise).astype(x.dtype))
    return jax.tree_util.tree_unflatten(treedef, noisy)


def noisy_mean(total: PyTree, key: jax.Array, dp: DPSetting) -> PyTree:
    """Steps 3-4 of a DP-FedAvg round on the sum of clipped updates.

    Args:
      total: pytree, the sum over participants of their clipped updates (item
        tables as full ``[num_items, d]`` sums: noise goes on every row).
      key: PRNG key of this round's noise.
      dp: clip norm, noise multiplier and expected participant count.

    Returns:
      ``(total + N(0, (z * C)^2)) / m``, same structure as ``total``.
    """
    noisy = add_gaussian_noise(total, key, dp.noise_multiplier * dp.clip_norm)
    return jax.tree_util.tree_map(lambda x: (x / dp.expected_clients).astype(x.dtype), noisy)


def dp_fedavg_aggregate(
    stacked_updates: PyTree,
    key: jax.Array,
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    client_mask: jax.Array | None = None,
) -> tuple[PyTree, jax.Array]:
    """One user-level DP-FedAvg server aggregation (clip, sum, noise, divide).

    Args:
      stacked_updates: pytree of ``[clients, ...]`` updates of this round.
      key: PRNG key for the noise of this round (e.g. ``fold_in(key, round)``).
      clip_norm: per-client clip norm ``C``.
      noise_multiplier: ``z``; the sum gets ``N(0, (z * C)^2)`` per coordinate.
      expected_clients: the *expected* participant count ``q * N`` (constant).
      client_mask: ``[clients]`` bool, False = padding slot (excluded from the
        sum); None = all real.

    Returns:
      ``(noisy_mean, norms)``: pytree without the client axis, and the
      ``[clients]`` pre-clipping norms (diagnostics only: not private).
    """
    clipped, norms = clip_stacked(stacked_updates, clip_norm)

    def masked_sum(x: jax.Array) -> jax.Array:
        if client_mask is None:
            return jnp.sum(x, axis=0)
        keep = jnp.reshape(client_mask, (-1,) + (1,) * (x.ndim - 1))
        return jnp.sum(jnp.where(keep, x, jnp.zeros_like(x)), axis=0)

    total = jax.tree_util.tree_map(masked_sum, clipped)
    mean = noisy_mean(total, key, DPSetting(clip_norm, noise_multiplier, expected_clients))
    return mean, norms
