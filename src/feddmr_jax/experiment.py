"""The experiment's assembly: everything built once before the first round, and one round.

:func:`build_experiment` wires the pipeline (dataset -> split -> evaluation
sets -> model -> loss -> algorithm -> round planner) into an
:class:`Experiment`; :func:`run_round` runs one round of it and
:func:`evaluate_state` scores a state on its validation or test set. The loop
that repeats rounds, selects on validation and writes the run folder is
:func:`feddmr_jax.train.train`, which re-exports these names.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Mapping

import jax
import numpy as np
import optax

from feddmr_jax import config as config_lib
from feddmr_jax.compiler_options import for_backend
from feddmr_jax.config import RunConfig
from feddmr_jax.data import (build_eval_sets, load_dataset, split_interactions, train_csr,
                             train_exclusions)
from feddmr_jax.data.packing import recent_history
from feddmr_jax.data.types import EvalSet, Split
from feddmr_jax.evaluate import evaluate, evaluate_stored, make_scorer, resolve_eval_mode
from feddmr_jax.federated.algorithm import (FederatedAlgorithm, FedState, RoundConfig,
                                            build_algorithm)
from feddmr_jax.federated.client import LocalStep, gradient_step
from feddmr_jax.federated.devices import client_mesh, mesh_size
from feddmr_jax.federated.faults import assign_faults
from feddmr_jax.federated.private_store import check_store_size
from feddmr_jax.federated.communication import RoundTraffic, TrafficPlan, traffic_plan
from feddmr_jax.federated.rounds import RoundPlanner, build_planner, iter_round
from feddmr_jax.federated.schedules import client_rates, server_rate
from feddmr_jax.federated.server_optimizers import build_server_optimizer
from feddmr_jax.federated.shape_classes import PLAN_ROUNDS
from feddmr_jax.federated.sampling import participants_per_round, sample_clients
from feddmr_jax.losses import LossTerm, bce, compose, l2, proximal
from feddmr_jax.host_memory import release_free_memory
from feddmr_jax.methods import Method, build_model, get_method, uses_dropout
from feddmr_jax.models import Leaves, Model, ModelParams
from feddmr_jax.privacy.plan import PrivacyPlan, build_privacy_plan, round_privacy

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything built once before the first round."""

    cfg: RunConfig
    split: Split
    model: Model
    algorithm: FederatedAlgorithm
    planner: RoundPlanner
    val_set: EvalSet
    test_set: EvalSet
    scorer: Callable
    clients_per_round: int
    keys: dict[str, jax.Array]
    privacy: PrivacyPlan | None = None
    eval_mode: str = "global"        # resolved train.eval_mode: global or local
    traffic: TrafficPlan | None = None  # message sizes (federated/communication.py)


def build_client_optimizer(cfg: config_lib.TrainConfig,
                           round_index: jax.Array | None = None) -> optax.GradientTransformation:
    """Adam or SGD; with ``embedding_lr``, embeddings (item tables and private
    params) and the network (shared dense params) get their own rates; with a
    (traced) ``round_index``, the rates of that round under ``train.lr_schedule``
    (federated/schedules.py).

    Args:
      cfg: the ``[train]`` config (``optimizer``, ``lr``, ``embedding_lr``, schedule).
      round_index: int32 scalar round number (traced), or None: the peak rates.

    Returns:
      The client's optax transformation (fresh state each round).
    """
    make = optax.adam if cfg.optimizer == "adam" else optax.sgd
    lr, embedding_lr = client_rates(cfg, round_index)
    if embedding_lr is None:
        return make(lr)

    def labels(params: ModelParams) -> ModelParams:
        emb = lambda tree: jax.tree.map(lambda _: "embedding", tree)
        return ModelParams(private=emb(params.private),
                           shared=Leaves(emb(params.shared.tables),
                                         jax.tree.map(lambda _: "network",
                                                      params.shared.dense)))

    return optax.multi_transform({"embedding": make(embedding_lr),
                                  "network": make(lr)}, labels)


def regularizers(cfg: config_lib.TrainConfig,
                 extra_terms: Mapping[str, LossTerm] | None = None) -> dict[str, LossTerm]:
    """proximal(mu) and l2 when non-zero, plus any user terms.

    Args:
      cfg: the ``[train]`` config (``mu``, ``prox_scope``, ``l2``).
      extra_terms: user loss terms ``{name: fn(params, global, batch)}``.

    Returns:
      ``{name: term}``, the regularizers in the order they are added.
    """
    terms: dict[str, LossTerm] = {}
    if cfg.mu > 0:
        terms["proximal"] = proximal(cfg.mu, cfg.prox_scope)
    if cfg.l2 > 0:
        terms["l2"] = l2(cfg.l2)
    terms.update(extra_terms or {})
    return terms


