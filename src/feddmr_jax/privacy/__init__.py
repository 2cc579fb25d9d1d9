"""Privacy primitives on update pytrees: DP clipping and noise, accounting, secure aggregation.

- :mod:`.dp`: per-client clipping and Gaussian noise (user-level DP-FedAvg).
- :mod:`.accounting`: epsilon of DP-FedAvg rounds via ``dp_accounting``
  (optional dependency, imported lazily).
- :mod:`.secure_agg`: simulated pairwise additive masking with dropout recovery.
- :mod:`.secure_round`: the engine's secure aggregation across a round's chunks
  (masking graph, fixed-point dense uploads, unmasking).
- :mod:`.plan`: a run's privacy settings resolved against its dataset, per-round
  noise keys and masking graphs.
- :mod:`.audit`: what the server receives and stores in a round; the check that
  no private leaf is among it.

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
from feddmr_jax.privacy.secure_agg import mask_updates, neighbor_masks, pair_seed, unmask_dropped
from feddmr_jax.privacy.secure_round import MaskGraph, round_graph, unmask
from feddmr_jax.privacy.plan import PrivacyPlan, build_privacy_plan, round_privacy
from feddmr_jax.privacy.audit import (
    AuditEntry,
    PrivacyLeakError,
    audit_round,
    check_no_private,
    format_audit,
)

__all__ = [
    "AuditEntry",
    "DPSetting",
    "MaskGraph",
    "PrivacyLeakError",
    "PrivacyPlan",
    "add_gaussian_noise",
    "audit_round",
    "build_privacy_plan",
    "check_no_private",
    "clip_stacked",
    "clip_update",
    "dp_epsilon",
    "dp_fedavg_aggregate",
    "epsilon_per_round",
    "format_audit",
    "global_norm",
    "mask_updates",
    "neighbor_masks",
    "noise_for_epsilon",
    "noisy_mean",
    "pair_seed",
    "round_event",
    "round_graph",
    "round_privacy",
    "unmask",
    "unmask_dropped",
]
