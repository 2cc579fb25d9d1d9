"""Learning rates over rounds: optax schedules indexed by the round.

A schedule maps the number of rounds done before round ``r`` (``step = r - 1``,
rounds are 1-based) to a rate; round 1 gets the schedule's first value. The
round enters the jitted programs as a traced scalar (the chunks'
``round_index`` for the clients, the server optimizer's step count for the
server), so a schedule never recompiles a round. The step count is the number
of server steps applied: every round, except one that secure aggregation
aborts (it applies nothing, federated/algorithm.py), after which the server's
schedule runs one round behind the clients'.

Kinds (``train.server_lr_schedule`` for ``train.server_lr``,
``train.lr_schedule`` for the client's ``train.lr`` and ``train.embedding_lr``):

* ``constant``: the peak rate every round;
* ``cosine``: ``optax.cosine_decay_schedule`` from the peak down to
  ``floor * peak`` over ``schedule_rounds`` rounds (reached at round
  ``schedule_rounds + 1``, then held);
* ``exponential``: ``peak * decay_rate ** (r - 1)``;
* ``warmup``: linear warmup, ``peak * r / W`` for rounds ``r <= W``
  (``W = schedule_warmup_rounds``), then the peak;
* ``warmup_cosine``: the same warmup, then the cosine from the peak at round
  ``W`` down to ``floor * peak`` at round ``schedule_rounds + 1``.

The cosine's horizon is its own field, ``schedule_rounds``, never
``train.rounds``: a round's result must not depend on how many rounds the run
has (a run extended with ``--resume`` equals one that asked for all its
rounds from the start).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
Schedule = Callable[[Array], Array]

SCHEDULES = ("constant", "cosine", "exponential", "warmup", "warmup_cosine")


def round_schedule(kind: str, peak: float, *, rounds: int | None = None,
                   warmup_rounds: int = 0, decay_rate: float = 1.0,
                   floor: float = 0.0) -> float | Schedule:
    """The rate of each round as an optax schedule of ``step = round - 1``.

    Args:
      kind: one of :data:`SCHEDULES`.
      peak: the rate of ``constant`` and the start (after warmup) of the others.
      rounds: the cosine's horizon ``schedule_rounds`` (cosine kinds only).
      warmup_rounds: ``W`` of the warmup kinds (>= 1 there).
      decay_rate: ``exponential``'s factor per round.
      floor: the cosine's final rate as a fraction of ``peak``.

    Returns:
      ``peak`` itself for ``constant`` (a float: optimizers then take the same
      path as without a schedule), else a schedule.

    Raises:
      ValueError: an unknown kind, or a missing/short horizon or warmup.
    """
    if kind == "constant":
        return peak
    if kind == "exponential":
        return optax.exponential_decay(peak, transition_steps=1, decay_rate=decay_rate)
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}")
    if kind == "cosine":
        if rounds is None or rounds < 1:
            raise ValueError(f"schedule 'cosine' needs rounds (schedule_rounds) >= 1, got {rounds}")
        return optax.cosine_decay_schedule(peak, decay_steps=rounds, alpha=floor)
    if warmup_rounds < 1:
        raise ValueError(f"schedule {kind!r} needs warmup_rounds >= 1, got {warmup_rounds}")
    if kind == "warmup_cosine" and (rounds is None or rounds <= warmup_rounds):
        raise ValueError("schedule 'warmup_cosine' needs rounds (schedule_rounds) > "
                         f"warmup_rounds, got {rounds} and {warmup_rounds}")
    # Step s < W: peak * (s + 1) / W, i.e. round r = s + 1 gets peak * r / W.
    warm = optax.linear_schedule(peak / warmup_rounds, peak, warmup_rounds - 1)
    if kind == "warmup":
        after = optax.constant_schedule(peak)
    else:   # the cosine starts at the peak in round W (step W - 1), floor at step `rounds`
        after = optax.cosine_decay_schedule(peak, decay_steps=rounds - warmup_rounds + 1,
                                            alpha=floor)
    return optax.join_schedules([warm, after], [warmup_rounds - 1])


def schedule_of(cfg: Any, kind: str, peak: float) -> float | Schedule:
    """:func:`round_schedule` with the ``schedule_*`` fields of a ``[train]`` config."""
    return round_schedule(kind, peak, rounds=cfg.schedule_rounds,
                          warmup_rounds=cfg.schedule_warmup_rounds,
                          decay_rate=cfg.schedule_decay_rate, floor=cfg.schedule_floor)


def at_round(rate: float | Schedule, round_index: Array | int) -> Array | float:
    """The rate of round ``round_index`` (1-based; 0, an unset round, reads as 1)."""
    if not callable(rate):
        return rate
    return rate(jnp.maximum(jnp.asarray(round_index) - 1, 0))


def client_rates(cfg: Any, round_index: Array | int | None
                 ) -> tuple[Array | float, Array | float | None]:
    """``(lr, embedding_lr)`` of the client optimizer in round ``round_index``.

    Args:
      cfg: the ``[train]`` config (``lr``, ``embedding_lr``, ``lr_schedule``
        and the ``schedule_*`` fields).
      round_index: the round (traced inside the chunk program), or None.

    Returns:
      The configured rates unchanged with a ``constant`` schedule or no round
      (the same floats as without schedules), else both scaled by the schedule.
    """
    if cfg.lr_schedule == "constant" or round_index is None:
        return cfg.lr, cfg.embedding_lr
    lr = at_round(schedule_of(cfg, cfg.lr_schedule, cfg.lr), round_index)
    emb = (None if cfg.embedding_lr is None
           else at_round(schedule_of(cfg, cfg.lr_schedule, cfg.embedding_lr), round_index))
    return lr, emb


def server_rate(cfg: Any) -> float | Schedule:
    """``train.server_lr`` under ``train.server_lr_schedule`` (a schedule of the
    server's step count: the rounds applied so far, see the module docstring)."""
    return schedule_of(cfg, cfg.server_lr_schedule, cfg.server_lr)
