"""Seconds per round, client updates per second and peak memory from 10^4 to 10^6 clients.

Usage::

    python benchmarks/bench_scale.py [--quick] [--sizes 10000,100000,1000000]
        [--model-args attention=false] [--train-args chunk_size=128] [--rounds 2]

Synthetic data (``DataConfig(dataset="synthetic", synthetic_users=N,
synthetic_items=50000, synthetic_interactions=20)``), every client trains in
every round (unless ``--train-args clients_per_round=K``). Each size runs in a
fresh subprocess, so that its peak memory is its own:

* ``peak_rss_mb`` -- the process's peak resident memory (``VmHWM``),
* ``build_rss_mb`` -- resident memory after building the experiment and the
  initial state (data, evaluation sets, planner, private store),
* ``warmup_peak_rss_mb`` -- the peak during the warm-up rounds (compilation
  included; ``VmHWM`` reset through ``/proc/self/clear_refs`` after the build,
  Linux only),
* ``round_peak_rss_mb`` -- the peak during the timed rounds alone (reset again
  after the warm-up): the steady-state working set,
* ``device_peak_mb`` -- the accelerator's peak bytes in use, where reported,
* ``data_mb`` -- bytes of the loaded data the run keeps (split frames,
  evaluation sets, the planner's CSRs and evaluation items), ``store_mb`` --
  the private store, and ``peak_rss_minus_data_mb``: peak RSS minus ``data_mb``.

Rounds run as ``train`` runs them: ``iter_round`` packs (and draws the
negatives of) each chunk only when the engine reaches it, so a round's host
planning overlaps its training (``plan_s``: the seconds the host spent packing
inside the round).

Per size: ``--warmup`` untimed rounds (compilation), then ``--rounds`` timed
rounds; the median round (host planning + training + aggregation) is reported.
Memory flatness: the ratio of peak memory between the largest and the smallest
size, next to the ratio of sizes, and the marginal MB per 1,000 clients.
``--quick``: 10^3 and 10^4 clients over 500 items (fewer shape classes, so
fewer compilations), attention off, 1 timed round: a CPU check of the script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402
from bench_common import median, rounded  # noqa: E402

DEFAULT_SIZES = "10000,100000,1000000"
QUICK_SIZES = "1000,10000"
QUICK_MODEL_ARGS = "attention=false"
QUICK_ITEMS = 500


def child(args: argparse.Namespace) -> dict:
    """One size, in this (fresh) process."""
    import jax

    from feddmr_jax import config as config_lib
    from feddmr_jax.config import DataConfig, RunConfig, TrainConfig
    from feddmr_jax.timing import CompileWatch
    from feddmr_jax.train import build_experiment

    size = args.child
    cfg = RunConfig(data=DataConfig(dataset="synthetic", synthetic_users=size,
                                    synthetic_items=args.items,
                                    synthetic_interactions=args.interactions),
                    train=TrainConfig(checkpoint_every=0))
    cfg = bench_common.with_overrides(cfg, model=bench_common.parse_assignments(args.model_args),
                                 train=bench_common.parse_assignments(args.train_args))
    rss_start = bench_common.proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    jax.block_until_ready(state)
    build_s = time.perf_counter() - t0
    build_rss = bench_common.proc_status_mb("VmRSS")
    build_peak = bench_common.proc_status_mb("VmHWM")
    reset = bench_common.reset_peak_rss()

    watch = CompileWatch()
    timings, first_round_s, compile_s, warmup_peak, timed_start_rss = [], 0.0, 0.0, None, None
    for r in range(1, args.warmup + args.rounds + 1):
        if r == args.warmup + 1:
            compile_s = watch.seconds
            watch.reset()
            timed_start_rss = bench_common.proc_status_mb("VmRSS")
            if reset:
                warmup_peak = bench_common.proc_status_mb("VmHWM")
                bench_common.reset_peak_rss()
        state, timing = bench_common.timed_round(exp, state, r)   # lazy, as train runs it
        if r <= args.warmup:
            first_round_s += timing.total_s
        else:
            timings.append(timing)
    round_peak = bench_common.proc_status_mb("VmHWM") if reset else None
    peak = max(x for x in (build_peak, warmup_peak, round_peak) if x is not None)
    data_mb = loaded_data_mb(exp)
    seconds = median([t.total_s for t in timings])
    split = exp.split
    return {
        "clients": split.num_users, "items": split.num_items,
        "train_interactions": len(split.train),
        "clients_per_round": exp.clients_per_round,
        "chunk_shapes": len(exp.planner.chunk_shapes()),
        "seconds_per_round": seconds,
        "plan_s": median([t.plan_s for t in timings]),   # packing, inside the round
        "train_s": median([t.train_s for t in timings]),
        "client_updates_per_s": exp.clients_per_round / seconds,
        "examples_per_s": (1 + cfg.train.num_negatives) * cfg.train.local_epochs
        * len(split.train) / seconds if exp.clients_per_round == split.num_users else None,
        "first_round_s": first_round_s, "compile_s": compile_s,
        "compiles_in_timed_rounds": watch.compiles,
        "build_s": build_s,
        "start_rss_mb": rss_start, "build_rss_mb": build_rss, "build_peak_rss_mb": build_peak,
        "warmup_peak_rss_mb": warmup_peak, "timed_start_rss_mb": timed_start_rss,
        "round_peak_rss_mb": round_peak,
        "peak_rss_mb": peak,
        "data_mb": data_mb, "store_mb": _mb(state.private_store),
        "peak_rss_minus_data_mb": peak - data_mb,
        "slot_fill": exp.planner.slot_fill()._asdict(),
        **bench_common.device_memory_mb(),
        "train_loss": timings[-1].stats.train_loss,
        "config": config_lib.to_dict(cfg),
        "device_info": bench_common.device_info(),
    }


def _mb(tree) -> float:
    """MB the arrays of ``tree`` occupy: a numpy view counts its base buffer, once (a
    read-only broadcast of one row, e.g. an evaluation set's labels, is one row)."""
    import jax
    import numpy as np

    seen, total = set(), 0
    for x in jax.tree.leaves(tree):
        while isinstance(x, np.ndarray) and isinstance(x.base, np.ndarray):
            x = x.base
        if id(x) not in seen:
            seen.add(id(x))
            total += int(getattr(x, "nbytes", 0))
    return total / 2**20


def loaded_data_mb(exp) -> float:
    """MB of the loaded data a run keeps: split frames, evaluation sets, planner CSRs."""
    split, planner = exp.split, exp.planner
    frames = sum(int(getattr(split, p).memory_usage(deep=True).sum())
                 for p in ("train", "val", "test")) / 2**20
    evals = _mb([(e.candidates, e.labels, e.mask) for e in (exp.val_set, exp.test_set)])
    csrs = _mb((planner.train.indptr, planner.train.items, planner.exclude.indptr,
                planner.exclude.items, planner.eval_items))
    return frames + evals + csrs


def run_size(size: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(size),
           "--items", str(args.items), "--interactions", str(args.interactions),
           "--rounds", str(args.rounds), "--warmup", str(args.warmup),
           "--model-args", args.model_args, "--train-args", args.train_args]
    print(f"[{size} clients] running in a subprocess ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.size_timeout)
    except subprocess.TimeoutExpired:
        return {"clients": size, "error": f"timed out after {args.size_timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"clients": size, "error": f"exit status {proc.returncode}"}
    result = json.loads(lines[-1])
    result["wall_s"] = time.perf_counter() - t
    return result


def flatness(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    if len(ok) < 2:
        return {}
    lo, hi = ok[0], ok[-1]
    out = {"size_ratio": hi["clients"] / lo["clients"],
           "peak_rss_ratio": hi["peak_rss_mb"] / lo["peak_rss_mb"],
           "peak_minus_data_ratio": hi["peak_rss_minus_data_mb"] / lo["peak_rss_minus_data_mb"],
           "peak_rss_mb_per_1k_clients": 1000 * (hi["peak_rss_mb"] - lo["peak_rss_mb"])
           / (hi["clients"] - lo["clients"])}
    if lo.get("round_peak_rss_mb") and hi.get("round_peak_rss_mb"):
        out["round_extra_mb"] = [rounded(r["round_peak_rss_mb"] - r["timed_start_rss_mb"])
                                 for r in (lo, hi)]
    if lo.get("device_peak_mb") and hi.get("device_peak_mb"):
        out["device_peak_ratio"] = hi["device_peak_mb"] / lo["device_peak_mb"]
    return {k: rounded(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    p = bench_common.arg_parser(__doc__)
    p.add_argument("--quick", action="store_true",
                   help=f"sizes {QUICK_SIZES}, {QUICK_ITEMS} items, {QUICK_MODEL_ARGS}, "
                        "1 timed round")
    p.add_argument("--sizes", default=None, help=f"comma-separated (default {DEFAULT_SIZES})")
    p.add_argument("--items", type=int, default=None,
                   help=f"synthetic catalogue size (default 50000; quick {QUICK_ITEMS})")
    p.add_argument("--interactions", type=float, default=20.0,
                   help="mean interactions per user")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 2; quick 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (compilation)")
    p.add_argument("--model-args", default=None,
                   help="model config overrides, e.g. 'attention=false,dim=16' "
                        f"(quick default: {QUICK_MODEL_ARGS})")
    p.add_argument("--train-args", default="",
                   help="train config overrides, e.g. 'chunk_size=128,clients_per_round=10000'")
    p.add_argument("--size-timeout", type=float, default=None,
                   help="seconds allowed per size (default: none)")
    bench_common.add_output_args(p, "bench_scale[_quick]")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out or bench_common.default_out("bench_scale" + ("_quick" if args.quick else ""),
                                           args.save)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.items = args.items or (QUICK_ITEMS if args.quick else 50_000)
    if args.model_args is None:
        args.model_args = QUICK_MODEL_ARGS if args.quick else ""
    if args.warmup < 1 or args.rounds < 1:
        p.error("--warmup and --rounds must be >= 1")
    if args.child is not None:
        print(json.dumps(child(args)), flush=True)
        return
    sizes = [int(float(s)) for s in (args.sizes or (QUICK_SIZES if args.quick
                                                   else DEFAULT_SIZES)).split(",") if s.strip()]

    results = []
    for n in sorted(sizes):  # the file is rewritten after each size (partial results survive)
        results.append(run_size(n, args))
        _write(figures_of(results, args), args.out)
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["clients"], r["error"]] + [None] * 10)
            continue
        rows.append([r["clients"], r["seconds_per_round"], r["data_mb"], r["train_s"],
                     r["client_updates_per_s"], r["compile_s"], r["build_s"],
                     r["build_rss_mb"], r["round_peak_rss_mb"], r["peak_rss_mb"],
                     r["peak_rss_minus_data_mb"], r.get("device_peak_mb")])
    bench_common.print_table(["clients", "s/round", "data MB", "train s", "updates/s", "compile s",
                         "build s", "build RSS MB", "round peak MB", "peak RSS MB",
                         "peak - data MB", "device peak MB"], rows)
    flat = flatness(results)
    if flat:
        print(f"memory: peak RSS x{flat['peak_rss_ratio']} for x{flat['size_ratio']:g} clients "
              f"({flat['peak_rss_mb_per_1k_clients']} MB per 1,000 clients)"
              + (f"; timed-round peak above the RSS at their start: {flat['round_extra_mb']} MB"
                 if "round_extra_mb" in flat else ""))
    for r in results:
        if r.get("compiles_in_timed_rounds"):
            print(f"[{r['clients']} clients] WARNING: compilations during timed rounds")
    bench_common.emit(figures_of(results, args), args.out)


def figures_of(results: list[dict], args: argparse.Namespace) -> dict:
    ok = [r for r in results if "error" not in r]
    # Device facts come from a child: the parent never starts a JAX backend (on a
    # GPU it would reserve memory the children need).
    device = ok[0]["device_info"] if ok else {}
    return {
        "benchmark": "bench_scale",
        "quick": args.quick,
        **device,
        "items_requested": args.items, "interactions": args.interactions,
        "model_args": args.model_args, "train_args": args.train_args,
        "timed_rounds": args.rounds, "warmup_rounds": args.warmup,
        "sizes": [_compact(r) for r in results],
        "memory_flatness": flatness(results),
        "config": ok[0]["config"] if ok else None,
    }


def _write(figures: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(figures, indent=2) + "\n")


def _compact(r: dict) -> dict:
    return bench_common.rounded_tree({k: v for k, v in r.items()
                                 if k not in ("config", "device_info")})


if __name__ == "__main__":
    main()
