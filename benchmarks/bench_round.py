"""Seconds per round: the vectorized engine against a per-client loop, same run.

Usage::

    python benchmarks/bench_round.py [--quick] [--models feddmr,feddmr_no_attention]
        [--data-dir DIR] [--rounds 3] [--loop-clients K] [--out PATH]

For each named model config, two experiments are built from the same config:

* **engine** -- ``build_experiment(cfg)``: a round's participants go through
  the jitted chunk step (``vmap`` over the clients of a chunk);
* **loop** -- ``build_experiment(cfg, sequential=True)``: the same jitted
  client update called once per client in a Python loop, which is what a
  fedjax-style per-client simulation does. Padding clients of the planner's
  chunks are removed before the loop (a per-client simulation has none).

Each side runs ``--warmup`` rounds (compilation; their seconds are reported as
``first_round_s`` and ``compile_s``), then ``--rounds`` timed rounds; the figure
is the median. A round runs as ``train`` runs it: each chunk is packed (its
training negatives drawn) when the round reaches it, while the device trains the
chunks before it; ``plan_s`` is the host's packing time inside the round and
``train_s`` the rest of its wall time (``bench_common.RoundTiming``). ``--loop-clients
K`` times the loop on about K of the round's participants, taken evenly from
every shape class, planned first, and scales its training time by the ratio of
padded example slots (stated in the output as ``loop_scale``).

Default: ml-100k (``--data-dir``, ``$FEDDMR_DATA_DIR`` or ``../shared/data``),
all 943 clients per round, 1 local epoch, 4 negatives, pair attention
(the config defaults). ``--one-class K`` trains only K fixed clients of the
most populous shape class every round (one compiled chunk shape per side).
``--quick`` = ``--one-class 128``, 2 timed rounds: a CPU check of the script
under 2 minutes, not a figure to quote. The table goes to stdout, the figures
to ``--out`` and, as one JSON object, to the last stdout line (top-level
figures: the first model). ``slots_filled``: real examples / example slots
of a full round's chunk rows (padding clients included); ``step_slots_filled``:
the same over the slots the minibatch steps compute (a client's last partial
batch padded to ``B``); ``chunk_shapes``: distinct compiled chunk shapes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402
from bench_common import RoundTiming, median, rounded  # noqa: E402

from feddmr_jax import config as config_lib  # noqa: E402
from feddmr_jax.config import DataConfig, RunConfig, TrainConfig  # noqa: E402
from feddmr_jax.federated.parallel import ChunkData  # noqa: E402
from feddmr_jax.federated.rounds import plan_round  # noqa: E402
from feddmr_jax.methods import get_method  # noqa: E402
from feddmr_jax.timing import CompileWatch, enable_compilation_cache  # noqa: E402
from feddmr_jax.train import Experiment, build_experiment  # noqa: E402

# Named model configs: name -> function(base config) -> config to benchmark.
MODEL_CONFIGS: dict[str, Callable[[RunConfig], RunConfig]] = {
    "feddmr": lambda cfg: cfg,
    # The light model until PFedRec is wired in: FedDMR without the attention
    # layers (user embedding and item row straight into the MLP head).
    "feddmr_no_attention": lambda cfg: bench_common.replace(cfg, model={"attention": False}),
    # PFedRec with its method's [train] defaults (reference values and chunk size,
    # methods/pfedrec.py); apply_overrides retypes [model].
    "pfedrec": lambda cfg: bench_common.with_overrides(
        cfg, train={"model": "pfedrec", **get_method("pfedrec").train_defaults}),
}
DEFAULT_MODELS = "feddmr,pfedrec,feddmr_no_attention"


def base_config(args: argparse.Namespace) -> RunConfig:
    data = DataConfig(dataset=args.dataset, data_dir=args.data_dir)
    cfg = RunConfig(data=data, train=TrainConfig(clients_per_round=args.clients_per_round,
                                                 checkpoint_every=0))
    return bench_common.with_overrides(cfg, model=bench_common.parse_assignments(args.model_args),
                                  train=bench_common.parse_assignments(args.train_args))


def _rows(chunk: ChunkData, keep: np.ndarray) -> ChunkData:
    return jax.tree.map(lambda x: x[keep], chunk)


def real_clients(chunk: ChunkData) -> ChunkData:
    """The chunk without its padding clients (a per-client loop has none)."""
    return _rows(chunk, np.flatnonzero(chunk.client_mask))


def loop_chunks(chunks: list[ChunkData], budget: int | None) -> tuple[list[ChunkData], float]:
    """The real clients of ``chunks`` (padding removed), optionally about ``budget`` of them.

    Returns:
      ``(chunks, scale)``: the kept clients, and (total padded example slots of
      all real clients) / (slots of the kept ones), 1.0 when all are kept.
    """
    real = [real_clients(c) for c in chunks]
    total = sum(len(c.client_ids) for c in real)
    if budget is None or budget >= total:
        return real, 1.0
    step = total / budget
    kept, slots_all, slots_kept = [], 0, 0
    for c in real:  # chunks are grouped by shape class: every class gets its share
        n = len(c.client_ids)
        take = np.unique(np.floor(np.arange(0, n, step)).astype(int))
        kept.append(_rows(c, take))
        slots_all += n * c.items.shape[1]
        slots_kept += len(take) * c.items.shape[1]
    return kept, slots_all / slots_kept


def one_class_participants(exp: Experiment, count: int) -> tuple[np.ndarray, int]:
    """The first ``count`` clients of the most populous shape class, and its width."""
    widths, counts = np.unique(exp.planner.width, return_counts=True)
    width = int(widths[np.argmax(counts)])
    return np.flatnonzero(exp.planner.width == width)[:count].astype(np.int32), width


def run_side(exp: Experiment, *, warmup: int, rounds: int, loop: bool,
             loop_clients: int | None, one_class: int | None) -> dict:
    """Warm-up rounds, then timed rounds of one experiment."""
    fixed = one_class_participants(exp, one_class)[0] if one_class else None
    state = exp.algorithm.init(exp.keys["init"])
    jax.block_until_ready(state)
    watch = CompileWatch()
    timings: list[RoundTiming] = []
    scale, kept = 1.0, None
    first_round_s = 0.0
    for r in range(1, warmup + rounds + 1):
        if r == warmup + 1:
            compile_s, compiles = watch.seconds, watch.compiles
            watch.reset()
        if loop and loop_clients is None:   # every client, packed lazily like the engine
            state, timing = bench_common.timed_round(exp, state, r, participants=fixed,
                                                per_chunk=real_clients)
            raw_train_s = timing.train_s
            kept = len(fixed) if fixed is not None else exp.clients_per_round
        elif loop:                           # a sample of clients: planned first, then scaled
            participants = fixed if fixed is not None else bench_common.participants_of(exp, r)
            t0 = time.perf_counter()
            chunks = plan_round(exp.planner, participants, r)
            t1 = time.perf_counter()
            chunks, scale = loop_chunks(chunks, loop_clients)
            kept = sum(len(c.client_ids) for c in chunks)
            t2 = time.perf_counter()
            state, stats = exp.algorithm.apply(state, chunks,
                                               jax.random.fold_in(exp.keys["train"], r))
            jax.block_until_ready((state.shared, state.private_store))
            raw_train_s = time.perf_counter() - t2
            timing = RoundTiming(t1 - t0, raw_train_s * scale, stats)
        else:
            state, timing = bench_common.timed_round(exp, state, r, participants=fixed)
            raw_train_s = timing.train_s
        if r <= warmup:  # as measured (compilation does not scale with clients)
            first_round_s += timing.plan_s + raw_train_s
        else:
            timings.append(timing)
    plan_s = median([t.plan_s for t in timings])
    train_s = median([t.train_s for t in timings])
    total_s = median([t.total_s for t in timings])
    return {"seconds_per_round": total_s, "plan_s": plan_s, "train_s": train_s,
            "first_round_s": first_round_s, "compile_s": compile_s,
            "compiles_in_warmup": compiles, "compiles_in_timed_rounds": watch.compiles,
            "round_seconds": [rounded(t.total_s) for t in timings],
            "clients_per_round": len(fixed) if fixed is not None else exp.clients_per_round,
            "clients_timed": kept if loop else (len(fixed) if fixed is not None
                                                else exp.clients_per_round),
            "scale": scale, "train_loss": timings[-1].stats.train_loss}


def bench_model(cfg: RunConfig, args: argparse.Namespace) -> dict:
    engine_exp = build_experiment(cfg)
    engine = run_side(engine_exp, warmup=args.warmup, rounds=args.rounds, loop=False,
                      loop_clients=None, one_class=args.one_class)
    split = engine_exp.split
    fixed = one_class_participants(engine_exp, args.one_class)[0] if args.one_class else None
    fill = engine_exp.planner.slot_fill(fixed)   # every client: a full round's chunks
    result = {"users": split.num_users, "items": split.num_items,
              "train_interactions": len(split.train),
              "chunk_shapes": engine_exp.planner.chunk_shapes(),
              "slots_filled": {**fill._asdict(), "row_fill": fill.row_fill,
                               "step_fill": fill.step_fill},
              "engine": engine}
    if args.one_class:
        ids, width = one_class_participants(engine_exp, args.one_class)
        result["one_class"] = {"width": width, "clients": len(ids),
                               "clients_per_chunk": engine_exp.planner.clients_per_chunk[width]}
    del engine_exp
    if not args.skip_loop:
        loop = run_side(build_experiment(cfg, sequential=True), warmup=args.warmup,
                        rounds=args.rounds, loop=True, loop_clients=args.loop_clients,
                        one_class=args.one_class)
        result["loop"] = loop
        result["speedup"] = loop["seconds_per_round"] / engine["seconds_per_round"]
        result["train_speedup"] = loop["train_s"] / engine["train_s"]
    return result


def main() -> None:
    p = bench_common.arg_parser(__doc__)
    p.add_argument("--quick", action="store_true",
                   help="--one-class 128 and 2 timed rounds (a CPU smoke check)")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated, from {', '.join(MODEL_CONFIGS)} "
                        f"(default {DEFAULT_MODELS})")
    bench_common.add_round_source_args(p)
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (compilation)")
    p.add_argument("--loop-clients", type=int, default=None,
                   help="time the loop on about this many participants and scale")
    p.add_argument("--skip-loop", action="store_true", help="engine only")
    p.add_argument("--model-args", default="",
                   help="model config overrides, e.g. 'dim=64,heads=4' (all models)")
    p.add_argument("--train-args", default="",
                   help="train config overrides, e.g. 'chunk_size=128,local_epochs=2'")
    p.add_argument("--compile-cache", action="store_true",
                   help="use the persistent compilation cache (compile_s then measures hits)")
    bench_common.add_output_args(p, "bench_round[_quick]")
    args = p.parse_args()
    args.out = args.out or bench_common.default_out("bench_round" + ("_quick" if args.quick else ""),
                                           args.save)
    args.rounds = args.rounds or (2 if args.quick else 3)
    if args.quick and args.one_class is None:
        args.one_class = 128
    if args.warmup < 1 or args.rounds < 1:
        p.error("--warmup and --rounds must be >= 1")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODEL_CONFIGS]
    if unknown or not names:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_CONFIGS)}")
    cache = enable_compilation_cache() if args.compile_cache else None

    base = base_config(args)
    results, configs = {}, {}
    for name in names:
        cfg = MODEL_CONFIGS[name](base)
        configs[name] = config_lib.to_dict(cfg)
        print(f"[{name}] building and timing ...", file=sys.stderr, flush=True)
        results[name] = bench_model(cfg, args)

    rows = []
    for name, res in results.items():
        for side in ("engine", "loop"):
            if side not in res:
                continue
            s = res[side]
            rows.append([name, side, s["clients_timed"], s["compile_s"], s["first_round_s"],
                         s["plan_s"], s["train_s"], s["seconds_per_round"],
                         s["clients_per_round"] / s["seconds_per_round"],
                         res.get("speedup") if side == "loop" else None])
    bench_common.print_table(["model", "side", "clients timed", "compile s", "first round s",
                         "plan s", "train s", "s/round", "clients/s", "speedup"], rows)
    for name, res in results.items():
        loop = res.get("loop")
        if "one_class" in res:
            oc = res["one_class"]
            print(f"[{name}] only {oc['clients']} fixed clients of shape class N={oc['width']} "
                  f"({oc['clients_per_chunk']} per chunk) of {res['users']} users")
        if loop and loop["scale"] != 1.0:
            print(f"[{name}] loop timed on {loop['clients_timed']} of "
                  f"{loop['clients_per_round']} clients, train time scaled x{loop['scale']:.3g}")
        if res["engine"]["compiles_in_timed_rounds"] or (loop and loop["compiles_in_timed_rounds"]):
            print(f"[{name}] WARNING: compilations during timed rounds")
        if "speedup" in res:
            print(f"[{name}] loop / engine = {res['speedup']:.2f}x per round "
                  f"({res['train_speedup']:.2f}x on training alone)")

    head_name = names[0]
    head = results[head_name]
    loop = head.get("loop")
    figures = {
        "benchmark": "bench_round",
        "quick": args.quick,
        "model": head_name,
        "engine_seconds_per_round": rounded(head["engine"]["seconds_per_round"]),
        "loop_seconds_per_round": rounded(loop["seconds_per_round"]) if loop else None,
        "speedup": rounded(head["speedup"], 3) if loop else None,
        "train_speedup": rounded(head["train_speedup"], 3) if loop else None,
        "engine_compile_seconds": rounded(head["engine"]["compile_s"]),
        "chunk_shapes": len(head["chunk_shapes"]),
        "slots_filled": rounded(head["slots_filled"]["row_fill"], 3),
        "step_slots_filled": rounded(head["slots_filled"]["step_fill"], 3),
        "loop_compile_seconds": rounded(loop["compile_s"]) if loop else None,
        **bench_common.device_info(),
        "compile_cache": str(cache) if cache else None,
        "timed_rounds": args.rounds, "warmup_rounds": args.warmup,
        "one_class": args.one_class, "loop_clients": args.loop_clients,
        "models": {name: bench_common.rounded_tree(res) for name, res in results.items()},
        "config": configs[head_name],
        "model_configs": {name: c["model"] for name, c in configs.items()},
    }
    bench_common.emit(figures, args.out)


if __name__ == "__main__":
    main()
