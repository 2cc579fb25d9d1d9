"""FedDMR study (issues 13, 24): per dataset, a sequential search on validation, then a
multi-seed confirmation, for FedDMR and every baseline alike.

    python experiments/feddmr_study.py --dry-run                       # the plan, CPU hours
    python experiments/feddmr_study.py --dataset lastfm-2k --data-dir ../shared/data

Protocol, per dataset (``--dataset``: ml-100k, lastfm-2k, amazon-video, or any dataset of
``data.dataset``) and per method (``--methods``):

1. **screen** (``--screen-rounds``, default 30; seed 0), the searched methods
   (``study_knobs.KNOBS``: feddmr, fedmf, fedncf, pfedrec, fedrap): step 0 runs the
   method's reference values and its starting point of ``--starts`` (default
   ``experiments/configs/study_starts.toml``: its ml-100k choice) and keeps the better; then,
   for each knob in the stated order, the current point with the knob set to each of its
   values, keeping the best on **validation** HR@10 (within ``--near-tie``: the higher
   validation AUC; exact ties: the current point, then the earlier value). ``--max-points``
   (default 12) is the number of screen points of **every** method: the search passes over
   the knobs again from the kept point until that many distinct points have run.
   ``--knobs`` reorders or narrows the knobs; ``--grid`` replaces the search by a list.
2. **confirm** (``--stage confirm``, the default): the ``--top`` best screened points run
   ``--rounds`` rounds (default 100) with ``--seeds`` seeds (default 3); the chosen point is
   the best on the validation means over seeds. Then, with the same seeds and rounds,
   FedDMR's ablations (``feddmr_no_attention``: ``model.attention=false``; ``feddmr_1layer``:
   ``model.layers=1``) at FedDMR's chosen point (skipped, and said, where the chosen point
   already has the ablation's setting), and the popularity floor (no search, 1 round:
   with every client in the round, one round is the global count).
3. **extend** (``--extend N``): when the mean validation curve (over seeds, chosen point) of
   any searched method is still rising over its last 10 rounds (``study_rounds.py``), every
   method's confirmation is extended by N rounds (the same for all; finished runs resume from
   their last checkpoint), up to ``--max-rounds``; recorded in ``study_extension.json``, which
   later invocations read (their confirmation runs that many rounds). Give it to the
   invocation that confirms every method.

Every test figure is each run's at its best validation round; no choice reads a test column
(``study_search.validation_view`` / ``choose``). A run that diverges is a row with ``status``
diverged and its message, never chosen (nor a finalist with a diverged seed).

Outputs under ``--out`` (default ``docs/results/study_<dataset>``), every CSV row with its
``dataset``: ``study_runs.csv`` (one row per run: method, stage, step, knob, point id and
settings, every knob value, seed, rounds, status, best round, validation and test HR@10 /
NDCG@10 / AUC / Precision@10, s/round, wall s, message), ``study_knobs.csv`` (starting points
and knobs, as searched), ``study_curves.csv`` (train loss, validation HR@10 and bytes per
round of every confirmation run; a screen run's curve is in its folder's metrics.jsonl), ``study_rounds.csv`` (rounds to the best baseline's validation HR@10),
``study_chosen.json`` (per method: the chosen point and its validation means; no test),
``study_finalists.png``. Run folders: ``--runs`` (default ``<out>/runs`` when ``--out`` is
given, else ``results/study_<dataset>/runs``): ``<method>/<stage>/<point id>/seed<k>/``.
Presets from the choice: ``experiments/study_presets.py``. The results page:
``experiments/results_page.py``.

Resumable (``run_folder.run_one``): a finished or diverged run with the same config is reused,
an interrupted one continues from its checkpoint, a second invocation runs nothing new; a
finished run whose config changed is an error unless ``--rerun-changed``. Methods may run in
parallel invocations (``--methods``); the CSVs then hold the last invocation's methods:
finish with one invocation of every method (it reuses every run) to write them together.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))    # experiments/ is not a package
import run_folder  # noqa: E402,F401  (run_folder.run_one: what every run goes through)
from feddmr_jax.errors import ConfigError  # noqa: E402
from feddmr_jax.federated.private_store import PrivateStoreTooLarge  # noqa: E402
from feddmr_jax.timing import enable_compilation_cache  # noqa: E402
from runs_io import METRICS, parse_seeds, parse_set, write_rows  # noqa: E402,F401
from study_knobs import (ABLATIONS, BASELINES, FLOOR, FLOOR_ROUNDS, KNOBS,  # noqa: E402,F401
                         METHODS, STARTS_FILE, Knob, Point, knob_rows, read_starts)
from study_outputs import curve_rows, plot_finalists  # noqa: E402
from study_plan import plan, print_plan  # noqa: E402
from study_rounds import rising_methods, rounds_rows  # noqa: E402
from study_runner import CONFIRM, SCREEN_SEED, Study  # noqa: E402,F401
from study_search import (choose, point_id, point_tag, sequential_search,  # noqa: E402,F401
                          top_k, validation_view)

EXTENSION_FILE = "study_extension.json"


def confirm_rounds(out: Path, rounds: int) -> int:
    """The confirmation's rounds: ``--rounds``, or more when an extension was recorded."""
    path = out / EXTENSION_FILE
    return max(rounds, json.loads(path.read_text())["rounds"]) if path.is_file() else rounds