def build_loss(model: Model, cfg: config_lib.TrainConfig,
               extra_terms: Mapping[str, LossTerm] | None = None):
    """data BCE + the method's own terms (methods/) + proximal(mu) + l2, plus any user terms.

    Args:
      model: the built model (``apply`` scores a batch).
      cfg: the ``[train]`` config.
      extra_terms: user loss terms.

    Returns:
      The composed loss (``losses.compose``).
    """
    terms: dict[str, LossTerm] = {"bce": bce(model.apply)}
    terms.update(get_method(model.name).loss_terms(model))
    terms.update(regularizers(cfg, extra_terms))
    return compose(**terms)


def build_local_step(method: Method, model: Model, cfg: config_lib.TrainConfig,
                     num_items: int, extra_terms: Mapping[str, LossTerm] | None = None
                     ) -> LocalStep | Callable[[jax.Array], LocalStep]:
    """The method's minibatch step: its own, or a gradient step of the composed
    loss with its per-round optimizer or the ``[train]`` optimizer.

    Args:
      method: the method's recipe (``methods.get_method``).
      model: the built model.
      cfg: the ``[train]`` config.
      num_items: items in the catalogue.
      extra_terms: user loss terms.

    Returns:
      A :class:`LocalStep`, or ``round_index -> LocalStep`` when the step
      depends on the (traced) round.

    Raises:
      ConfigError: a non-constant ``train.lr_schedule`` for a method with its
        own optimizer (the config refuses it first; this guards direct calls).
    """
    if cfg.lr_schedule != "constant" and (method.local_step or method.round_optimizer):
        raise config_lib.ConfigError(f"train.lr_schedule does not apply to model {model.name!r}, "
                                     "whose learning rates are [model] fields; remove it")
    if method.local_step is not None:
        return method.local_step(model, num_items, regularizers(cfg, extra_terms))
    loss_fn = build_loss(model, cfg, extra_terms)
    if method.round_optimizer is not None:
        return lambda r: gradient_step(loss_fn, method.round_optimizer(model.config, r))
    if cfg.lr_schedule != "constant":     # the round is traced: one program for every round
        return lambda r: gradient_step(loss_fn, build_client_optimizer(cfg, r))
    return gradient_step(loss_fn, build_client_optimizer(cfg))


def local_eval_items(val_set: EvalSet, test_set: EvalSet) -> np.ndarray:
    """``[U, Cv + Ct]`` every user's validation then test candidates (local evaluation mode).

    Args:
      val_set, test_set: the experiment's evaluation sets.

    Returns:
      int32 ``[U, Cv + Ct]``.
    """
    return np.concatenate([val_set.candidates, test_set.candidates], axis=1).astype(np.int32)


def _mesh_devices(count: int | None) -> list:
    """The first ``count`` devices (None: all of them, every process's)."""
    devices = jax.devices()
    if count is None:
        return devices
    if count > len(devices):
        raise config_lib.ConfigError(f"train.devices is {count} but JAX sees only "
                                     f"{len(devices)} device(s)")
    return devices[:count]


