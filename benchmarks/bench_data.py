"""Times the data pipeline: ml-100k end to end, and synthetic generation at scale.

Usage::

    python benchmarks/bench_data.py [--quick] [--data-dir DIR] [--repeats 3]

ml-100k (from ``--data-dir``, ``$FEDDMR_DATA_DIR`` or ``../shared/data``):
load + loo split + 99+99 evaluation negatives + one round of training negatives
(4 per positive) + packing (history of 50, buckets of 64 clients, padded
positives); best of ``--repeats`` runs per stage (target: total < 2 s).
Synthetic: 10^6 users x ~20 interactions over 50,000 items (``--quick``:
10^5 users), one run (target < 60 s). Prints a table, then one JSON line of
figures as the last line, and writes it to ``runs/bench/bench_data.json`` (a
git-ignored scratch file; ``--save``: ``benchmarks/results/bench_data.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from feddmr_jax.data import (bucket_clients, generate_synthetic, load_dataset, pad_ragged,
                             positives_csr, recent_history, sample_eval_negatives,
                             sample_train_negatives, split_interactions, train_csr)

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_ml_100k(data_dir: Path, repeats: int) -> dict:
    """Best-of-``repeats`` seconds of each pipeline stage on ml-100k."""
    best: dict[str, float] = {}
    for _ in range(repeats):
        times = {}
        inter, times["load"] = _timed(lambda: load_dataset("ml-100k", data_dir, download=False))
        split, times["split"] = _timed(lambda: split_interactions(inter, "loo"))
        _, times["eval_negatives"] = _timed(lambda: sample_eval_negatives(split, 99, seed=0))

        def train_round():
            train, pos = train_csr(split), positives_csr(split)
            return train, sample_train_negatives(train, pos, np.random.default_rng([0, 0]), 4)

        (train, _), times["train_negatives"] = _timed(train_round)

        def pack():
            recent_history(train, 50)
            for chunk in bucket_clients(train.lengths, 64):
                pad_ragged(train.indptr, train.items, chunk)

        _, times["packing"] = _timed(pack)
        times["total"] = sum(times.values())
        best = {k: min(v, best.get(k, np.inf)) for k, v in times.items()}
    return {"ml100k_" + k + "_s": round(v, 4) for k, v in best.items()}


def bench_synthetic(num_users: int) -> dict:
    """Seconds, size and peak memory of one synthetic generation."""
    inter, secs = _timed(lambda: generate_synthetic(num_users=num_users, num_items=50_000,
                                                    mean_interactions=20, seed=0))
    return {"synthetic_users": num_users, "synthetic_items": inter.num_items,
            "synthetic_interactions": len(inter.table), "synthetic_s": round(secs, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10^5 synthetic users instead of 10^6")
    p.add_argument("--data-dir", default=os.environ.get("FEDDMR_DATA_DIR",
                                                        str(ROOT.parent / "shared" / "data")))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None,
                   help="JSON path (default: runs/bench/bench_data.json, a git-ignored scratch "
                        "file; with --save: benchmarks/results/bench_data.json)")
    p.add_argument("--save", action="store_true",
                   help="record the figures in benchmarks/results/ (committed files)")
    args = p.parse_args()
    args.out = args.out or str(ROOT / ("benchmarks/results" if args.save else "runs/bench")
                               / "bench_data.json")
    figures = {"machine": f"{platform.machine()} x{os.cpu_count()} cpus",
               "quick": args.quick}
    data_dir = Path(args.data_dir)
    if (data_dir / "ml-100k" / "u.data").is_file() or (data_dir / "u.data").is_file():
        figures.update(bench_ml_100k(data_dir, args.repeats))
    else:
        print(f"ml-100k not found under {data_dir}: skipped")
    figures.update(bench_synthetic(10**5 if args.quick else 10**6))
    targets = {"ml100k_total_s": 2.0, "synthetic_s": 60.0}
    print(f"{'figure':<28}{'value':>14}  target")
    for key, value in figures.items():
        tgt = f"< {targets[key]:g} s" if key in targets else ""
        print(f"{key:<28}{value!s:>14}  {tgt}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
