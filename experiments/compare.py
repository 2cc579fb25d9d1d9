"""Methods x datasets x seeds: the comparison table, hyperparameters chosen on validation.

    python experiments/compare.py --datasets ml-100k --seeds 1 --rounds 20 --data-dir ../shared/data

Protocol, per dataset:

1. every method runs each point of its grid (``SPECS`` below) with the first seed;
2. the point with the best **validation** HR@10 (at its own best validation
   round) is chosen (ties: the earlier point); test metrics play no part;
3. the other seeds run with the chosen point;
4. every reported test metric is the one at the run's best validation round.

Outputs under ``--out`` (default ``results/``):

* ``compare_<dataset>.csv``: one row per method and seed (chosen point):
  hyperparameters, validation and test HR@10, NDCG@10, AUC, Precision@10,
  best round, median seconds per round;
* ``compare_<dataset>_grid.csv``: every grid run of the selection seed;
* ``compare_<dataset>.md``: mean ± std over seeds;
* ``compare_<dataset>_val_hr10.png``: validation HR@10 per round of every method
  (mean over seeds), if matplotlib is installed (``pip install .[plot]``);
* ``runs/<dataset>/<method>/<point>/seed<k>/``: each run's ``config.json``,
  ``metrics.jsonl``, ``summary.json`` (or ``diverged.json``) and ``data_fingerprint.json``.

A run that diverges (non-finite scores or loss, or an engine stop) is a row with
``status`` ``diverged`` and its message; it is never chosen, the other runs go on.

Resumable (``experiments/run_folder.py``): a finished or diverged run whose config is the
same (``data.data_dir`` / ``data.data_path`` aside: the data's content is compared) is not
run again, and an interrupted run continues from its last checkpoint (every 10 rounds;
checkpoints are deleted once a run is complete). A finished run whose config changed
elsewhere is an error naming the folder and the fields; ``--rerun-changed`` trains it
again. While a run trains, a line per round on stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))    # experiments/ is not a package
from feddmr_jax import config as config_lib  # noqa: E402
from feddmr_jax.errors import ConfigError  # noqa: E402
from feddmr_jax.federated.private_store import PrivateStoreTooLarge  # noqa: E402
from feddmr_jax.timing import enable_compilation_cache  # noqa: E402
from run_folder import RunDiverged, run_one  # noqa: E402
from runs_io import (METRICS, diverged_fields, is_ok, parse_seeds, parse_set,  # noqa: E402
                     pyplot, run_config, val_curve, write_rows)
DATASETS = ("ml-100k", "lastfm-2k", "amazon-video")     # + ml-1m when its files are present


class Spec(NamedTuple):
    """A row of the table: a model, fixed values, and a grid of ``{"section.key": value}``.

    Every run starts from the model's reference ``[train]`` values
    (``feddmr_jax.methods``), then ``fixed``, then the grid point. ``--grid none``
    runs only the first point.
    """

    model: str
    fixed: dict[str, Any]
    grid: tuple[dict[str, Any], ...] = ({},)


# The grid is small on purpose (the acceptance run, ml-100k x 20 rounds, must fit in 30 minutes
# on a 2-core CPU). FedDMR's own values were chosen on ml-100k validation (docs/paper_mapping.md);
# its ablations change one thing each and keep FedDMR's values.
SPECS: dict[str, Spec] = {
    "fedmf": Spec("fedmf", {}, ({"train.embedding_lr": 0.1}, {"train.embedding_lr": 0.02})),
    "fedncf": Spec("fedncf", {}, ({"train.embedding_lr": 0.1, "train.lr": 0.01},
                                  {"train.embedding_lr": 0.02, "train.lr": 0.001})),
    # The reference's values first (lr 0.1, lr_eta 80), then a gentler item step.
    "pfedrec": Spec("pfedrec", {}, ({}, {"model.lr_eta": 20.0})),
    # The reference's values (lr_args 200, 10 local epochs, batch 2048), then its README's
    # milder sparsity on ML-100K.
    "fedrap": Spec("fedrap", {}, ({}, {"model.mu": 1e-3})),
    "feddmr": Spec("feddmr", {}),
    "feddmr_no_attention": Spec("feddmr", {"model.attention": False}),
    "feddmr_1layer": Spec("feddmr", {"model.layers": 1}),
    # The default is pair attention (history 0, pre-norm; issue 13): the memory readings and
    # the earlier default (post-norm, memory of 50) are ablations.
    "feddmr_memory50": Spec("feddmr", {"model.history_len": 50}),
    "feddmr_post_memory50": Spec("feddmr", {"model.history_len": 50, "model.norm": "post"}),
    "feddmr_mu0": Spec("feddmr", {"train.mu": 0.0}),
    **{f"feddmr_heads{h}": Spec("feddmr", {"model.heads": h}) for h in (1, 2, 8)},
    **{f"feddmr_dim{d}": Spec("feddmr", {"model.dim": d}) for d in (16, 64)},
}
DEFAULT_METHODS = "fedmf,fedncf,pfedrec,fedrap,feddmr,feddmr_no_attention"


def point_tag(point: dict[str, Any]) -> str:
    return ",".join(f"{k.split('.', 1)[1]}={v}" for k, v in point.items()) or "default"


def build_run_config(spec: Spec, point: dict[str, Any], *, dataset: str, seed: int,
                     rounds: int, data_dir: str | None,
                     extra: dict[str, Any]) -> config_lib.RunConfig:
    """The run's config: model defaults, then ``extra`` (--set), ``spec.fixed``, the point."""
    return run_config(spec.model, {**spec.fixed, **point}, dataset=dataset, seed=seed,
                      rounds=rounds, data_dir=data_dir, extra=extra,
                      source=f"compare.py ({spec.model})")


