"""`feddmr train --distributed`: 2 local processes (127.0.0.1) against 1, and resume.

Every process is a separate `python -m feddmr_jax.cli` with 1 CPU device; the
two-process runs split each chunk's clients over both processes' devices, so
their agreement with the one-process run checks the whole path (launch, global
arrays, all-reduce, process-0 writes, multi-process checkpoints).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest

from feddmr_jax import cli

from float_compare import METRIC_ULPS, assert_trees_close
from run_helpers import subprocess_env

TINY = ["--model", "fedmf", "--dataset", "synthetic", "--synthetic-users", "30",
        "--synthetic-items", "40", "--dim", "8", "--eval-negatives", "10", "--lr", "0.05"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str]) -> subprocess.Popen:
    env = subprocess_env()                                    # 1 device per process
    return subprocess.Popen([sys.executable, "-m", "feddmr_jax.cli", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _two(args: list[str]) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one run."""
    coordinator = ["--distributed", "--coordinator", f"127.0.0.1:{_free_port()}",
                   "--num-processes", "2"]
    return [_launch([*args, *coordinator, "--process-id", str(i)]) for i in (0, 1)]


def _finish(procs: list[subprocess.Popen], rc: int = 0) -> list[tuple[str, str]]:
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == rc, err[-3000:]
    return outs


def _summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def _losses(run) -> list[float]:
    return [json.loads(line)["train_loss"]
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_result(a: dict, b: dict, *, exact: bool = False) -> None:
    """The same best round and metrics: bit for bit (``exact``: the same programs, e.g.
    a resume), else the same ranks from params summed in another order (METRIC_ULPS)."""
    assert a["best_round"] == b["best_round"]
    for split in ("val", "test"):
        assert a[split].keys() == b[split].keys()
        if exact:
            assert a[split] == b[split], split
        else:
            assert_trees_close(a[split], b[split], ulps=METRIC_ULPS, scale=1.0, what=split)


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across_them(tmp_path):
    two, one, part = tmp_path / "two", tmp_path / "one", tmp_path / "part"
    # All at once: 2 processes x 2 rounds, 1 process x 2 rounds, 2 processes x 1 round.
    full = _two([*TINY, "--rounds", "2", "--out", str(two)])
    single = _launch([*TINY, "--rounds", "2", "--quiet", "--out", str(one)])
    first = _two([*TINY, "--rounds", "1", "--out", str(part)])
    (out0, err0), (out1, err1) = _finish(full)
    _finish([single, *first])

    summary = _summary(two)
    assert summary["processes"] == 2 and len(summary["devices"]) == 2
    assert _summary(one)["processes"] == 1
    _assert_same_result(summary, _summary(one))
    # Losses: means of forward passes (~100 roundings each: 2**8 ulps) at params whose
    # all-reduce summed in another order.
    assert_trees_close(_losses(two), _losses(one), ulps=2**8, what="losses")
    # Process 0 alone reports: the summary on stdout, progress lines on stderr
    # (gloo prints a "[Gloo] Rank 1 is connected" line of its own).
    assert "best_round" in out0 and "round 2/2" in err0
    assert "best_round" not in out1 and "wrote" not in out1
    assert "round 1/2" not in err1 and "building" not in err1

    # The 1-round run, resumed by both processes to 2 rounds, equals the 2-round run;
    # resuming it with one process is refused (a copy: the resume writes into `part`).
    shutil.copytree(part, tmp_path / "copy")
    resumed = _two(["--resume", str(part), "--rounds", "2", "--quiet"])
    alone = _launch(["--resume", str(tmp_path / "copy"), "--rounds", "2", "--quiet"])
    _finish(resumed)
    (_, err), = _finish([alone], rc=2)
    assert "saved by 2" in err and len(err.strip().splitlines()) == 1
    assert _summary(part)["resumed"]
    # Resumed with the same 2 processes: the same programs on the restored state.
    _assert_same_result(_summary(part), summary, exact=True)
    assert _losses(part) == _losses(two)
    assert json.loads((part / "config.json").read_text()) == \
        json.loads((two / "config.json").read_text())      # no run options in the config


@pytest.mark.parametrize("argv, message", [
    (["--coordinator", "127.0.0.1:1234"], "add --distributed"),
    (["--distributed", "--coordinator", "127.0.0.1:1234", "--num-processes", "2"],
     "missing --process-id"),
    (["--distributed", "--process-id", "0"], "missing --coordinator and --num-processes"),
    (["--distributed", "--coordinator", "127.0.0.1", "--num-processes", "2",
      "--process-id", "0"], "must be HOST:PORT"),
    (["--distributed", "--coordinator", "127.0.0.1:1234", "--num-processes", "2",
      "--process-id", "2"], "--process-id must be in [0, 1]"),
    (["--distributed", "--coordinator", "127.0.0.1:1234", "--num-processes", "0",
      "--process-id", "0"], "--num-processes must be >= 1"),
])
def test_bad_launch_options_are_one_line_errors(argv, message, tmp_path, capsys):
    rc = cli.main(["train", *argv, "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
