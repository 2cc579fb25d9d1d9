"""A run's privacy settings resolved against its dataset, and their per-round inputs.

:func:`build_privacy_plan` turns the ``train.dp_*`` and ``train.secure_agg*``
fields into what the engine needs (a :class:`~.dp.DPSetting`, the cumulative
epsilon after every round, the masking-graph size) once the number of users
and participants per round are known; :func:`round_privacy` gives round ``r``
its DP noise key and secure-aggregation graph.

Randomness: one root key ``fold_in(key(seed), PRIVACY_TAG)``, independent of
the training keys (those are ``split(key(seed), 3)``); round ``r`` uses
``fold_in(fold_in(root, r), 0)`` for noise and ``fold_in(..., 1)`` for masks,
and the ring order of the masking graph is drawn from
``default_rng([seed, r, PRIVACY_TAG])``. A resumed run therefore adds exactly
the same noise and masks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from feddmr_jax.errors import ConfigError
from feddmr_jax.privacy.accounting import epsilon_per_round
from feddmr_jax.privacy.dp import DPSetting
from feddmr_jax.privacy.secure_agg import MaskGraph, max_clip, round_graph

Array = jax.Array
PRIVACY_TAG = 0x50524956  # "PRIV"


class PrivacyPlan(NamedTuple):
    """Resolved privacy settings of a run.

    Attributes:
      dp: clip, noise multiplier and expected participants, or None (DP off).
      delta: the DP delta (None when DP is off).
      sampling_rate: ``q = participants per round / users``.
      accountant: ``"rdp"`` or ``"pld"``.
      epsilons: cumulative epsilon after each round ``1..rounds`` (None entries:
        noise multiplier 0, no guarantee), or None when DP is off.
      secure_agg: simulated secure aggregation on.
      neighbors: mask partners per client (0: all).
      bits: fractional bits of the fixed-point encoding.
      seed: run seed.
      key: root key of the per-round privacy keys.
      table_mean: ``train.table_mean`` of the run (with DP always
        ``participants``: the noisy sum divided by the expected participants).
      upload_clip: the L2 bound of every upload under secure aggregation
        (``train.dp_clip`` or ``train.clip_norm``), None without it.
    """

    dp: DPSetting | None
    delta: float | None
    sampling_rate: float
    accountant: str
    epsilons: tuple[float | None, ...] | None
    secure_agg: bool
    neighbors: int
    bits: int
    seed: int
    key: Array
    table_mean: str = "touched"
    upload_clip: float | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (for ``summary.json``)."""
        out: dict[str, Any] = {"secure_agg": self.secure_agg}
        if self.secure_agg:
            out.update(secure_agg_neighbors=self.neighbors, secure_agg_bits=self.bits,
                       secure_agg_upload_clip=self.upload_clip)
        if self.dp is not None:
            out.update(dp_clip=self.dp.clip_norm, dp_noise=self.dp.noise_multiplier,
                       expected_participants=self.dp.expected_clients,
                       sampling_rate=self.sampling_rate, accountant=self.accountant,
                       delta=self.delta, table_mean=self.table_mean,
                       mean="noisy sum of clipped updates / expected participants")
        return out


def default_delta(num_users: int) -> float:
    """``1 / (10 * num_users)``: the default DP delta."""
    return 1.0 / (10.0 * num_users)


def build_privacy_plan(train_cfg: Any, num_users: int, clients_per_round: int
                       ) -> PrivacyPlan | None:
    """Resolves ``train.dp_*`` / ``train.secure_agg*`` for a dataset.

    Args:
      train_cfg: the run's :class:`~feddmr_jax.config.TrainConfig` (validated).
      num_users: number of clients ``N``.
      clients_per_round: participants sampled per round ``m``.

    Returns:
      The plan, or None when neither DP nor secure aggregation is on.

    Raises:
      ConfigError: ``train.dp_delta`` is not below ``1 / num_users``, the
        accountant library is missing, or under secure aggregation the sum of
        ``clients_per_round`` clipped uploads can leave the fixed-point range.
    """
    t = train_cfg
    if t.dp_clip is None and not t.secure_agg:
        return None
    q = clients_per_round / num_users
    dp = delta = epsilons = None
    if t.dp_clip is not None:
        delta = t.dp_delta if t.dp_delta is not None else default_delta(num_users)
        if not delta < 1.0 / num_users:
            raise ConfigError(f"train.dp_delta={delta} must be below 1 / number of users "
                              f"= {1.0 / num_users:.3g} (a delta that large allows publishing "
                              "some user's data outright)")
        dp = DPSetting(float(t.dp_clip), float(t.dp_noise), float(clients_per_round))
        if t.dp_noise > 0:
            epsilons = tuple(epsilon_per_round(t.dp_noise, q, t.rounds, delta, t.dp_accountant))
        else:
            epsilons = (None,) * t.rounds
    clip = t.secure_agg_clip() if t.secure_agg else None
    if t.secure_agg:
        check_secure_members(clients_per_round, t.faults())
        check_secure_range(clip, clients_per_round, int(t.secure_agg_bits))
    root = jax.random.fold_in(jax.random.key(t.seed), PRIVACY_TAG)
    return PrivacyPlan(dp, delta, q, t.dp_accountant, epsilons, bool(t.secure_agg),
                       int(t.secure_agg_neighbors), int(t.secure_agg_bits), int(t.seed),
                       root, t.table_mean, clip)


