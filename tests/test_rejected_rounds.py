"""A round in which the server accepts no upload is reported as such, and a run of
them stops with an error (never a frozen model reported with loss 0 and exit 0).

One participant per round that always uploads NaN (``fault_nan`` rounds
``0.6 * 1`` up to one client): every round is rejected.
"""

from __future__ import annotations

import json
import math

import pytest

from feddmr_jax import cli
from feddmr_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer
from feddmr_jax.errors import DivergedError
from feddmr_jax.train import build_experiment, run_round, train

from engine_helpers import tiny_config

ALL_REJECTED = dict(clients_per_round=1, fault_nan=0.6, rounds=5, checkpoint_every=0)


def test_a_round_with_no_accepted_upload_has_no_loss():
    exp = build_experiment(tiny_config(**ALL_REJECTED))
    state, stats = run_round(exp, exp.algorithm.init(exp.keys["init"]), 1)
    assert (stats.accepted, stats.dropped) == (0, 1)
    assert math.isnan(stats.train_loss)       # was 0.0: a perfect loss for a frozen model


def test_consecutive_rejected_rounds_stop_the_run_with_a_checkpoint(tmp_path, caplog):
    out = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"3 rounds in a row \(rounds 1-3; round 3: 1 "
                                            r"non-finite"):
        train(tiny_config(**ALL_REJECTED, max_rejected_rounds=3), out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert all(r["train_loss"] is None and r["accepted"] == 0 and "val" not in r for r in rows)
    assert "round 1: no upload accepted (1 non-finite, 0 never reported)" in caplog.text
    with Checkpointer(out / CHECKPOINT_DIRNAME) as ckpt:
        assert ckpt.latest_step() == 3


def test_max_rejected_rounds_zero_never_stops_and_never_selects_a_rejected_round(tmp_path):
    summary = train(tiny_config(**ALL_REJECTED, max_rejected_rounds=0), tmp_path / "run",
                    progress=False)
    assert summary["rounds_run"] == 5
    assert summary["best_round"] is None       # no round moved the model: none is "best"


def test_cli_exits_non_zero_with_one_line(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "synthetic", "--synthetic-users", "12",
                     "--synthetic-items", "40", "--eval-negatives", "5", "--model", "fedmf",
                     "--rounds", "4", "--clients-per-round", "1", "--fault-nan", "0.6",
                     "--max-rejected-rounds", "2", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("feddmr: error: no client upload was accepted in 2 rounds")
