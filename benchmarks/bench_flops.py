"""FLOPs per round from XLA's cost analysis, achieved FLOP/s, and utilization of a measured peak.

Usage::

    python benchmarks/bench_flops.py [--quick] [--models feddmr,feddmr_no_attention]
        [--data-dir DIR] [--one-class K] [--rounds 2] [--matmul-n 2048] [--out PATH]

For each model config (the names of ``bench_round.py``), on ml-100k by default
with every client in the round:

1. **FLOPs per round.** The experiment's own chunk step
   (``exp.algorithm.chunk_step``, as a round runs it), lowered and compiled for each
   distinct chunk shape of the round, and ``cost_analysis()["flops"]`` is summed
   over the round's chunks. XLA's HLO cost analysis counts the body of a while
   loop **once**; the client update runs ``lax.scan`` over epochs and minibatch
   steps, so every scan body found in the step's jaxpr is compiled on its own
   and added ``length - 1`` more times (recursively for nested scans). A probe
   checks first whether this XLA already multiplies by trip counts (then no
   correction). The same total from the unoptimized HLO
   (``Lowered.cost_analysis()``, no compile) is reported as a cross-check
   (``--analysis lowered`` uses it alone: much cheaper). FLOPs include the
   padding the engine computes (padding clients and examples);
   ``example_fill`` is the share of example slots that are real.
2. **Achieved FLOP/s** = FLOPs per round / median training seconds of a round
   (``algorithm.apply``, host planning excluded), after ``--warmup`` rounds.
3. **Peak**: a jitted ``jnp.dot`` of two ``--matmul-n`` square f32 matrices,
   repeated, on the same device in the same run, at default precision (what
   the model's matmuls use; TF32 on recent NVIDIA GPUs) and at
   ``precision=HIGHEST`` (true f32). ``utilization = achieved / peak``.

The chunk step compiled for the cost analysis is the same program the timed
rounds compiled; a persistent compilation cache in a temporary folder (on by
default, ``--no-compile-cache``) makes that second compile a cache hit.

``--quick``: FedDMR only, 64 fixed clients of ml-100k's most populous shape class
(one chunk shape), 1 timed round, a shorter peak measurement (a CPU check).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, jaxpr_as_fun, jaxprs_in_params

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402
from bench_common import median, rounded  # noqa: E402
from bench_round import (DEFAULT_MODELS, MODEL_CONFIGS, base_config,  # noqa: E402
                         one_class_participants)

from feddmr_jax import config as config_lib  # noqa: E402
from feddmr_jax.federated.aggregation import init_accumulator  # noqa: E402
from feddmr_jax.federated.rounds import plan_round  # noqa: E402
from feddmr_jax.timing import enable_compilation_cache  # noqa: E402
from feddmr_jax.train import Experiment, build_experiment  # noqa: E402


# ---------------------------------------------------------------- XLA FLOPs

def _flops(cost) -> float:
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        return float(sum(c.get("flops", 0.0) for c in cost if c))
    return float((cost or {}).get("flops", 0.0))


def _xla_flops(lowered, compiled: bool) -> float:
    return _flops(lowered.compile().cost_analysis() if compiled else lowered.cost_analysis())


def _lower_jaxpr(closed: ClosedJaxpr):
    args = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type)
            for a in closed.in_avals]
    return jax.jit(jaxpr_as_fun(closed)).lower(*args)


def counts_trip_counts(compiled: bool) -> bool:
    """Whether this XLA's cost analysis multiplies a while body by its trip count."""
    w = jnp.ones((32, 32), jnp.float32)

    def f(x, n):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=n)[0]

    one = _xla_flops(jax.jit(f, static_argnums=1).lower(w, 1), compiled)
    four = _xla_flops(jax.jit(f, static_argnums=1).lower(w, 4), compiled)
    return four > 2 * one


