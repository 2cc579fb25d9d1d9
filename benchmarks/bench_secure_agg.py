"""Secure aggregation overhead per round: the same job with and without ``--secure-agg``.

    python benchmarks/bench_secure_agg.py                       # FedMF, ml-100k, all clients
    python benchmarks/bench_secure_agg.py --model pfedrec --rounds 4

Both sides clip each upload to ``--clip`` (``aggregator = clipped_mean``: secure
aggregation needs an upload bound, docs/privacy.md), so the only difference is
the masked dense upload, its encoding and the unmasking. One warm-up round per
side (compilation), then ``--rounds`` timed rounds, **interleaved** (plain,
secure, plain, ...) so that a change of machine load hits both sides alike;
the figure is the ratio of the medians. Rounds are timed as ``train`` runs them
(``train.run_round``: sampling, planning, training, aggregation, unmasking).
"""

from __future__ import annotations

import time

import jax

from bench_common import (add_output_args, arg_parser, default_data_dir, default_out, device_info,
                     emit, median, print_table, rounded)
from feddmr_jax import config as config_lib
from feddmr_jax.timing import enable_compilation_cache
from feddmr_jax.train import build_experiment, run_round


def _experiment(args, secure: bool):
    train = {"model": args.model, "aggregator": "clipped_mean", "clip_norm": args.clip,
             "secure_agg": secure, "secure_agg_bits": args.bits, "seed": 0}
    raw = {"data": {"dataset": args.dataset, "data_dir": args.data_dir}, "train": train}
    exp = build_experiment(config_lib.build_config(raw, source="bench_secure_agg"))
    return exp, exp.algorithm.init(exp.keys["init"])


def _round(exp, state, r):
    start = time.perf_counter()
    state, _ = run_round(exp, state, r)
    jax.block_until_ready(state.shared)
    return state, time.perf_counter() - start


def main() -> None:
    p = arg_parser(__doc__)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--model", default="fedmf")
    p.add_argument("--clip", type=float, default=5.0, help="L2 bound of each upload")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per side")
    p.add_argument("--bits", type=int, default=18,
                   help="fixed-point bits (943 clients x clip 5 must fit in +-2^(31-bits))")
    add_output_args(p, "bench_secure_agg")
    args = p.parse_args()
    enable_compilation_cache()
    sides = {name: _experiment(args, name == "secure") for name in ("plain", "secure")}
    states = {name: exp_state[1] for name, exp_state in sides.items()}
    seconds = {name: [] for name in sides}
    for r in range(1, args.rounds + 2):
        for name, (exp, _) in sides.items():
            states[name], s = _round(exp, states[name], r)
            if r > 1:                                   # round 1 compiles
                seconds[name].append(s)
    plain, secure = median(seconds["plain"]), median(seconds["secure"])
    exp = sides["plain"][0]
    figures = {"benchmark": "bench_secure_agg", "model": args.model, "dataset": args.dataset,
               "clients_per_round": exp.clients_per_round, "clip": args.clip,
               "neighbors": exp.cfg.train.secure_agg_neighbors, "bits": args.bits,
               "plain_s_per_round": rounded(plain), "secure_s_per_round": rounded(secure),
               "overhead_ratio": rounded(secure / plain), "rounds_timed": args.rounds,
               "seconds": {k: [rounded(x) for x in v] for k, v in seconds.items()},
               "device": device_info()}
    print_table(["side", "median s/round"], [["plain (clipped mean)", plain],
                                             ["secure aggregation", secure]])
    print(f"overhead: {secure / plain:.2f}x")
    emit(figures, args.out or default_out("bench_secure_agg", args.save))


if __name__ == "__main__":
    main()
