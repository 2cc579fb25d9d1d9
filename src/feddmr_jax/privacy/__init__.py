"""Privacy primitives on update pytrees: DP clipping and noise, accounting, secure aggregation.

- :mod:`.dp`: per-client clipping and Gaussian noise (user-level DP-FedAvg).
- :mod:`.accounting`: epsilon of DP-FedAvg rounds via ``dp_accounting``
  (optional dependency, imported lazily).
- :mod:`.mask_graph`: the key agreement of simulated secure aggregation: pair
  and self seeds, the masking graph, which seeds the server learns.
- :mod:`.secure_agg`: simulated secure-aggregation primitives: pairwise and
  self masks, fixed-point encoding and its range.
- :mod:`.plan`: a run's privacy settings resolved against its dataset, per-round
  noise keys and masking graphs.

This package holds pure functions on pytrees and arrays and imports nothing
from the engine (``federated/``), which calls it. The secure *round* (masked
accumulation across chunks, unmasking) lives with the round, in
``federated/secure_round.py``, and the audit of what the server receives, which
traces the round's functions, in ``federated/audit.py``.

See docs/privacy.md.
"""

from feddmr_jax.privacy.accounting import (
    dp_epsilon,
    epsilon_per_round,
    noise_for_epsilon,
    round_event,
)
from feddmr_jax.privacy.dp import (
    DPSetting,
    add_gaussian_noise,
    clip_stacked,
    clip_update,
    dp_fedavg_aggregate,
    global_norm,
    noisy_mean,
)
from feddmr_jax.privacy.mask_graph import (
    MaskGraph,
    pair_seed,
    revealed_seeds,
    ring_partners,
    round_graph,
    self_seed,
)
from feddmr_jax.privacy.secure_agg import (
    decode_fixed,
    encode_fixed,
    mask_updates,
    max_clip,
    member_bound,
    neighbor_masks,
    self_masks,
    unmask_dropped,
)
from feddmr_jax.privacy.plan import PrivacyPlan, build_privacy_plan, round_privacy

__all__ = [
    "DPSetting",
    "MaskGraph",
    "PrivacyPlan",
    "add_gaussian_noise",
    "build_privacy_plan",
    "clip_stacked",
    "clip_update",
    "decode_fixed",
    "dp_epsilon",
    "dp_fedavg_aggregate",
    "encode_fixed",
    "epsilon_per_round",
    "global_norm",
    "mask_updates",
    "max_clip",
    "member_bound",
    "neighbor_masks",
    "noise_for_epsilon",
    "noisy_mean",
    "pair_seed",
    "revealed_seeds",
    "ring_partners",
    "round_event",
    "round_graph",
    "round_privacy",
    "self_masks",
    "self_seed",
    "unmask_dropped",
]
