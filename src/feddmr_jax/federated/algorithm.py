"""A federated algorithm as an ``(init, apply)`` pair of functions (fedjax style).

``init(key) -> FedState`` creates the global shared params, the server optimizer
state and the stacked private store of every client. ``apply(state, chunks,
round_key) -> (state, RoundStats)`` runs one round: every chunk of participants
through the parallel chunk step (or the per-client loop), then one server step.
Only the chunk step and the server step are jitted; this function is the glue.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.aggregation import (AGGREGATORS, Accumulator, add_row_decay,
                                              init_accumulator, mean_delta, server_update)
from feddmr_jax.federated.robust import ROBUST_AGGREGATORS, init_buffer, robust_delta
from feddmr_jax.federated.server_optimizers import touched_rows
from feddmr_jax.federated.client import LocalStep, make_client_update
from feddmr_jax.federated.private_store import attach_scores, init_private_store
from feddmr_jax.federated.devices import Mesh, replicate, shard_clients
from feddmr_jax.federated.parallel import (ChunkData, initial_scores, make_chunk_step,
                                           make_client_fn, make_sequential_step)
from feddmr_jax.models.base import Leaves, Model
from feddmr_jax.privacy.dp import DPSetting, noisy_mean
from feddmr_jax.federated.secure_round import init_masked_accumulator, lone_members, unmask
from feddmr_jax.host_memory import release_free_memory
from feddmr_jax.privacy.secure_agg import MaskGraph

Array = jax.Array
log = logging.getLogger(__name__)


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
    """Diagnostics of one round (host floats).

    Attributes:
      train_loss: mean local training loss of the accepted uploads; NaN when no
        upload was accepted (the global model did not move).
      accepted: uploads the server took.
      dropped: uploads rejected as non-finite.
      unreported: sampled clients that never reported (fault injection).
      aborted: secure aggregation aborted the round (a member of the sum had no
        partner in it): no upload was applied; the participants keep the private
        params of their local training, as real clients would.
    """

    train_loss: float
    accepted: int
    dropped: int
    unreported: int = 0
    aborted: bool = False


class FederatedAlgorithm(NamedTuple):
    """``init``/``apply`` plus the jitted chunk step ``apply`` calls (for
    benchmarks that lower it: ``chunk_step.lower(...)``; in sequential mode it
    is the per-client loop)."""

    init: Callable[[Array], FedState]
    apply: Callable[..., tuple[FedState, RoundStats]]
    chunk_step: Callable
    parts: RoundParts | None = None


class RoundParts(NamedTuple):
    """The other pieces of a round, for tools that trace them (federated/audit.py).

    Attributes:
      client_fn: one client's computation ``(global_shared, private, row, key)
        -> ClientOutput`` (federated/parallel.py).
      init_round: ``(shared, masks) -> Accumulator``, the server's empty sums.
      server_step: jitted ``(shared, opt_state, acc, noise_key) -> (shared,
        opt_state)``.
    """

    client_fn: Callable
    init_round: Callable
    server_step: Callable


# Chunks dispatched ahead of the device at most: asynchronous dispatch lets the host pack
# the next chunks while the device trains, but an unbounded queue would hold every packed
# chunk of a round whenever packing outpaces training (host memory ~ participants).
MAX_CHUNKS_IN_FLIGHT = 4


@dataclasses.dataclass(frozen=True)
class RoundConfig:
    """How the rounds of a :class:`FederatedAlgorithm` run (built by ``experiment.build_experiment``
    from ``[train]``; tests build it directly).

    Attributes:
      num_clients: size of the private store (every client of the run).
      num_items: catalogue size.
      local_epochs: epochs E of local training per round.
      batch_size: minibatch size B of local training.
      sparse: train on gathered local item rows (True) or full tables.
      weighting: ``"uniform"`` or ``"examples"``.
      table_mean: how item-table rows are averaged: ``"touched"`` or
        ``"participants"`` (see federated/aggregation.py).
      aggregator: ``mean``; ``clipped_mean`` (each upload clipped to L2 norm
        ``clip_norm`` first); ``median`` or ``trimmed_mean`` (coordinate-wise,
        trimming ``trim_fraction`` at each end; see federated/robust.py).
      clip_norm: see ``aggregator``.
      trim_fraction: see ``aggregator``.
      max_participants: clients per round (slots of the robust buffer); None:
        ``num_clients``.
      sequential: use the per-client loop instead of ``vmap`` (reference).
      dropout_keys: give the model a per-step dropout key.
      row_decay: the local optimizer changes every row of the item tables,
        used or not (weight decay, e.g. FedRAP's): dense mode counts every row
        as used; sparse mode applies the decay of the rows it does not gather
        exactly (federated/parallel.py, aggregation.py), with the plain
        ``mean`` aggregator only (no DP, robust aggregators or secure
        aggregation; use dense mode for those).
      compiler_options: XLA options for compiling the chunk step (the
        per-client function in the sequential loop), or None for XLA's defaults
        (``feddmr_jax/compiler_options.py``).
    """

    num_clients: int
    num_items: int
    local_epochs: int
    batch_size: int
    sparse: bool = True
    weighting: str = "uniform"
    table_mean: str = "touched"
    aggregator: str = "mean"
    clip_norm: float = 1.0
    trim_fraction: float = 0.1
    max_participants: int | None = None
    sequential: bool = False
    dropout_keys: bool = False
    row_decay: bool = False
    compiler_options: Mapping[str, str] | None = None


def build_algorithm(model: Model, local_step: LocalStep | Callable[[Array], LocalStep],
                    server_optimizer: optax.GradientTransformation, cfg: RoundConfig, *,
                    eval_items: np.ndarray | None = None,
                    eval_history: tuple[np.ndarray, np.ndarray] | None = None,
                    dp: DPSetting | None = None,
                    mesh: Mesh | None = None) -> FederatedAlgorithm:
    """Builds the round (see module docstring).

    Args:
      model: the model.
      local_step: one client minibatch step (``federated.client.gradient_step``
        of a composed loss and an optimizer, or a method's own), or
        ``round_index -> LocalStep`` (per-round schedules, see
        federated/client.py). The optimizer state is fresh every round.
      server_optimizer: applied to the negated mean delta; ``optax.sgd(1.0)``
        is FedAvg (federated/server_optimizers.py: FedAvgM, FedAdam, FedYogi,
        FedAdagrad, which leave the rows no upload touched frozen).
      cfg: the round's schedule, aggregation and execution (:class:`RoundConfig`).
      eval_items: ``[num_clients, M]`` evaluation candidates (validation then
        test) of every client, for the ``local`` evaluation mode: the private
        store then holds each client's logits of them (``EVAL_SCORES``,
        federated/private_store.py), computed by each client right after its
        local training, initially by the initial global model; chunks must
        carry ``eval_items``. None: off.
      eval_history: ``(history, history_mask)`` ``[num_clients, n]``, every
        client's memory, for the initial scores (needed with ``eval_items``).
      dp: user-level DP-FedAvg (privacy/dp.py): each upload clipped to
        ``dp.clip_norm``, the round's sum noised and divided by
        ``dp.expected_clients`` (replaces ``cfg.aggregator`` and
        ``cfg.table_mean``; ``apply`` then needs ``noise_key``). None: off.
      mesh: the ``clients`` device mesh (federated/devices.py): each chunk's
        client axis is split over it, the state replicated; chunks must hold a
        multiple of ``mesh.size`` clients. None: one device.

    Returns:
      The algorithm. ``apply(state, chunks, round_key, *, noise_key=None,
      masks=None)``: ``masks`` (a :class:`~feddmr_jax.privacy.secure_agg.MaskGraph`)
      turns on simulated secure aggregation for the round.

    Raises:
      ValueError: an unknown aggregator, DP with another aggregator or
        weighting, or the per-client loop on a mesh.
      ConfigError: sparse ``row_decay`` with another aggregator or DP (and,
        from ``apply``, with secure aggregation).
    """
    aggregator, clip_norm = cfg.aggregator, cfg.clip_norm
    weighting, table_mean = cfg.weighting, cfg.table_mean
    num_clients, num_items, sparse = cfg.num_clients, cfg.num_items, cfg.sparse
    if aggregator not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {aggregator!r}; choose from {AGGREGATORS}")
    robust = aggregator in ROBUST_AGGREGATORS
    slots = cfg.max_participants or num_clients
    client_update = make_client_update(local_step, local_epochs=cfg.local_epochs,
                                       batch_size=cfg.batch_size, dropout_keys=cfg.dropout_keys)
    if cfg.sequential and mesh is not None:
        raise ValueError("the per-client loop (sequential=True) runs on one device; mesh must be None")
    make = make_sequential_step if cfg.sequential else make_chunk_step
    if dp is not None:
        if aggregator != "mean" or weighting != "uniform":
            raise ValueError("dp needs aggregator='mean' and weighting='uniform', got "
                             f"{aggregator!r} and {weighting!r}")
        clip_norm, aggregator = dp.clip_norm, "clipped_mean"  # clip each upload, then sum
    sparse_decay = sparse and cfg.row_decay
    if sparse_decay and (aggregator != "mean" or dp is not None):
        raise ConfigError("train.sparse: the decay of every item row (the method's weight "
                          "decay) is applied in sparse mode only with aggregator 'mean' and "
                          "no DP; set train.sparse = false")
    if eval_items is not None and eval_history is None:
        raise ValueError("eval_items (local evaluation) needs eval_history")
    score_fn = None if eval_items is None else model.apply
    chunk_step = make(client_update, sparse=sparse, num_items=num_items, weighting=weighting,
                      clip_norm=clip_norm if aggregator == "clipped_mean" else None,
                      score_fn=score_fn, row_decay=cfg.row_decay,
                      compiler_options=cfg.compiler_options)

    @jax.jit
    def server_step(shared, opt_state, acc, noise_key=None):
        if dp is not None:
            delta = noisy_mean(acc.delta_sum, noise_key, dp)
        elif robust:
            delta = robust_delta(acc.buffer, aggregator, cfg.trim_fraction)
        else:
            delta = add_row_decay(mean_delta(acc, table_mean), acc, shared)
        touched = touched_rows(acc, dp=dp is not None, robust=robust)  # frozen elsewhere
        new_shared, opt_state = server_update(shared, opt_state, delta, server_optimizer, touched)
        return new_shared, opt_state

    def init(key: Array) -> FedState:
        k_shared, k_private = jax.random.split(key)
        shared = model.init_shared(k_shared)
        store = init_private_store(model, k_private, num_clients)
        if eval_items is not None:
            store = attach_scores(store, initial_scores(model.apply, shared, store, eval_items,
                                                        *eval_history, num_items=num_items))
        state = replicate(FedState(shared, server_optimizer.init(shared), store), mesh)
        jax.block_until_ready(state)
        release_free_memory()   # the initialization's temporaries (host_memory.py)
        return state

    def init_round(shared: Leaves, masks: MaskGraph | None = None) -> Accumulator:
        if masks is not None:
            if sparse_decay:
                raise ConfigError("train.sparse: secure aggregation does not apply the decay "
                                  "of every item row (the method's weight decay) in sparse "
                                  "mode; set train.sparse = false")
            return init_masked_accumulator(shared, masks)
        return init_accumulator(shared, init_buffer(shared, slots) if robust else None,
                                row_decay=sparse_decay)

    def apply(state: FedState, chunks: Sequence[ChunkData], round_key: Array, *,
              noise_key: Array | None = None,
              masks: MaskGraph | None = None) -> tuple[FedState, RoundStats]:
        if dp is not None and noise_key is None:
            raise ValueError("DP-FedAvg (dp=...) needs this round's noise_key")
        state = replicate(state, mesh)
        acc = replicate(init_round(state.shared, masks), mesh)
        store = state.private_store
        losses = []       # summed once at the end: an add per chunk costs a dispatch each
        for i, chunk in enumerate(chunks):
            chunk = shard_clients(chunk, mesh)
            store, acc, loss = chunk_step(state.shared, store, acc, chunk, round_key)
            losses.append(loss)
            if i >= MAX_CHUNKS_IN_FLIGHT:   # bound the dispatch queue (and its chunks' buffers)
                losses[i - MAX_CHUNKS_IN_FLIGHT].block_until_ready()
        loss_sum = jnp.sum(jnp.stack(losses)) if losses else jnp.zeros((), jnp.float32)
        if acc.masks is not None:
            lone = lone_members(acc)
            if lone:   # Bonawitz et al.'s server aborts the round: nothing is applied
                log.warning("secure aggregation: round aborted, no update applied: %d "
                            "client(s) in the sum have no partner in it (their updates would "
                            "be exposed); raise train.secure_agg_neighbors", lone)
                return (FedState(state.shared, state.server_opt_state, store),
                        RoundStats(float("nan"), 0, int(acc.dropped), aborted=True))
            acc = unmask(acc)  # the server's first unmasked value: the round's sum
        shared, opt_state = server_step(state.shared, state.server_opt_state, acc, noise_key)
        accepted = int(acc.accepted)
        stats = RoundStats(train_loss=float(loss_sum) / accepted if accepted else float("nan"),
                           accepted=accepted, dropped=int(acc.dropped))
        return FedState(shared, opt_state, store), stats

    parts = RoundParts(make_client_fn(client_update, sparse=sparse, num_items=num_items,
                                      score_fn=score_fn, row_decay=cfg.row_decay),
                       init_round, server_step)
    return FederatedAlgorithm(init, apply, chunk_step, parts)