def build_experiment(cfg: RunConfig, *, extra_terms: Mapping[str, LossTerm] | None = None,
                     sequential: bool = False) -> Experiment:
    """Loads data and builds model, loss, algorithm and planner.

    Args:
      cfg: the run configuration (validated here).
      extra_terms: user loss terms ``{name: fn(params, global, batch)}``.
      sequential: the per-client loop instead of ``vmap``, no device mesh (reference).

    Returns:
      The :class:`Experiment`.
    """
    cfg.validate()
    t = cfg.train
    inter = load_dataset(cfg.data.dataset, cfg.data.data_dir, path=cfg.data.data_path,
                         **cfg.data.load_options())
    split = split_interactions(inter, scheme=cfg.data.split, tie_break=cfg.data.tie_break,
                               seed=cfg.data.seed)
    del inter      # the split holds its own copy (10^6 users: 0.4 GB less through the build)
    val_set, test_set = build_eval_sets(split, num_negatives=cfg.data.eval_negatives,
                                        seed=cfg.data.eval_seed)
    model = build_model(t.model, cfg.model, split.num_items)
    method = get_method(t.model)
    eval_mode = resolve_eval_mode(t.eval_mode, method.eval_mode, cfg.data.split)
    eval_items = local_eval_items(val_set, test_set) if eval_mode == "local" else None
    # Every client's memory, [U, n]: only local evaluation's initial scores need it up front.
    eval_history = (None if eval_items is None
                    else recent_history(train_csr(split), model.history_len))
    check_store_size(model, split.num_users, 0 if eval_items is None else eval_items.shape[1],
                     t.max_private_gb)
    count = participants_per_round(split.num_users, count=t.clients_per_round,
                                   fraction=t.client_fraction)
    privacy = build_privacy_plan(t, split.num_users, count)
    mesh = None if sequential else client_mesh(_mesh_devices(t.devices))
    row_decay = method.row_decay is not None and method.row_decay(model.config)
    # Sparse row decay uploads excess rows, not deltas DP, secure aggregation or the robust
    # aggregators can take: those runs train on whole tables (equal results; parallel.py).
    sparse = t.sparse and not (row_decay and (privacy is not None or t.aggregator != "mean"))
    if sparse != t.sparse:
        log.warning("%s decays every item row and %s needs true deltas: training on whole "
                    "item tables (same result as sparse, slower)", t.model,
                    "DP/secure aggregation" if privacy is not None else f"{t.aggregator!r}")
    rounds = RoundConfig(
        num_clients=split.num_users, num_items=split.num_items, local_epochs=t.local_epochs,
        batch_size=t.batch_size, sparse=sparse, weighting=t.weighting,
        table_mean=t.table_mean, aggregator=t.aggregator, clip_norm=t.clip_norm,
        trim_fraction=t.trim_fraction, max_participants=count, sequential=sequential,
        dropout_keys=uses_dropout(cfg.model),
        row_decay=row_decay, compiler_options=for_backend(method.cpu_compiler_options))
    algorithm = build_algorithm(
        model, build_local_step(method, model, t, split.num_items, extra_terms),
        build_server_optimizer(t.server_optimizer, server_rate(t), momentum=t.server_momentum,
                               b1=t.server_b1, b2=t.server_b2, eps=t.server_eps),
        rounds, eval_items=eval_items, eval_history=eval_history,
        dp=privacy.dp if privacy else None, mesh=mesh)
    traffic = traffic_plan(jax.eval_shape(model.init_shared, jax.random.key(0)),   # shapes
                           sparse=sparse, row_decay=row_decay,
                           secure=privacy is not None and privacy.secure_agg)
    # Training negatives avoid the client's training positives (strict) or all (reference).
    planner = build_planner(train_csr(split), train_exclusions(split, cfg.data.train_negatives),
                            history_len=model.history_len, num_negatives=t.num_negatives,
                            batch_size=t.batch_size, chunk_size=t.chunk_size, seed=t.seed,
                            devices=mesh_size(mesh), eval_items=eval_items,
                            max_classes=t.shape_classes,
                            slot_rounds=PLAN_ROUNDS * t.local_epochs * count / split.num_users)
    names = ("init", "sample", "train")
    keys = dict(zip(names, jax.random.split(jax.random.key(t.seed), len(names))))
    release_free_memory()   # the build's temporaries (host_memory.py)
    return Experiment(cfg, split, model, algorithm, planner, val_set, test_set,
                      make_scorer(model), count, keys, privacy, eval_mode, traffic)


def round_chunks(exp: Experiment, round_index: int,
                 traffic: RoundTraffic | None = None):
    """Round ``round_index``'s participants, faults and chunks (packed lazily), untrained.

    ``traffic``: counts the round's bytes as its chunks pass, or None.

    Returns:
      ``(participants, faults, chunks)``: the sampled ids, their
      :class:`~feddmr_jax.federated.faults.RoundFaults`, the chunk iterator.
    """
    participants = sample_clients(exp.keys["sample"], round_index,
                                  exp.split.num_users, exp.clients_per_round)
    faults = assign_faults(participants, round_index, exp.cfg.train.seed,
                           exp.cfg.train.faults())
    chunks = iter_round(exp.planner, faults.participants, round_index,
                        update_scale=faults.update_scale, update_nan=faults.update_nan)
    if traffic is not None:
        chunks = traffic.meter(chunks, sampled=len(participants))
    return participants, faults, chunks


def run_round(exp: Experiment, state: FedState, round_index: int,
              traffic: RoundTraffic | None = None):
    """One round: sample participants, inject faults, plan chunks, train, aggregate.

    ``traffic``: counts the round's bytes as its chunks pass (its ``record()``
    once this returns; federated/communication.py), or None.

    Returns:
      ``(state, RoundStats)``; ``RoundStats.unreported`` counts the clients
      that never reported (fault injection).
    """
    participants, faults, chunks = round_chunks(exp, round_index, traffic)
    noise_key, masks = round_privacy(exp.privacy, round_index, participants, faults.dropped)
    state, stats = exp.algorithm.apply(state, chunks,
                                       jax.random.fold_in(exp.keys["train"], round_index),
                                       noise_key=noise_key, masks=masks)
    return state, stats._replace(unreported=len(faults.dropped))


def evaluate_state(exp: Experiment, state: FedState, eval_set: EvalSet) -> dict[str, float]:
    """Metrics of ``eval_set`` (the experiment's validation or test set), in ``exp.eval_mode``.

    Args:
      exp: the experiment.
      state: the federated state to score.
      eval_set: ``exp.val_set`` or ``exp.test_set`` (any set in global mode).

    Returns:
      ``{metric: value}`` (``config.EVAL_METRICS``).
    """
    if exp.eval_mode == "local":     # stored scores: validation columns, then test columns
        if eval_set is exp.val_set:
            offset = 0
        elif eval_set is exp.test_set:
            offset = exp.val_set.candidates.shape[1]
        else:
            raise ValueError("local evaluation scores only the experiment's own val_set "
                             "and test_set")
        return evaluate_stored(state.private_store, eval_set, offset=offset)
    return evaluate(exp.scorer, state.shared, state.private_store, eval_set,
                    exp.planner.history, exp.planner.history_mask)
