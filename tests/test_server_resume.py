"""A run with FedAdam and round schedules resumed mid-run equals the uninterrupted run,
bitwise: the server optimizer's moments and step count are in the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from feddmr_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer
from feddmr_jax.federated.server_optimizers import ServerAdaptiveState
from feddmr_jax.train import Interrupted, build_experiment, train

from engine_helpers import tiny_config

ROUNDS = 4
CFG = tiny_config(rounds=ROUNDS, checkpoint_every=ROUNDS, server_optimizer="adam",
                  server_lr=0.05, server_lr_schedule="warmup_cosine", schedule_warmup_rounds=1,
                  schedule_rounds=6, lr_schedule="exponential", schedule_decay_rate=0.8)


def _lines(out: Path) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]


def _final_state(out: Path):
    exp = build_experiment(CFG)
    with Checkpointer(out / CHECKPOINT_DIRNAME) as ckpt:
        step, state, _ = ckpt.restore(exp.algorithm.init(exp.keys["init"]))
    return step, state


def test_adam_resumed_mid_run_equals_uninterrupted(tmp_path):
    full, part = tmp_path / "full", tmp_path / "resumed"
    train(CFG, full, progress=False)
    with pytest.raises(Interrupted):
        train(CFG, part, progress=False, stop_after_round=2)
    train(CFG, part, progress=False, resume=True)
    assert _lines(part) == _lines(full)
    s_full, s_part = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    for key in ("best_round", "val", "test", "upload_bytes", "download_bytes",
                "rounds_to_target"):
        assert s_part[key] == s_full[key], key
    (step_a, a), (step_b, b) = _final_state(full), _final_state(part)
    assert step_a == step_b == ROUNDS
    opt = b.server_opt_state
    assert isinstance(opt, ServerAdaptiveState) and int(opt.count) == ROUNDS
    assert float(np.max(np.abs(np.asarray(opt.m.tables["items"])))) > 0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