def _scans(jaxpr: Jaxpr, loops: list[str]):
    """Scan equations of ``jaxpr`` not nested in another scan (any call depth)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            yield eqn
            continue
        if eqn.primitive.name == "while":
            loops.append("while")  # trip count unknown: counted once, as XLA does
        for sub in jaxprs_in_params(eqn.params):
            yield from _scans(sub, loops)


def loop_corrected_flops(closed: ClosedJaxpr, top: float, compiled: bool,
                         loops: list[str]) -> float:
    """``top`` (XLA's count, each scan body once) plus ``length - 1`` more of every body."""
    total = top
    for eqn in _scans(closed.jaxpr, loops):
        body = eqn.params["jaxpr"]
        once = _xla_flops(_lower_jaxpr(body), compiled)
        total += eqn.params["length"] * loop_corrected_flops(body, once, compiled, loops) - once
    return total


def round_flops(exp: Experiment, participants: np.ndarray, round_index: int,
                analyses: tuple[str, ...] = ("compiled", "lowered")) -> dict:
    """XLA FLOPs of one round's chunk steps (summed over its chunks).

    Args:
      exp: the experiment.
      participants: the round's clients.
      round_index: seeds the round's negatives (shapes do not depend on it).
      analyses: ``compiled`` (optimized HLO, one backend compile per chunk shape
        and scan body) and/or ``lowered`` (unoptimized HLO, no compile); the
        first one given is the headline ``flops``.
    """
    step = exp.algorithm.chunk_step
    state = exp.algorithm.init(exp.keys["init"])
    key = jax.random.fold_in(exp.keys["train"], round_index)
    chunks = plan_round(exp.planner, participants, round_index)
    multiplies = {a: counts_trip_counts(a == "compiled") for a in analyses}
    by_shape: dict[tuple, dict] = {}
    loops: list[str] = []
    for chunk in chunks:
        shape = chunk.items.shape
        if shape not in by_shape:
            acc = init_accumulator(state.shared)
            args = (state.shared, state.private_store, acc, chunk, key)
            lowered = step.lower(*args)
            closed = step.trace(*args).jaxpr   # top-level: the step carries compiler options
            entry = {"chunks": 0}
            for a in analyses:
                compiled = a == "compiled"
                top = _xla_flops(lowered, compiled)
                entry[f"{a}_loops_once"] = top
                entry[a] = (top if multiplies[a]
                            else loop_corrected_flops(closed, top, compiled, loops))
            by_shape[shape] = entry
        by_shape[shape]["chunks"] += 1
    slots = sum(c.mask.size for c in chunks)
    real = sum(int(c.mask.sum()) for c in chunks)

    def total(name):
        return sum(v[name] * v["chunks"] for v in by_shape.values())

    head = analyses[0]
    return {"flops_per_round": total(head), "analysis": head,
            "flops_lowered_per_round": total("lowered") if "lowered" in analyses else None,
            "flops_loops_once_per_round": total(f"{head}_loops_once"),
            "chunk_shapes": {f"{c}x{n}": v for (c, n), v in by_shape.items()},
            "example_fill": real / slots, "real_examples": real,
            "xla_counts_trip_counts": multiplies[head],
            "while_loops_counted_once": len(loops) // max(len(by_shape) * len(analyses), 1)}


# ---------------------------------------------------------------- peak

def matmul_peak(n: int, seconds: float, precision=None) -> float:
    """Best FLOP/s of a jitted ``n x n`` f32 ``jnp.dot`` over ~``seconds`` of repeats."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    f = jax.jit(lambda x, y: jnp.dot(x, y, precision=precision))
    f(a, b).block_until_ready()
    t = time.perf_counter()
    f(a, b).block_until_ready()
    per_call = max(time.perf_counter() - t, 1e-6)
    reps = max(1, int(seconds / 4 / per_call))
    best = 0.0
    for _ in range(4):
        t = time.perf_counter()
        out = [f(a, b) for _ in range(reps)]
        jax.block_until_ready(out)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


# ---------------------------------------------------------------- main

def bench_model(cfg, args: argparse.Namespace) -> dict:
    exp = build_experiment(cfg)
    fixed = one_class_participants(exp, args.one_class)[0] if args.one_class else None
    state = exp.algorithm.init(exp.keys["init"])
    train_s = []
    for r in range(1, args.warmup + args.rounds + 1):
        # planned first: train_s is the compiled programs' time alone (FLOP rates)
        state, timing = bench_common.timed_round(exp, state, r, participants=fixed, lazy=False)
        if r > args.warmup:
            train_s.append(timing.train_s)
    participants = fixed if fixed is not None else bench_common.participants_of(exp, 1)
    t = time.perf_counter()
    flops = round_flops(exp, participants, 1, tuple(args.analysis.split(",")))
    flops["cost_analysis_s"] = time.perf_counter() - t
    seconds = median(train_s)
    return {"clients_per_round": len(participants), "users": exp.split.num_users,
            "train_s": seconds, "achieved_flops_per_s": flops["flops_per_round"] / seconds,
            **flops}


def main() -> None:
    p = bench_common.arg_parser(__doc__)
    p.add_argument("--quick", action="store_true",
                   help="feddmr only, --one-class 64, 1 timed round, short peak")
    p.add_argument("--models", default=None,
                   help=f"comma-separated, from {', '.join(MODEL_CONFIGS)} "
                        f"(default {DEFAULT_MODELS}; quick feddmr)")
    bench_common.add_round_source_args(p)
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 2; quick 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--model-args", default="", help="model config overrides (all models)")
    p.add_argument("--train-args", default="", help="train config overrides")
    p.add_argument("--analysis", default="compiled,lowered",
                   choices=["compiled,lowered", "compiled", "lowered", "lowered,compiled"],
                   help="cost analysis of the compiled (optimized) and/or lowered HLO; "
                        "the first is the headline (lowered alone compiles nothing extra)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="no temporary persistent compilation cache")
    p.add_argument("--matmul-n", type=int, default=2048, help="size of the peak matmul")
    p.add_argument("--peak-seconds", type=float, default=None,
                   help="seconds per peak measurement (default 3; quick 1)")
    bench_common.add_output_args(p, "bench_flops[_quick]")
    args = p.parse_args()
    args.out = args.out or bench_common.default_out("bench_flops" + ("_quick" if args.quick else ""),
                                           args.save)
    args.models = args.models or ("feddmr" if args.quick else DEFAULT_MODELS)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.peak_seconds = args.peak_seconds or (1.0 if args.quick else 3.0)
    if args.quick and args.one_class is None:
        args.one_class = 64
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODEL_CONFIGS]
    if unknown or not names:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_CONFIGS)}")

    cache_dir = None
    if not args.no_compile_cache:
        cache_dir = tempfile.TemporaryDirectory(prefix="bench_flops_xla_")
        enable_compilation_cache(cache_dir.name)
    print("measuring the matmul peak ...", file=sys.stderr, flush=True)
    peak = {"default": matmul_peak(args.matmul_n, args.peak_seconds),
            "highest": matmul_peak(args.matmul_n, args.peak_seconds,
                                   jax.lax.Precision.HIGHEST)}
    base = base_config(args)
    results, configs = {}, {}
    for name in names:
        cfg = MODEL_CONFIGS[name](base)
        configs[name] = config_lib.to_dict(cfg)
        print(f"[{name}] timing and cost analysis ...", file=sys.stderr, flush=True)
        res = bench_model(cfg, args)
        res["utilization"] = res["achieved_flops_per_s"] / peak["default"]
        res["utilization_vs_f32_highest"] = res["achieved_flops_per_s"] / peak["highest"]
        results[name] = res

    rows = [[name, r["clients_per_round"], r["flops_per_round"], r["flops_lowered_per_round"],
             r["flops_loops_once_per_round"], r["example_fill"], r["train_s"],
             r["achieved_flops_per_s"], r["utilization"]] for name, r in results.items()]
    bench_common.print_table(["model", "clients", f"FLOPs/round ({args.analysis.split(',')[0]})",
                         "(lowered HLO)", "(loops once)", "example fill", "train s", "FLOP/s",
                         "utilization"],
                        rows)
    print(f"peak {args.matmul_n}^2 f32 matmul: {peak['default']:.3e} FLOP/s default precision, "
          f"{peak['highest']:.3e} FLOP/s precision=HIGHEST")
    for name, r in results.items():
        if r["while_loops_counted_once"]:
            print(f"[{name}] note: {r['while_loops_counted_once']} while loop(s) of unknown "
                  "trip count counted once")

    head = results[names[0]]
    figures = {
        "benchmark": "bench_flops", "quick": args.quick, "model": names[0],
        "flops_per_round": rounded(head["flops_per_round"]),
        "achieved_flops_per_s": rounded(head["achieved_flops_per_s"]),
        "peak_flops_per_s": rounded(peak["default"]),
        "peak_flops_per_s_f32_highest": rounded(peak["highest"]),
        "utilization": rounded(head["utilization"], 3),
        "analysis": args.analysis.split(",")[0], "matmul_n": args.matmul_n,
        **bench_common.device_info(),
        "one_class": args.one_class, "timed_rounds": args.rounds,
        "models": {name: bench_common.rounded_tree(r) for name, r in results.items()},
        "config": configs[names[0]],
    }
    bench_common.emit(figures, args.out)
    if cache_dir is not None:
        cache_dir.cleanup()


if __name__ == "__main__":
    main()
