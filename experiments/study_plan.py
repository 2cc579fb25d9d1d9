"""The FedDMR study's plan without training (``feddmr_study.py --dry-run``): the screen points
of a first pass per method, and a rough CPU time per dataset.

Costs are seconds per round on the project's 2-core CPU: training (:data:`TRAIN_S`, at each
method's reference values) plus one evaluation of validation and test (:data:`EVAL_S`; the
study evaluates every round). They are estimates for planning, not results.
"""

from __future__ import annotations

import argparse
from typing import Callable

from feddmr_jax import config as config_lib
from study_knobs import ABLATIONS, FLOOR, FLOOR_ROUNDS, KNOBS, Point, canonical, knobs_for
from study_search import point_id, point_tag, sequential_search

DATASETS = ("ml-100k", "lastfm-2k", "amazon-video")
# users, items, interactions (shared/data/README.md).
SIZES = {"ml-100k": (943, 1682, 100_000), "lastfm-2k": (1892, 17632, 92_834),
         "amazon-video": (8072, 11830, 63_836)}
# Training seconds per round at the reference values (evaluation excluded). ml-100k: FedDMR
# 10.0 at its default (pair attention, 2 layers, batch 64: 8.6-10.1 s in the session-5
# confirmation, docs/results/feddmr_study_s5; 11.4 at batch 256, bench_round, commit ed12213)
# and 1.36 without attention (benchmarks/RESULTS.md), PFedRec 0.81, FedMF 1.12, FedNCF 1.87,
# FedRAP 5.34 (docs/results.md, 100-round medians). lastfm-2k and amazon-video: FedDMR ~6 and
# ~3 s (2-core CPU); the baselines scaled from ml-100k by FedDMR's ratio (the cost follows the
# training examples: 98k, 89k and 48k positives).
_ML100K = {"feddmr": 10.0, "feddmr_no_attention": 1.36, "pfedrec": 0.81, "fedmf": 1.12,
           "fedncf": 1.87, "fedrap": 5.34, FLOOR: 0.3}
_FEDDMR = {"ml-100k": 10.0, "lastfm-2k": 6.0, "amazon-video": 3.0}
TRAIN_S = {ds: {m: s * _FEDDMR[ds] / _FEDDMR["ml-100k"] for m, s in _ML100K.items()}
           for ds in DATASETS}
# Evaluation of validation and test, seconds per round, and the fixed cost of a run (build,
# compile): from the ml-100k study (docs/results/feddmr_study/study_runs.csv: wall s - rounds x
# s/round, 30- and 100-round runs: FedDMR ~75 and ~150 s, the baselines ~10-60 s); the other
# datasets' evaluation scaled by their number of users (943 x 2 x 100 candidates on ml-100k).
_EVAL_ML100K = {"feddmr": 1.0, "other": 0.15}
EVAL_S = {ds: {k: s * SIZES[ds][0] / SIZES["ml-100k"][0] for k, s in _EVAL_ML100K.items()}
          for ds in DATASETS}
RUN_S = {"feddmr": 45.0, "other": 25.0}


def s_per_round(cfg: config_lib.RunConfig, reference: config_lib.RunConfig,
                dataset: str) -> float:
    """A rough CPU estimate of one round (training and evaluation) of ``cfg`` on ``dataset``:
    the reference's figure times local epochs and (FedDMR) attention layers and memory."""
    ds = dataset if dataset in TRAIN_S else "ml-100k"
    train, model = TRAIN_S[ds], cfg.train.model
    epochs = cfg.train.local_epochs / reference.train.local_epochs
    if model != "feddmr":
        return train[model] * epochs + EVAL_S[ds]["other"]
    plain = train["feddmr_no_attention"]
    if not cfg.model.attention or not cfg.model.num_layers:
        base = plain
    else:                         # memory 10 / 50: 1.12x / 1.65x pair attention (ml-100k)
        memory = 1.0 if cfg.model.history_len == 0 else 1.12 if cfg.model.history_len <= 10 \
            else 1.65
        base = plain + (train["feddmr"] - plain) * memory * cfg.model.num_layers / 2
    return base * epochs + EVAL_S[ds]["feddmr"]


