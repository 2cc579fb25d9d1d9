"""Kill a training run with SIGKILL mid-round, resume it, compare with an uninterrupted run.

    python experiments/kill_and_resume.py [--rounds 6] [--kill-in-round 4] [--out DIR]

Runs the same seeded job twice on the embedded synthetic data: once straight
through, once in a child process that is killed with SIGKILL while it trains
round ``--kill-in-round`` and is then resumed with ``feddmr train --resume``. Prints
whether every saved parameter and every per-round metric is identical (bitwise on
CPU) and exits 1 if not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARGS = ["--dataset", "synthetic", "--dim", "8", "--heads", "2", "--history-len", "6",
        "--batch-size", "16", "--chunk-size", "8", "--checkpoint-every", "1", "--quiet"]


def _feddmr(*args: str) -> list[str]:
    return [sys.executable, "-m", "feddmr_jax.cli", "train", *args]


def metrics(out: Path) -> list[dict]:
    """Per-round metrics without wall-clock fields."""
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if "seconds" not in k} for line in lines]


def final_state(out: Path):
    from feddmr_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer
    from feddmr_jax.train import build_experiment, load_run_config

    exp = build_experiment(load_run_config(out))
    with Checkpointer(out / CHECKPOINT_DIRNAME) as ckpt:
        return ckpt.restore(exp.algorithm.init(exp.keys["init"]))[:2]


def kill_during_round(out: Path, rounds: int, kill_in_round: int, timeout: float = 900) -> int:
    """Starts a run, SIGKILLs it once round ``kill_in_round`` is under way; returns rounds done."""
    proc = subprocess.Popen(_feddmr(*ARGS, "--rounds", str(rounds), "--out", str(out)))
    log = out / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= kill_in_round - 1:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        raise RuntimeError("the run finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(log.read_text().splitlines())


def compare(full: Path, resumed: Path) -> bool:
    same_metrics = metrics(full) == metrics(resumed)
    (step_a, a), (step_b, b) = final_state(full), final_state(resumed)
    import jax

    same_params = step_a == step_b and all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    print(f"metrics identical: {same_metrics}; parameters identical: {same_params}")
    return same_metrics and same_params


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--kill-in-round", type=int, default=4)
    parser.add_argument("--out", default="runs/kill_and_resume")
    args = parser.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    full, resumed = root / "uninterrupted", root / "resumed"
    subprocess.run(_feddmr(*ARGS, "--rounds", str(args.rounds), "--out", str(full)), check=True)
    done = kill_during_round(resumed, args.rounds, args.kill_in_round)
    print(f"killed with SIGKILL after {done} finished rounds")
    subprocess.run(_feddmr("--resume", str(resumed), "--quiet"), check=True)
    return 0 if compare(full, resumed) else 1


if __name__ == "__main__":
    sys.exit(main())
