"""A federated algorithm as an ``(init, apply)`` pair of functions (fedjax style).

``init(key) -> FedState`` creates the global shared params, the server optimizer
state and the stacked private store of every client. ``apply(state, chunks,
round_key) -> (state, RoundStats)`` runs one round: every chunk of participants
through the parallel chunk step (or the per-client loop), then one server step.
Only the chunk step and the server step are jitted; this function is the glue.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from feddmr_jax.federated.aggregation import (AGGREGATORS, init_accumulator, mean_delta,
                                              server_update)
from feddmr_jax.federated.robust import ROBUST_AGGREGATORS, init_buffer, robust_delta
from feddmr_jax.federated.client import LocalStep, gradient_step, make_client_update
from feddmr_jax.federated.parallel import (ChunkData, make_chunk_step,
                                           make_sequential_step)
from feddmr_jax.losses import LossFn
from feddmr_jax.models.base import Leaves, Model

Array = jax.Array


class FedState(NamedTuple):
    """Everything that changes across rounds.

    Attributes:
      shared: global shared params.
      server_opt_state: state of the server optimizer.
      private_store: stacked private params of every client (``[U, ...]``).
    """

    shared: Leaves
    server_opt_state: Any
    private_store: Leaves


class RoundStats(NamedTuple):
    """Diagnostics of one round (host floats)."""

    train_loss: float
    accepted: int
    dropped: int
    unreported: int = 0


class FederatedAlgorithm(NamedTuple):
    """``init``/``apply`` plus the jitted chunk step ``apply`` calls (for
    benchmarks that lower it: ``chunk_step.lower(...)``; in sequential mode it
    is the per-client loop)."""

    init: Callable[[Array], FedState]
    apply: Callable[[FedState, Sequence[ChunkData], Array], tuple[FedState, RoundStats]]
    chunk_step: Callable


def init_private_store(model: Model, key: Array, num_clients: int) -> Leaves:
    """Stacked private params, client u initialized from ``fold_in(key, u)``."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(num_clients))
    return jax.jit(jax.vmap(model.init_private))(keys)


def build_algorithm(model: Model, loss_fn: LossFn | None = None, *, num_clients: int,
                    num_items: int,
                    client_optimizer: optax.GradientTransformation | None = None,
                    server_optimizer: optax.GradientTransformation,
                    local_epochs: int, batch_size: int, sparse: bool = True,
                    weighting: str = "uniform", table_mean: str = "touched",
                    sequential: bool = False,
                    dropout_keys: bool = False,
                    local_step: LocalStep | None = None, aggregator: str = "mean",
                    clip_norm: float = 1.0, trim_fraction: float = 0.1,
                    max_participants: int | None = None) -> FederatedAlgorithm:
    """Builds the round (see module docstring).

    Args:
      model: the model.
      loss_fn: composed local loss.
      num_clients: size of the private store.
      num_items: catalogue size.
      client_optimizer: local optimizer (fresh state every round).
      server_optimizer: applied to the negated mean delta; ``optax.sgd(1.0)``
        is FedAvg.
      local_epochs, batch_size: local training schedule.
      sparse: train on gathered local item rows (True) or full tables.
      weighting: ``"uniform"`` or ``"examples"``.
      table_mean: how item-table rows are averaged: ``"touched"`` or
        ``"participants"`` (see federated/aggregation.py).
      sequential: use the per-client loop instead of ``vmap`` (reference).
      dropout_keys: give the model a per-step dropout key.
      local_step: a custom minibatch step; default: one gradient step of
        ``loss_fn`` with ``client_optimizer``.
      aggregator: ``mean``; ``clipped_mean`` (each upload clipped to L2 norm
        ``clip_norm`` first); ``median`` or ``trimmed_mean`` (coordinate-wise,
        trimming ``trim_fraction`` at each end; see federated/robust.py).
      max_participants: clients per round (slots of the robust buffer).
    """
    if aggregator not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {aggregator!r}; choose from {AGGREGATORS}")
    robust = aggregator in ROBUST_AGGREGATORS
    slots = max_participants or num_clients
    if local_step is None:
        if loss_fn is None or client_optimizer is None:
            raise ValueError("give loss_fn and client_optimizer, or local_step")
        local_step = gradient_step(loss_fn, client_optimizer)
    client_update = make_client_update(local_step, local_epochs=local_epochs,
                                       batch_size=batch_size, dropout_keys=dropout_keys)
    make = make_sequential_step if sequential else make_chunk_step
    chunk_step = make(client_update, sparse=sparse, num_items=num_items, weighting=weighting,
                      clip_norm=clip_norm if aggregator == "clipped_mean" else None)

    @jax.jit
    def server_step(shared, opt_state, acc):
        delta = (robust_delta(acc.buffer, aggregator, trim_fraction) if robust
                 else mean_delta(acc, table_mean))
        new_shared, opt_state = server_update(shared, opt_state, delta, server_optimizer)
        return new_shared, opt_state

    def init(key: Array) -> FedState:
        k_shared, k_private = jax.random.split(key)
        shared = model.init_shared(k_shared)
        return FedState(shared, server_optimizer.init(shared),
                        init_private_store(model, k_private, num_clients))

    def apply(state: FedState, chunks: Sequence[ChunkData],
              round_key: Array) -> tuple[FedState, RoundStats]:
        acc = init_accumulator(state.shared,
                               init_buffer(state.shared, slots) if robust else None)
        store = state.private_store
        loss_sum = jnp.zeros((), jnp.float32)
        for chunk in chunks:
            store, acc, loss = chunk_step(state.shared, store, acc, chunk, round_key)
            loss_sum = loss_sum + loss
        shared, opt_state = server_step(state.shared, state.server_opt_state, acc)
        accepted = int(acc.accepted)
        stats = RoundStats(train_loss=float(loss_sum) / max(accepted, 1),
                           accepted=accepted, dropped=int(acc.dropped))
        return FedState(shared, opt_state, store), stats

    return FederatedAlgorithm(init, apply, chunk_step)
