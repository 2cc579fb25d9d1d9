"""Client sampling per round, seeded by ``fold_in(key, round)``.

The participants of round r depend only on (key, r, num_clients, count): a
resumed run samples exactly what the uninterrupted run sampled.
"""

from __future__ import annotations

import jax
import numpy as np

from feddmr_jax.errors import ConfigError


def participants_per_round(num_clients: int, *, count: int | None = None,
                           fraction: float | None = None) -> int:
    """Number of clients sampled each round (at least 1).

    Exactly one of ``count`` / ``fraction`` may be given; neither = all clients.
    """
    if count is not None and fraction is not None:
        raise ConfigError("give clients_per_round or client_fraction, not both")
    if count is not None:
        if not 1 <= count:
            raise ConfigError(f"clients_per_round must be >= 1, got {count}")
        return min(count, num_clients)
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"client_fraction must be in (0, 1], got {fraction}")
        return max(1, int(round(fraction * num_clients)))
    return num_clients


def sample_clients(key: jax.Array, round_index: int, num_clients: int,
                   count: int) -> np.ndarray:
    """Sorted ids of the ``count`` clients sampled (without replacement) in a round."""
    if count >= num_clients:
        return np.arange(num_clients, dtype=np.int32)
    k = jax.random.fold_in(key, round_index)
    chosen = jax.random.choice(k, num_clients, (count,), replace=False)
    return np.sort(np.asarray(chosen, dtype=np.int32))
