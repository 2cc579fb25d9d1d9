"""Small shared setups for engine tests (tiny synthetic data, tiny FedDMR)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from feddmr_jax.config import DataConfig, RunConfig, TrainConfig, with_model
from feddmr_jax.models.feddmr import FedDMRConfig
from feddmr_jax.train import build_experiment, run_round

from float_compare import adam_scale

TINY_MODEL = FedDMRConfig(dim=8, heads=2, layers=2, history_len=6, norm="post")
TINY_DATA = DataConfig(dataset="synthetic", synthetic_users=24, synthetic_items=40,
                       synthetic_interactions=8.0, eval_negatives=10)
TINY_TRAIN = TrainConfig(rounds=2, batch_size=16, chunk_size=4, lr=0.05, mu=0.01)
# Plain FedAvg with the participant row mean (the mean DP and secure aggregation can take).
PLAIN = dict(table_mean="participants", mu=0.0)


def tiny_config(**train_overrides) -> RunConfig:
    return RunConfig(data=TINY_DATA, model=TINY_MODEL,
                     train=dataclasses.replace(TINY_TRAIN, **train_overrides))


def ncf_config(**train_overrides) -> RunConfig:
    """FedNCF (item tables *and* shared dense MLP leaves, quick to compile), dim 8, on TINY_DATA."""
    cfg = RunConfig(data=TINY_DATA, train=dataclasses.replace(TINY_TRAIN, **train_overrides))
    return with_model(cfg, "fedncf", dim=8)


def run_rounds(cfg: RunConfig, rounds: int):
    """Builds ``cfg``'s experiment and runs ``rounds`` rounds.

    Returns:
      ``(exp, first, state, stats)``: the experiment, a copy of the initial state, the
      state after the last round and that round's stats.
    """
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    first = copy_tree(state)
    for r in range(1, rounds + 1):
        state, stats = run_round(exp, state, r)
    return exp, first, state, stats


def copy_tree(tree):
    """Deep copy of a pytree of arrays (the engine donates its state)."""
    return jax.tree.map(lambda x: np.array(x), tree)


def max_abs_diff(a, b) -> float:
    diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(
        np.asarray(x, np.float64) - np.asarray(y, np.float64)))) if np.size(x) else 0.0, a, b))
    return max(diffs) if diffs else 0.0


def max_local_steps(exp, rounds: int = 1) -> int:
    """The most optimizer steps one client of ``exp`` takes in ``rounds`` rounds:
    ``local_epochs * ceil(examples / batch_size)`` of its largest client (examples =
    positives x (1 + negatives), as the planner counts them), times ``rounds``."""
    t = exp.cfg.train
    examples = int(exp.planner.train.lengths.max()) * (1 + exp.planner.num_negatives)
    return rounds * t.local_epochs * -(-examples // t.batch_size)


def adam_reach(exp, rounds: int = 1) -> float:
    """How far the client's Adam can move an element in ``rounds`` rounds of ``exp``:
    its largest lr (network ``lr`` or ``embedding_lr``) per step, times
    :func:`max_local_steps` (tests/float_compare.py: the scale of Adam-trained values)."""
    t = exp.cfg.train
    lr = max(t.lr, t.embedding_lr if t.embedding_lr is not None else t.lr)
    return adam_scale(lr, max_local_steps(exp, rounds))
