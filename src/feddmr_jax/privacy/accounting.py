"""Privacy accounting for DP-FedAvg with Google's ``dp_accounting`` library.

One round of user-level DP-FedAvg (see :mod:`feddmr_jax.privacy.dp`) is a
Gaussian mechanism with noise multiplier ``z`` (noise stddev / clip norm) on a
Poisson sample of clients with rate ``q``:
``PoissonSampledDpEvent(q, GaussianDpEvent(z))``, or plain
``GaussianDpEvent(z)`` when ``q = 1``; ``T`` rounds compose it ``T`` times.
The guarantee is user-level (add/remove one client's whole data),
``(epsilon, delta)``-DP.

Accountants: ``"rdp"`` (Renyi DP, default; fast, slightly loose) and ``"pld"``
(privacy loss distributions; tighter, slower).

``dp_accounting`` is an optional dependency (``pip install
feddmr_jax[privacy]``); it is imported only when a function here is called.
"""

from __future__ import annotations

import math
from typing import Any

from feddmr_jax.errors import ConfigError

ACCOUNTANTS = ("rdp", "pld")


def _dp_accounting() -> Any:
    """Imports ``dp_accounting`` or raises a :class:`ConfigError` saying how to get it."""
    try:
        import dp_accounting
    except ImportError as err:
        raise ConfigError(
            "privacy accounting needs the dp-accounting package: "
            "pip install 'feddmr_jax[privacy]' (or pip install dp-accounting)"
        ) from err
    return dp_accounting


def _check(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> None:
    if not noise_multiplier > 0:
        raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if not 0 < sampling_rate <= 1:
        raise ConfigError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    if int(rounds) != rounds or rounds < 0:
        raise ConfigError(f"rounds must be an int >= 0, got {rounds}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


def round_event(noise_multiplier: float, sampling_rate: float) -> Any:
    """The ``DpEvent`` of one DP-FedAvg round.

    Args:
      noise_multiplier: ``z`` = noise stddev / clip norm.
      sampling_rate: ``q`` = probability that a client takes part in a round.

    Returns:
      ``GaussianDpEvent(z)`` if ``q == 1``, else
      ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``.
    """
    dpa = _dp_accounting()
    gaussian = dpa.GaussianDpEvent(noise_multiplier)
    if sampling_rate == 1.0:
        return gaussian
    return dpa.PoissonSampledDpEvent(sampling_rate, gaussian)


def _make_accountant(accountant: str) -> Any:
    dpa = _dp_accounting()
    if accountant == "rdp":
        return dpa.rdp.RdpAccountant()
    if accountant == "pld":
        return dpa.pld.PLDAccountant()
    raise ConfigError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def dp_epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """Epsilon after ``rounds`` rounds of DP-FedAvg.

    Args:
      noise_multiplier: ``z > 0``.
      sampling_rate: ``q`` in (0, 1].
      rounds: ``T >= 0`` (0 gives epsilon 0).
      delta: target delta in (0, 1), typically below 1 / #clients.
      accountant: ``"rdp"`` or ``"pld"``.

    Returns:
      The epsilon of the ``T``-fold composition at ``delta``.
    """
    _check(noise_multiplier, sampling_rate, rounds, delta)
    acct = _make_accountant(accountant)
    if rounds == 0:
        return 0.0
    dpa = _dp_accounting()
    acct.compose(dpa.SelfComposedDpEvent(round_event(noise_multiplier, sampling_rate), int(rounds)))
    return float(acct.get_epsilon(delta))


def epsilon_per_round(
    noise_multiplier: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
) -> list[float]:
    """Cumulative epsilon after each of rounds ``1..rounds``.

    RDP: the one-round RDP curve is computed once and scaled by ``t`` (exactly
    what composing ``t`` times does), so this costs one mechanism analysis plus
    ``T`` cheap conversions. PLD: one accountant composes round by round.

    Args:
      noise_multiplier: ``z > 0``.
      sampling_rate: ``q`` in (0, 1].
      rounds: ``T >= 0``.
      delta: target delta in (0, 1).
      accountant: ``"rdp"`` or ``"pld"``.

    Returns:
      ``[T]`` list; entry ``t - 1`` equals ``dp_epsilon(z, q, t, delta)``.
    """
    _check(noise_multiplier, sampling_rate, rounds, delta)
    acct = _make_accountant(accountant)
    event = round_event(noise_multiplier, sampling_rate)
    if accountant == "rdp":
        dpa = _dp_accounting()
        acct.compose(event)
        orders, rdp_one = acct.orders, acct.rdp
        return [
            float(dpa.rdp.compute_epsilon(orders, t * rdp_one, delta)[0])
            for t in range(1, int(rounds) + 1)
        ]
    epsilons = []
    for _ in range(int(rounds)):
        acct.compose(event)
        epsilons.append(float(acct.get_epsilon(delta)))
    return epsilons


def noise_for_epsilon(
    target_epsilon: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    accountant: str = "rdp",
    rtol: float = 1e-3,
    max_noise: float = 1e4,
) -> float:
    """Smallest noise multiplier (to ``rtol``) whose epsilon is ``<= target_epsilon``.

    Bisection on ``log z`` (epsilon decreases as ``z`` grows). The returned
    value always satisfies the target; it exceeds the exact minimum by at most
    a factor ``1 + rtol``.

    Args:
      target_epsilon: epsilon budget ``> 0``.
      sampling_rate: ``q`` in (0, 1].
      rounds: ``T >= 1``.
      delta: target delta in (0, 1).
      accountant: ``"rdp"`` or ``"pld"``.
      rtol: relative width of the final bracket.
      max_noise: give up (ConfigError) if even this ``z`` is not enough.

    Returns:
      Noise multiplier ``z`` with ``dp_epsilon(z, q, T, delta) <= target_epsilon``.
    """
    if not target_epsilon > 0:
        raise ConfigError(f"target_epsilon must be > 0, got {target_epsilon}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1 to calibrate noise, got {rounds}")

    def eps(z: float) -> float:
        return dp_epsilon(z, sampling_rate, rounds, delta, accountant)

    hi = 1.0
    while eps(hi) > target_epsilon:
        if hi >= max_noise:
            raise ConfigError(
                f"epsilon {target_epsilon} is not reachable with noise_multiplier <= "
                f"{max_noise} (q={sampling_rate}, rounds={rounds}, delta={delta})"
            )
        hi = min(hi * 2.0, max_noise)
    lo = hi / 2.0
    while lo > 1e-3 and eps(lo) <= target_epsilon:
        hi, lo = lo, lo / 2.0
    # Invariant: eps(hi) <= target < eps(lo) (or lo is tiny).
    while hi / lo > 1.0 + rtol:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi
