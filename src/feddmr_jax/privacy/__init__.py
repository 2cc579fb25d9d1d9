"""Privacy primitives on update pytrees: DP clipping and noise, accounting, secure aggregation.

- :mod:`.dp`: per-client clipping and Gaussian noise (user-level DP-FedAvg).
- :mod:`.accounting`: epsilon of DP-FedAvg rounds via ``dp_accounting``
  (optional dependency, imported lazily).
- :mod:`.secure_agg`: simulated pairwise additive masking with dropout recovery.
"""

from feddmr_jax.privacy.accounting import (
    dp_epsilon,
    epsilon_per_round,
    noise_for_epsilon,
    round_event,
)
from feddmr_jax.privacy.dp import (
    add_gaussian_noise,
    clip_stacked,
    clip_update,
    dp_fedavg_aggregate,
    global_norm,
)
from feddmr_jax.privacy.secure_agg import mask_updates, pair_seed, unmask_dropped

__all__ = [
    "add_gaussian_noise",
    "clip_stacked",
    "clip_update",
    "dp_epsilon",
    "dp_fedavg_aggregate",
    "epsilon_per_round",
    "global_norm",
    "mask_updates",
    "noise_for_epsilon",
    "pair_seed",
    "round_event",
    "unmask_dropped",
]
