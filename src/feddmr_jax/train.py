"""The training loop: sample, train, aggregate, evaluate, select on validation.

No maths lives here. :func:`build_experiment` wires the pipeline (dataset ->
split -> evaluation sets -> model -> loss -> algorithm -> round planner) and
:func:`train` runs rounds, writes ``metrics.jsonl`` (one line per round) and
``summary.json``, and returns the summary. Model selection uses the validation
split only; the test metrics reported are those of the best validation round.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np
import optax

from feddmr_jax import config as config_lib
from feddmr_jax.config import RunConfig
from feddmr_jax.data import (build_eval_sets, load_dataset, positives_csr,
                             split_interactions, train_csr)
from feddmr_jax.data.types import EvalSet, Split
from feddmr_jax.evaluate import evaluate, make_scorer
from feddmr_jax.federated.algorithm import (FederatedAlgorithm, FedState, RoundConfig,
                                            build_algorithm)
from feddmr_jax.federated.client import LocalStep, gradient_step
from feddmr_jax.federated.devices import client_mesh, mesh_size
from feddmr_jax.federated.faults import assign_faults
from feddmr_jax.federated.private_store import check_store_size
from feddmr_jax.federated.rounds import RoundPlanner, build_planner, iter_round
from feddmr_jax.federated.sampling import participants_per_round, sample_clients
from feddmr_jax.losses import LossTerm, bce, compose, l2, proximal
from feddmr_jax.methods import Method, build_model, get_method, uses_dropout
from feddmr_jax.models import Leaves, Model, ModelParams
from feddmr_jax.privacy.plan import PrivacyPlan, build_privacy_plan, round_privacy
from feddmr_jax.timing import CompileWatch

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


def build_client_optimizer(cfg: config_lib.TrainConfig) -> optax.GradientTransformation:
    """Adam or SGD; with ``embedding_lr``, embeddings (item tables and private
    params) and the network (shared dense params) get their own rates."""
    make = optax.adam if cfg.optimizer == "adam" else optax.sgd
    if cfg.embedding_lr is None:
        return make(cfg.lr)

    def labels(params: ModelParams) -> ModelParams:
        emb = lambda tree: jax.tree.map(lambda _: "embedding", tree)
        return ModelParams(private=emb(params.private),
                           shared=Leaves(emb(params.shared.tables),
                                         jax.tree.map(lambda _: "network",
                                                      params.shared.dense)))

    return optax.multi_transform({"embedding": make(cfg.embedding_lr),
                                  "network": make(cfg.lr)}, labels)


def regularizers(cfg: config_lib.TrainConfig,
                 extra_terms: Mapping[str, LossTerm] | None = None) -> dict[str, LossTerm]:
    """proximal(mu) and l2 when non-zero, plus any user terms."""
    terms: dict[str, LossTerm] = {}
    if cfg.mu > 0:
        terms["proximal"] = proximal(cfg.mu)
    if cfg.l2 > 0:
        terms["l2"] = l2(cfg.l2)
    terms.update(extra_terms or {})
    return terms


def build_loss(model: Model, cfg: config_lib.TrainConfig,
               extra_terms: Mapping[str, LossTerm] | None = None):
    """data BCE + the method's own terms (methods/) + proximal(mu) + l2, plus any user terms."""
    terms: dict[str, LossTerm] = {"bce": bce(model.apply)}
    terms.update(get_method(model.name).loss_terms(model))
    terms.update(regularizers(cfg, extra_terms))
    return compose(**terms)


def build_local_step(method: Method, model: Model, cfg: config_lib.TrainConfig,
                     num_items: int, extra_terms: Mapping[str, LossTerm] | None = None
                     ) -> LocalStep | Callable[[jax.Array], LocalStep]:
    """The method's minibatch step: its own, or a gradient step of the composed
    loss with its per-round optimizer or the ``[train]`` optimizer."""
    if method.local_step is not None:
        return method.local_step(model, num_items, regularizers(cfg, extra_terms))
    loss_fn = build_loss(model, cfg, extra_terms)
    if method.round_optimizer is not None:
        return lambda r: gradient_step(loss_fn, method.round_optimizer(model.config, r))
    return gradient_step(loss_fn, build_client_optimizer(cfg))