def plan(method: str, args: argparse.Namespace, config_of: Callable[[Point], object],
         reference: config_lib.RunConfig, grid: list[Point] | None,
         starts: list[Point]) -> list[Point]:
    """The screen points of a first pass (each knob varied at the kept starting point, as if
    every point scored the same; the search then varies them around the points it keeps:
    as many points, other values)."""
    if grid is not None:
        for p in grid:
            config_of(p)
        return [canonical(p, reference) for p in grid]
    flat = {"val_hr@10": 0.0, "val_auc": 0.0}
    return sequential_search(knobs_for(method, args.knobs), reference, config_of,
                             lambda p, step, knob: (config_of(p), flat)[1],
                             args.near_tie, args.max_points, starts)


def method_hours(method: str, points: list[Point], config_of, reference, args,
                 dataset: str) -> tuple[float, float]:
    """(screen, confirmation) CPU hours of one method on ``dataset``."""
    seeds, fixed = len(args.seeds), RUN_S["feddmr" if reference.train.model == "feddmr"
                                            else "other"]
    one = s_per_round(reference, reference, dataset)
    if method == FLOOR:
        return 0.0, (one * FLOOR_ROUNDS + fixed) * seeds / 3600
    if method in ABLATIONS:           # at the reference: FedDMR's choice is not known yet
        return 0.0, (one * args.rounds + fixed) * seeds / 3600
    screen = sum(s_per_round(config_of(p), reference, dataset) * args.screen_rounds + fixed
                 for p in points)
    confirm = (one * args.rounds + fixed) * seeds * min(args.top, len(points))
    return screen / 3600, confirm / 3600


def print_plan(plans: dict[str, tuple[list[Point], Callable, config_lib.RunConfig]],
               args: argparse.Namespace) -> None:
    """Prints each method's planned points and the CPU time per dataset."""
    for method, (points, config_of, reference) in plans.items():
        if method in KNOBS:
            print(f"{method}: {len(points)} screen points x {args.screen_rounds} rounds, then "
                  f"{min(args.top, len(points))} x {len(args.seeds)} seeds x {args.rounds} "
                  "rounds")
            for p in points:
                sec = s_per_round(config_of(p), reference, args.dataset)
                print(f"  {point_id(p)}  ~{sec:5.1f} s/round  {point_tag(p)}")
        elif method == FLOOR:
            print(f"{method}: no search; {len(args.seeds)} seeds x {FLOOR_ROUNDS} round")
        else:
            print(f"{method}: no search; FedDMR's chosen point with {point_tag(ABLATIONS[method])}"
                  f", {len(args.seeds)} seeds x {args.rounds} rounds")
    counts = {len(points) for m, (points, _, _) in plans.items() if m in KNOBS}
    if len(counts) > 1:
        print(f"note: unequal screen budgets {sorted(counts)}: give --max-points")
    print("\nestimated CPU time on the project's 2-core CPU, idle (training + evaluation every "
          "round + build and compilation per run; study_plan.py's figures; confirmation at the "
          "reference's cost; a real run differs):")
    for dataset in DATASETS:
        rows = {m: method_hours(m, points, config_of, reference, args, dataset)
                for m, (points, config_of, reference) in plans.items()}
        total = sum(a + b for a, b in rows.values())
        mark = "  <- --dataset" if dataset == args.dataset else ""
        print(f"  {dataset}: ~{total:.1f} h{mark}  (" + ", ".join(
            f"{m} {a + b:.1f}" for m, (a, b) in rows.items()) + ")")
    if "fedrap" in plans:
        bound = plans["fedrap"][2].train.max_private_gb      # the reference's, --set included
        for dataset in DATASETS:
            users, items, _ = SIZES[dataset]
            gib = users * items * 32 * 4 / 2**30
            verdict = (f"within train.max_private_gb {bound:g}" if gib <= bound else
                       f"over train.max_private_gb {bound:g}: FedRAP is skipped unless --set "
                       "train.max_private_gb=N")
            # Peak resident GB per GiB of store, measured on Lastfm-2K (9.1 and 5.0 GB for
            # 3.98 GiB; docs/scaling.md#memory).
            print(f"  fedrap's private store on {dataset}: {gib:.2f} GiB at dim 32 ({verdict}); "
                  f"a run peaks at about {2.3 * gib:.1f} GB with checkpoints, "
                  f"{1.25 * gib:.1f} GB with train.keep_checkpoints=0")