RESULT_COLUMNS = [*(f"{split}_{m}" for split in ("val", "test") for m in METRICS),
                  "best_round", "seconds_per_round"]


def row_of(method: str, seed: int, point: dict[str, Any],
           summary: dict[str, Any] | RunDiverged) -> dict:
    """The CSV row of one run: its summary's figures, or (diverged) empty cells and why."""
    row = {"method": method, "seed": seed, "hyperparams": json.dumps(point, sort_keys=True)}
    if isinstance(summary, RunDiverged):
        return {**row, **diverged_fields(RESULT_COLUMNS, summary.message)}
    row["status"] = "ok"
    for split in ("val", "test"):
        for m in METRICS:
            row[f"{split}_{m}"] = summary[split][m]
    row.update(best_round=summary["best_round"], seconds_per_round=summary["round_seconds"],
               message="")
    return row


def _mean_std(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(dataset: str, rows: list[dict], notes: list[str], command: str) -> str:
    """Mean ± std over seeds of every method's chosen point, plus FedDMR vs the best baseline."""
    notes = [*notes, *(f"{r['method']} seed {r['seed']} diverged: {r['message']}"
                       for r in rows if not is_ok(r))]
    rows = [r for r in rows if is_ok(r)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [f"# {dataset}: comparison", "", f"Command: `{command}`", "",
             "Test metrics at each run's best validation HR@10 round; hyperparameters chosen "
             "on validation HR@10 (first seed); mean ± std over seeds.", "",
             "| method | seeds | chosen | val HR@10 | HR@10 | NDCG@10 | AUC | Precision@10 "
             "| best round | s/round |", "|" + "---|" * 10]
    means: dict[str, dict[str, float]] = {}
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        col = lambda key: [float(r[key]) for r in mine]  # noqa: E731
        means[m] = {k: statistics.mean(col(f"test_{k}")) for k in METRICS}
        lines.append(" | ".join([
            f"| {m}", str(len(mine)), f"`{point_tag(json.loads(mine[0]['hyperparams']))}`",
            _mean_std(col("val_hr@10")), *(_mean_std(col(f"test_{k}")) for k in METRICS),
            _mean_std(col("best_round"), 1), _mean_std(col("seconds_per_round"), 2)]) + " |")
    baselines = [m for m in methods if not m.startswith("feddmr")]
    if "feddmr" in means and baselines:
        lines += ["", "FedDMR relative to the best baseline (test, per metric):", ""]
        for k in METRICS:
            best = max(baselines, key=lambda b: means[b][k])
            rel = (means["feddmr"][k] - means[best][k]) / max(means[best][k], 1e-12)
            lines.append(f"- {k}: {rel:+.2%} vs {best}")
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def plot(path: Path, curves: dict[str, list[list[tuple[int, float]]]], dataset: str) -> bool:
    plt = pyplot("convergence plot")
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, runs in curves.items():
        rounds = sorted({r for run in runs for r, _ in run})
        by_round = [[v for run in runs for r2, v in run if r2 == r] for r in rounds]
        ax.plot(rounds, [statistics.mean(v) for v in by_round], label=method)
    ax.set(xlabel="round", ylabel="validation HR@10", title=f"{dataset}: validation HR@10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def compare_dataset(dataset: str, methods: list[str], seeds: list[int], args, extra,
                    command: str) -> list[dict]:
    out = Path(args.out)
    rows, grid_rows, notes, curves = [], [], [], {}
    for method in methods:
        spec = SPECS[method]
        grid = spec.grid if args.grid == "full" else spec.grid[:1]
        make = lambda point, seed: build_run_config(  # noqa: E731
            spec, point, dataset=dataset, seed=seed, rounds=args.rounds,
            data_dir=args.data_dir, extra=extra)
        run_dir = lambda point, seed: (out / "runs" / dataset / method  # noqa: E731
                                       / point_tag(point) / f"seed{seed}")

        def run(point, seed):
            """The run's summary, or its RunDiverged; a line on stderr either way."""
            name, start = f"{dataset} {method} {point_tag(point)} seed {seed}", time.perf_counter()
            try:
                summary = run_one(make(point, seed), run_dir(point, seed), name=name,
                                  rerun_changed=args.rerun_changed)
            except RunDiverged as e:
                print(f"{name}: diverged ({e.message}); not chosen", file=sys.stderr)
                return e
            print(f"{name}: val hr@10 {summary['val']['hr@10']:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
            return summary

        try:
            tried = []
            for point in grid:
                summary = run(point, seeds[0])
                grid_rows.append(row_of(method, seeds[0], point, summary))
                if not isinstance(summary, RunDiverged):
                    tried.append((point, summary))
        except PrivateStoreTooLarge as e:    # FedRAP's [U, I, d] store above train.max_private_gb
            notes.append(f"{method} skipped: {e}")
            print(f"{dataset} {method} skipped: {e}", file=sys.stderr)
            continue
        if not tried:
            notes.append(f"{method}: every grid point diverged")
            continue
        best_point, best = max(tried, key=lambda ps: ps[1]["val"]["hr@10"])   # first on ties
        summaries = [(seeds[0], best)] + [(seed, run(best_point, seed)) for seed in seeds[1:]]
        rows += [row_of(method, seed, best_point, s) for seed, s in summaries]
        curves[method] = [val_curve(run_dir(best_point, seed)) for seed, s in summaries
                          if not isinstance(s, RunDiverged)]
    write_rows(out / f"compare_{dataset}.csv", rows)
    write_rows(out / f"compare_{dataset}_grid.csv", grid_rows)
    (out / f"compare_{dataset}.md").write_text(markdown(dataset, rows, notes, command))
    if any(is_ok(r) for r in rows):
        plot(out / f"compare_{dataset}_val_hr10.png", curves, dataset)
    return rows


def default_datasets(data_dir: str | None) -> list[str]:
    found = data_dir and (Path(data_dir) / "ml-1m" / "ratings.dat").exists()
    return [*DATASETS, *(["ml-1m"] if found else [])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", help=f"comma list (default: {','.join(DATASETS)}, "
                                      "and ml-1m when <data-dir>/ml-1m/ratings.dat exists)")
    p.add_argument("--seeds", default="3", help="N (seeds 0..N-1) or a comma list (default 3)")
    p.add_argument("--rounds", type=int, default=100, help="rounds per run (default 100)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma list of {', '.join(SPECS)} (default {DEFAULT_METHODS})")
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--grid", choices=("full", "none", "defaults"), default="full",
                   help="full: each method's grid; none/defaults: its first point only")
    p.add_argument("--data-dir", default=None, help="dataset folder (default $FEDDMR_DATA_DIR)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a value for every run, e.g. data.synthetic_users=40 (repeatable)")
    p.add_argument("--rerun-changed", action="store_true",
                   help="delete and train again a finished run whose config changed (without: "
                        "an error naming the run and the fields; data.data_dir/data_path "
                        "spelling is not a change, the data's content is compared)")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in SPECS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(SPECS)})")
    datasets = (args.datasets.split(",") if args.datasets
                else default_datasets(args.data_dir or None))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    enable_compilation_cache()
    command = "python experiments/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        for dataset in datasets:
            compare_dataset(dataset, methods, parse_seeds(args.seeds), args, parse_set(args.set),
                            command)
    except ConfigError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - start:.0f} s; results in {args.out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