def local_eval_items(val_set: EvalSet, test_set: EvalSet) -> np.ndarray:
    """``[U, Cv + Ct]`` every user's validation then test candidates (local evaluation)."""
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
    """Loads data and builds model, loss, algorithm and planner."""
    cfg.validate()
    t = cfg.train
    inter = load_dataset(cfg.data.dataset, cfg.data.data_dir, path=cfg.data.data_path,
                         **cfg.data.load_options())
    split = split_interactions(inter, scheme=cfg.data.split)
    val_set, test_set = build_eval_sets(split, num_negatives=cfg.data.eval_negatives,
                                        seed=cfg.data.eval_seed)
    model = build_model(t.model, cfg.model, split.num_items)
    method = get_method(t.model)
    eval_items = local_eval_items(val_set, test_set) if method.eval_mode == "local" else None
    check_store_size(model, split.num_users, 0 if eval_items is None else eval_items.shape[1],
                     t.max_private_gb)
    count = participants_per_round(split.num_users, count=t.clients_per_round,
                                   fraction=t.client_fraction)
    privacy = build_privacy_plan(t, split.num_users, count)
    mesh = None if sequential else client_mesh(_mesh_devices(t.devices))
    rounds = RoundConfig(
        num_clients=split.num_users, num_items=split.num_items, local_epochs=t.local_epochs,
        batch_size=t.batch_size, sparse=t.sparse, weighting=t.weighting,
        table_mean=t.table_mean, aggregator=t.aggregator, clip_norm=t.clip_norm,
        trim_fraction=t.trim_fraction, max_participants=count, sequential=sequential,
        dropout_keys=uses_dropout(cfg.model))
    algorithm = build_algorithm(
        model, build_local_step(method, model, t, split.num_items, extra_terms),
        optax.sgd(t.server_lr), rounds, eval_items=eval_items,
        dp=privacy.dp if privacy else None, mesh=mesh)
    planner = build_planner(train_csr(split), positives_csr(split),
                            history_len=model.history_len, num_negatives=t.num_negatives,
                            batch_size=t.batch_size, chunk_size=t.chunk_size, seed=t.seed,
                            devices=mesh_size(mesh), eval_items=eval_items)
    names = ("init", "sample", "train")
    keys = dict(zip(names, jax.random.split(jax.random.key(t.seed), len(names))))
    return Experiment(cfg, split, model, algorithm, planner, val_set, test_set,
                      make_scorer(model), count, keys, privacy)


def run_round(exp: Experiment, state: FedState, round_index: int):
    """One round: sample participants, inject faults, plan chunks, train, aggregate.

    Returns:
      ``(state, RoundStats)``; ``RoundStats.unreported`` counts the clients
      that never reported (fault injection).
    """
    participants = sample_clients(exp.keys["sample"], round_index,
                                  exp.split.num_users, exp.clients_per_round)
    faults = assign_faults(participants, round_index, exp.cfg.train.seed,
                           exp.cfg.train.faults())
    chunks = iter_round(exp.planner, faults.participants, round_index,
                        update_scale=faults.update_scale, update_nan=faults.update_nan)
    noise_key, masks = round_privacy(exp.privacy, round_index, participants, faults.dropped)
    state, stats = exp.algorithm.apply(state, chunks,
                                       jax.random.fold_in(exp.keys["train"], round_index),
                                       noise_key=noise_key, masks=masks)
    return state, stats._replace(unreported=len(faults.dropped))


def evaluate_state(exp: Experiment, state: FedState, eval_set: EvalSet) -> dict[str, float]:
    """Metrics of ``eval_set`` (the experiment's validation or test set)."""
    offset = 0
    if eval_set is exp.test_set:     # local evaluation: test rows follow the validation rows
        offset = exp.val_set.candidates.shape[1]
    elif eval_set is not exp.val_set and exp.planner.eval_items is not None:
        raise ValueError("a method evaluated with local item tables scores only the "
                         "experiment's own val_set and test_set")
    return evaluate(exp.scorer, state.shared, state.private_store, eval_set,
                    exp.planner.history, exp.planner.history_mask, view_offset=offset)


class _Progress:
    """One status line on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, r: int, loss: float, val: dict | None) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / r * (self.total - r)
        done = int(20 * r / self.total)
        line = (f"round {r}/{self.total} [{'#' * done}{'.' * (20 - done)}] "
                f"{elapsed:.0f}s ETA {eta:.0f}s loss {loss:.4f}")
        if val:
            line += f" val hr@10 {val.get('hr@10', math.nan):.4f} auc {val.get('auc', math.nan):.4f}"
        if self.tty:
            print("\r" + line, end="\n" if r == self.total else "", file=sys.stderr, flush=True)
        elif val or r == self.total:
            print(line, file=sys.stderr, flush=True)


def _devices() -> list[str]:
    return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, out_dir: Path, round_index: int, signal_name: str | None):
        super().__init__(f"stopped by {signal_name or 'a signal'} after round {round_index}; "
                         f"checkpoint saved. Continue with: feddmr train --resume {out_dir}")
        self.round_index = round_index


@dataclasses.dataclass
class LoopState:
    """Host-side loop bookkeeping (saved in checkpoint meta as JSON)."""

    best_round: int | None = None
    best_val: dict | None = None
    best_test: dict | None = None
    evals_since_best: int = 0
    round_seconds: list = dataclasses.field(default_factory=list)
    stopped_early: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _truncate_metrics(path: Path, last_round: int) -> None:
    """Keeps the lines of rounds <= last_round (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["round"] <= last_round]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def load_run_config(out_dir: str | Path) -> RunConfig:
    """The config a run directory was started with (for ``--resume``)."""
    path = Path(out_dir) / "config.json"
    if not path.exists():
        raise config_lib.ConfigError(f"cannot resume: {path} not found (is {out_dir} a run folder?)")
    return config_lib.from_dict(json.loads(path.read_text()))