def check_secure_members(clients_per_round: int, faults: Any) -> None:
    """Refuses a secure-aggregation run in which every round would have a lone member.

    A sum of one masked upload is that upload in the clear once its masks are
    removed. With fewer than 2 clients per round, or fault injection that leaves
    fewer than 2 uploads in every round's sum (``round(fraction * m)`` clients
    drop out or upload NaN, federated/faults.py), refuse at build time; a round
    in which dropouts happen to leave a member without partners is aborted at
    run time (``federated/secure_round.lone_members``).

    Args:
      clients_per_round: participants sampled per round ``m``.
      faults: the run's :class:`~feddmr_jax.federated.faults.FaultConfig`.
    """
    if clients_per_round < 2:
        raise ConfigError(f"train.secure_agg needs at least 2 clients per round, got "
                          f"{clients_per_round}: one client's masked upload is its update in "
                          "the clear once the masks come off")
    absent = sum(int(round(f * clients_per_round)) for f in (faults.dropout, faults.nan))
    if clients_per_round - absent == 1:
        raise ConfigError(f"train.secure_agg: fault injection removes {absent} of the "
                          f"{clients_per_round} clients of every round (client_dropout, "
                          "fault_nan), leaving 1 upload in the sum: its update in the clear")


def check_secure_range(clip: float | None, members: int, bits: int) -> None:
    """Refuses a secure-aggregation run whose round sums can leave the fixed-point range.

    Each upload is clipped to L2 norm ``clip`` (so every coordinate is within
    ``+-clip``) and has weight 1, so a coordinate of the sum of ``members``
    uploads is within ``+-members * clip``; it must fit the ring's
    ``+-2^(31 - bits)`` with rounding (``secure_agg.max_clip``).

    Args:
      clip: the uploads' L2 bound (None: unbounded).
      members: clients sampled per round.
      bits: fractional bits.

    Raises:
      ConfigError: naming the fields to change.
    """
    if clip is None:
        raise ConfigError("train.secure_agg needs a bound on each upload: set train.dp_clip "
                          "or train.aggregator='clipped_mean' with train.clip_norm")
    limit = max_clip(members, bits)
    if clip > limit:
        fits = next((b for b in range(bits - 1, -1, -1) if clip <= max_clip(members, b)), None)
        hint = (f"lower train.secure_agg_bits to {fits}" if fits is not None
                else "lower the clip or the clients per round")
        raise ConfigError(f"train.secure_agg: {members} clients per round with uploads clipped "
                          f"to {clip:g} can sum to {members * clip:g} per coordinate, beyond the "
                          f"fixed-point range +-{2.0 ** (31 - bits):g} of train.secure_agg_bits="
                          f"{bits} (at most {limit:.4g} per upload); {hint}")


def round_privacy(plan: PrivacyPlan | None, round_index: int, sampled: np.ndarray,
                  dropped: np.ndarray) -> tuple[Array | None, MaskGraph | None]:
    """The DP noise key and the masking graph of round ``round_index``.

    Args:
      plan: from :func:`build_privacy_plan` (None: no privacy, returns Nones).
      round_index: the round (1-based).
      sampled: ids of the clients sampled this round (before dropouts).
      dropped: ids among them that never report.

    Returns:
      ``(noise_key or None, MaskGraph or None)`` for ``algorithm.apply``.
    """
    if plan is None:
        return None, None
    key = jax.random.fold_in(plan.key, round_index)
    noise_key = jax.random.fold_in(key, 0) if plan.dp is not None else None
    masks = None
    if plan.secure_agg:
        rng = np.random.default_rng([plan.seed, round_index, PRIVACY_TAG])
        masks = round_graph(sampled, dropped, plan.neighbors, rng,
                            jax.random.fold_in(key, 1), plan.bits)
    return noise_key, masks