def confirm_all(studies: dict[str, Study], screened: dict[str, list[Point]], rounds: int,
                chosen: dict[str, dict]) -> None:
    """The confirmation of every method at ``rounds`` (the floor: its one round); fills
    ``chosen``. Ablations run at FedDMR's chosen point (FedDMR confirms first)."""
    for method, study in studies.items():
        if method in chosen and "skipped" in chosen[method]:
            continue
        try:
            if method in KNOBS:
                chosen[method] = study.confirm(screened[method], rounds)
            elif method == FLOOR:
                chosen[method] = study.confirm_point({}, FLOOR_ROUNDS, "floor")
            elif "settings" not in chosen.get("feddmr", {}):
                chosen[method] = {"skipped": "FedDMR has no chosen point"}
            elif (study.config(chosen["feddmr"]["settings"], seed=0, rounds=rounds)
                  == studies["feddmr"].config(chosen["feddmr"]["settings"], seed=0,
                                              rounds=rounds)):
                chosen[method] = {"skipped": f"FedDMR's chosen point already has "
                                  f"{ABLATIONS[method]}: the ablation is FedDMR itself"}
                print(f"{method} skipped: {chosen[method]['skipped']}", file=sys.stderr)
            else:
                chosen[method] = study.confirm_point(chosen["feddmr"]["settings"], rounds,
                                                     "ablation")
        except PrivateStoreTooLarge as e:   # FedRAP's [U, I, d] store
            chosen[method] = {"skipped": str(e)}
            print(f"{method} skipped: {e}", file=sys.stderr)


def extend_confirmations(args: argparse.Namespace, out: Path, studies: dict[str, Study],
                         screened: dict[str, list[Point]], rounds: int,
                         chosen: dict[str, dict]) -> int:
    """``--extend``: while a searched method's mean validation curve is still rising, every
    confirmation gets ``args.extend`` more rounds (up to ``--max-rounds``); returns the rounds."""
    while True:
        rows = [r for s in studies.values() for r in s.rows]
        picks = {m: c["point_id"] for m, c in chosen.items() if m in KNOBS and "point_id" in c}
        rising = rising_methods(curve_rows(Path(args.runs), rows), picks)
        if not rising or rounds + args.extend > args.max_rounds:
            if rising:
                print(f"still rising at {rounds} rounds ({', '.join(rising)}), but --max-rounds "
                      f"{args.max_rounds} is reached", file=sys.stderr)
            return rounds
        path = out / EXTENSION_FILE
        record = json.loads(path.read_text()) if path.is_file() else {"steps": []}
        record["steps"].append({"from": rounds, "to": rounds + args.extend, "rising": rising})
        rounds += args.extend
        record["rounds"] = rounds
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"still rising: {', '.join(rising)}; every confirmation extended to {rounds} "
              "rounds", file=sys.stderr)
        confirm_all(studies, screened, rounds, chosen)


def write_outputs(out: Path, args: argparse.Namespace, methods: list[str],
                  studies: dict[str, Study], starts: dict, chosen: dict[str, dict]) -> None:
    """The CSVs, the JSON of the choices and the finalists' figure."""
    rows = [r for s in studies.values() for r in s.rows]
    if not rows:
        return
    write_rows(out / "study_runs.csv", rows)
    write_rows(out / "study_knobs.csv", knob_rows(args.dataset, methods, args.knobs, starts))
    curves = curve_rows(Path(args.runs), rows)
    write_rows(out / "study_curves.csv", curves, digits=6)
    picks = {m: c["point_id"] for m, c in chosen.items() if "point_id" in c and "diverged" not in c}
    write_rows(out / "study_rounds.csv", rounds_rows(args.dataset, curves, picks, BASELINES))
    plot_finalists(out / "study_finalists.png", curves)
    if chosen:
        (out / "study_chosen.json").write_text(json.dumps(chosen, indent=2) + "\n")