def train(cfg: RunConfig, out_dir: str | Path | None = None, *,
          extra_terms: Mapping[str, LossTerm] | None = None,
          progress: bool = True, resume: bool = False,
          stop_after_round: int | None = None) -> dict[str, Any]:
    """Trains and evaluates; returns the summary (also written to ``out_dir``).

    Args:
      cfg: run configuration.
      out_dir: where ``config.json``, ``metrics.jsonl``, ``summary.json`` and
        ``checkpoints/`` go (None: nowhere, no checkpoints).
      extra_terms: additional loss terms ``{name: fn(params, global, batch)}``.
      progress: print a progress line on stderr.
      resume: continue from the newest valid checkpoint in ``out_dir``.
      stop_after_round: stop (as if interrupted) after this round (for tests).

    Raises:
      Interrupted: SIGINT/SIGTERM arrived; a checkpoint of the last finished
        round was saved first.
    """
    from feddmr_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer, install_stop_handler

    watch = CompileWatch()
    t0 = time.perf_counter()
    exp = build_experiment(cfg, extra_terms=extra_terms)
    t = cfg.train
    out = Path(out_dir) if out_dir is not None else None
    state = exp.algorithm.init(exp.keys["init"])
    loop = LoopState()
    first_round = 1
    ckpt = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ckpt = Checkpointer(out / CHECKPOINT_DIRNAME, keep=t.keep_checkpoints)
        if resume:
            step, state, meta = ckpt.restore(state)
            loop = LoopState(**meta["loop"])
            first_round = step + 1
            _truncate_metrics(out / "metrics.jsonl", step)
            log.info("resumed from round %d", step)
        else:
            (out / "metrics.jsonl").write_text("")
        (out / "config.json").write_text(json.dumps(config_lib.to_dict(cfg), indent=2) + "\n")

    def save(r: int) -> None:
        if ckpt is not None:
            ckpt.save(r, state, {"round": r, "loop": loop.to_json(), "seed": t.seed}, force=True)

    bar = _Progress(t.rounds, progress)
    with install_stop_handler() as stop:
        for r in range(first_round, t.rounds + 1):
            start = time.perf_counter()
            state, stats = run_round(exp, state, r)
            jax.block_until_ready(state.shared)
            seconds = time.perf_counter() - start
            loop.round_seconds.append(seconds)
            record = {"round": r, "train_loss": stats.train_loss, "accepted": stats.accepted,
                      "dropped_nonfinite": stats.dropped, "unreported": stats.unreported,
                      "seconds": seconds}
            if exp.privacy is not None and exp.privacy.epsilons is not None:
                record["epsilon"] = exp.privacy.epsilons[r - 1]   # None: noise 0
            val = None
            if r % t.eval_every == 0 or r == t.rounds:
                start = time.perf_counter()
                val = evaluate_state(exp, state, exp.val_set)
                test = evaluate_state(exp, state, exp.test_set)
                record.update(val=val, test=test, eval_seconds=time.perf_counter() - start)
                if loop.best_val is None or val[t.select_metric] > loop.best_val[t.select_metric]:
                    loop.best_round, loop.best_val, loop.best_test = r, val, test
                    loop.evals_since_best = 0
                else:
                    loop.evals_since_best += 1
            if out is not None:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.update(r, stats.train_loss, val)
            if t.patience is not None and loop.evals_since_best >= t.patience:
                loop.stopped_early = True
                log.info("early stop at round %d (best round %d)", r, loop.best_round)
            if stop.requested or (stop_after_round is not None and r == stop_after_round):
                save(r)
                raise Interrupted(out, r, stop.signal_name)
            if loop.stopped_early:
                break
            if t.checkpoint_every and r % t.checkpoint_every == 0:
                save(r)
    steady = loop.round_seconds[1:] or loop.round_seconds
    summary = {
        "config": config_lib.to_dict(cfg),
        "dataset": {"users": exp.split.num_users, "items": exp.split.num_items,
                    "train": len(exp.split.train), "val": len(exp.split.val),
                    "test": len(exp.split.test)},
        "best_round": loop.best_round,
        "val": loop.best_val,
        "test": loop.best_test,
        "rounds_run": len(loop.round_seconds),
        "stopped_early": loop.stopped_early,
        "round_seconds": statistics.median(steady),
        "first_round_seconds": loop.round_seconds[0],
        "compile_seconds": watch.seconds,
        "total_seconds": time.perf_counter() - t0,
        "devices": _devices(),
        "resumed": resume,
    }
    if exp.privacy is not None:
        summary["privacy"] = exp.privacy.summary()
        if exp.privacy.epsilons is not None:
            summary["epsilon"] = exp.privacy.epsilons[len(loop.round_seconds) - 1]
            summary["delta"] = exp.privacy.delta
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
