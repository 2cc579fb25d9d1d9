"""Checkpoint and resume: a resumed run equals the uninterrupted one, bitwise."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from feddmr_jax import cli
from feddmr_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer
from feddmr_jax.errors import ConfigError
from feddmr_jax.train import Interrupted, build_experiment, load_run_config, train

from engine_helpers import tiny_config

ROUNDS = 6


def _metrics(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if "seconds" not in k} for line in lines]


def _final_state(cfg, out: Path):
    exp = build_experiment(cfg)
    template = exp.algorithm.init(exp.keys["init"])
    with Checkpointer(out / CHECKPOINT_DIRNAME) as ckpt:
        step, state, _ = ckpt.restore(template)
    return step, state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cfg = tiny_config(rounds=ROUNDS, checkpoint_every=ROUNDS)
    out = tmp_path_factory.mktemp("full")
    summary = train(cfg, out, progress=False)
    return cfg, out, summary


def _assert_same_run(full_out: Path, cfg, out: Path):
    assert _metrics(out) == _metrics(full_out)
    s_full = json.loads((full_out / "summary.json").read_text())
    s_res = json.loads((out / "summary.json").read_text())
    for key in ("best_round", "val", "test"):
        assert s_res[key] == s_full[key]
    step_a, state_a = _final_state(cfg, full_out)
    step_b, state_b = _final_state(cfg, out)
    assert step_a == step_b == ROUNDS
    import jax
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_stopped_and_resumed_equals_uninterrupted(uninterrupted, tmp_path):
    cfg, full_out, _ = uninterrupted
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(cfg, out, progress=False, stop_after_round=3)
    train(cfg, out, progress=False, resume=True)
    _assert_same_run(full_out, cfg, out)


def test_sigkill_during_round_4_then_resume(tmp_path):
    """experiments/kill_and_resume.py: SIGKILL in round 4 of 6, resume, compare bitwise."""
    root = Path(__file__).parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "experiments" / "kill_and_resume.py"), "--rounds", "6",
         "--kill-in-round", "4", "--out", str(tmp_path / "kr")],
        cwd=root, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "metrics identical: True; parameters identical: True" in result.stdout
    done = int(result.stdout.split("killed with SIGKILL after ")[1].split()[0])
    assert 3 <= done < 6


def test_cli_resume_uses_saved_config_and_refuses_flags(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--resume", str(out)])
    assert rc == 2 and "holds no run" in capsys.readouterr().err
    rc = cli.main(["train", "--resume", str(out), "--lr", "0.1", "--rounds", "3"])
    assert rc == 2 and "drop --lr" in capsys.readouterr().err


def test_finished_run_extended_equals_uninterrupted(uninterrupted, tmp_path, capsys):
    """A 3-round run (its only checkpoint: the final one) extended to 6 with the CLI."""
    cfg, full_out, _ = uninterrupted
    out = tmp_path / "run"
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, rounds=3))
    train(short, out, progress=True)
    err = capsys.readouterr().err
    assert err.index("building experiment") < err.index("compiling the round program")
    assert "first round done in" in err
    with Checkpointer(out / CHECKPOINT_DIRNAME) as ckpt:
        assert ckpt.all_steps() == [3]                  # checkpoint_every is 6
    assert cli.main(["train", "--resume", str(out), "--rounds", str(ROUNDS), "--quiet"]) == 0
    _assert_same_run(full_out, cfg, out)
    assert load_run_config(out) == cfg
    assert json.loads((out / "summary.json").read_text())["rounds_run"] == ROUNDS


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and mtime (ns)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("patience", [None, 1])
def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys, caplog, patience):
    """A finished run (all rounds, or stopped early) resumed: one line, exit 0, and
    every file's bytes and mtime unchanged (issue 26: summary.json was rewritten)."""
    # With patience 1 this run's validation AUC drops in round 2: it stops early there.
    cfg = tiny_config(rounds=3, checkpoint_every=3, patience=patience, select_metric="auc")
    out = tmp_path / "run"
    first = train(cfg, out, progress=False)
    assert first["stopped_early"] is (patience is not None)
    assert first["rounds_run"] == (3 if patience is None else 2)
    before = _snapshot(out)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured
    assert f"the run in {out} is finished" in captured.err and "nothing to train" in captured.err
    assert cli.main(["train", "--resume", str(out), "--rounds", "3", "--quiet"]) == 0
    assert _snapshot(out) == before
    with caplog.at_level("WARNING", logger="feddmr_jax"):
        again = train(load_run_config(out), out, progress=False, resume=True)
    assert again == json.loads(before["summary.json"][0])
    assert "is finished" in caplog.text
    assert _snapshot(out) == before


def test_keep_checkpoints_zero_saves_none_and_refuses_to_resume(uninterrupted, tmp_path):
    """``train.keep_checkpoints = 0``: the same run, no checkpoint written (a store too large
    to save beside itself), and a resume or a stop says the run cannot continue."""
    cfg, full_out, _ = uninterrupted
    none = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, keep_checkpoints=0))
    out = tmp_path / "run"
    train(none, out, progress=False)
    assert _metrics(out) == _metrics(full_out)
    assert not (out / CHECKPOINT_DIRNAME).exists()
    with pytest.raises(Interrupted, match="no checkpoint .* cannot be resumed"):
        train(none, tmp_path / "stopped", progress=False, stop_after_round=2)
    assert not (tmp_path / "stopped" / CHECKPOINT_DIRNAME).exists()
    with pytest.raises(ConfigError, match="keep_checkpoints = 0 saves no checkpoint"):
        train(none, tmp_path / "stopped", progress=False, resume=True)
