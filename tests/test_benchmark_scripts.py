"""The benchmark scripts' measuring functions still run against the engine.

They are not timed here (figures come from the scripts, benchmarks/RESULTS.md); these
checks catch an engine change that breaks a script, as a nested ``jit`` with compiler
options once broke bench_flops' tracing for two sessions unnoticed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_common  # noqa: E402
import bench_flops  # noqa: E402

from feddmr_jax import config as config_lib  # noqa: E402
from feddmr_jax.train import build_experiment  # noqa: E402

RAW = {"data": {"dataset": "synthetic", "synthetic_users": 12, "synthetic_items": 30,
                "synthetic_interactions": 6.0, "eval_negatives": 5},
       "train": {"batch_size": 8, "chunk_size": 4, "checkpoint_every": 0},
       "model": {"dim": 8, "heads": 2}}


@pytest.fixture(scope="module")
def exp():
    return build_experiment(config_lib.build_config(RAW))


def test_bench_flops_counts_every_minibatch_step(exp):
    out = bench_flops.round_flops(exp, np.arange(exp.split.num_users), 1, ("lowered",))
    assert out["flops_per_round"] > 0
    # Scan bodies counted once by XLA are multiplied by their trip counts.
    assert out["flops_per_round"] > 1.5 * out["flops_loops_once_per_round"]
    assert 0 < out["example_fill"] <= 1


@pytest.mark.parametrize("lazy", [True, False])
def test_timed_round_trains_the_whole_round(exp, lazy):
    state = exp.algorithm.init(exp.keys["init"])
    state, timing = bench_common.timed_round(exp, state, 1, lazy=lazy)
    assert timing.stats.accepted == exp.clients_per_round
    assert timing.plan_s > 0 and timing.train_s > 0
    assert np.isfinite(timing.stats.train_loss)