def _grids(text: str | None, methods: list[str]) -> dict[str, list[Point]]:
    """``--grid``: JSON (or a .json file) of a list of points, or {method: [points]}."""
    if text is None:
        return {}
    raw = json.loads(Path(text).read_text() if text.endswith(".json") else text)
    if isinstance(raw, list):
        raw = {m: raw for m in methods if m in KNOBS}
    if not isinstance(raw, dict) or not all(
            isinstance(v, list) and all(isinstance(p, dict) for p in v) for v in raw.values()):
        raise ConfigError("--grid must be a list of {\"section.key\": value} points, or "
                          "{method: [points]}")
    return raw


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma list of {', '.join(METHODS)} (default: all)")
    p.add_argument("--dataset", default="ml-100k", help="data.dataset (default ml-100k)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default $FEDDMR_DATA_DIR)")
    p.add_argument("--out", default=None, help="CSV folder (default docs/results/study_<dataset>)")
    p.add_argument("--runs", default=None, help="run folders (default <out>/runs with --out, "
                                                "else results/study_<dataset>/runs)")
    p.add_argument("--stage", choices=("screen", "confirm"), default="confirm",
                   help="screen: the search only; confirm: the search, then the finalists")
    p.add_argument("--screen-rounds", type=int, default=30, help="rounds per screen run (30)")
    p.add_argument("--rounds", type=int, default=100, help="rounds per confirm run (100)")
    p.add_argument("--seeds", default="3", help="confirm seeds: N (0..N-1) or a comma list")
    p.add_argument("--top", type=int, default=3, help="screened points confirmed (3)")
    p.add_argument("--near-tie", type=float, default=0.002,
                   help="validation HR@10 margin within which validation AUC decides (0.002)")
    p.add_argument("--max-points", type=int, default=12,
                   help="screen points of every searched method (12; the same for all)")
    p.add_argument("--starts", default=str(STARTS_FILE),
                   help="TOML of each method's second starting point ('none': reference only)")
    p.add_argument("--knobs", default=None,
                   help="comma list of knob keys: search only these, in this order (a method "
                        "skips the keys it has no knob for), e.g. model.history_len,train.lr")
    p.add_argument("--grid", default=None,
                   help="explicit screen points instead of the search: JSON (or a .json file) "
                        "of [{\"section.key\": value}, ...] or {method: [...]}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a value for every run, e.g. data.synthetic_users=40 (repeatable)")
    p.add_argument("--extend", type=int, default=0, metavar="N",
                   help="extend every confirmation by N rounds while a method's mean "
                        "validation curve still rises over its last 10 rounds (0: never)")
    p.add_argument("--max-rounds", type=int, default=300, help="--extend's bound (300)")
    p.add_argument("--rerun-changed", action="store_true",
                   help="delete and train again a finished run whose config changed (without: "
                        "an error naming the run and the fields; data paths are compared by "
                        "content)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the planned points and the estimated CPU time per dataset")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(METHODS)})")
    if any(m in ABLATIONS for m in methods) and "feddmr" not in methods:
        p.error("the ablations run at FedDMR's chosen point: list feddmr too (its finished "
                "runs are reused)")
    args.methods = [m for m in METHODS if m in methods]     # FedDMR before its ablations
    args.seeds = parse_seeds(args.seeds)
    default_out = args.out is None
    args.out = args.out or f"docs/results/study_{args.dataset}"
    args.runs = args.runs or (f"results/study_{args.dataset}/runs" if default_out
                              else str(Path(args.out) / "runs"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    extra = parse_set(args.set)
    start, chosen = time.perf_counter(), {}
    try:
        starts = read_starts(args.starts)
        grids = _grids(args.grid, args.methods)
        studies = {m: Study(m, args, extra) for m in args.methods}
        if args.dry_run:
            print_plan({m: (plan(m, args, lambda p, s=s: s.config(p, seed=0, rounds=1),
                                 s.reference, grids.get(m), starts.get(m, []))
                            if m in KNOBS else [], lambda p, s=s: s.config(p, seed=0, rounds=1),
                            s.reference) for m, s in studies.items()}, args)
            return 0
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        enable_compilation_cache()
        screened: dict[str, list[Point]] = {}
        for method, study in studies.items():
            if method in KNOBS:
                try:
                    screened[method] = study.screen(grids.get(method), starts.get(method, []))
                except PrivateStoreTooLarge as e:   # FedRAP's [U, I, d] store
                    chosen[method] = {"skipped": str(e)}
                    print(f"{method} skipped: {e}", file=sys.stderr)
        if args.stage == "confirm":
            rounds = confirm_rounds(out, args.rounds)
            confirm_all(studies, screened, rounds, chosen)
            if args.extend > 0:
                extend_confirmations(args, out, studies, screened, rounds, chosen)
    except (ConfigError, json.JSONDecodeError, OSError) as e:
        print(f"feddmr_study.py: error: {e}", file=sys.stderr)
        return 2
    write_outputs(out, args, args.methods, studies, starts, chosen)
    print(f"done in {time.perf_counter() - start:.0f} s; results in {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
