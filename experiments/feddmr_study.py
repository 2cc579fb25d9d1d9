"""FedDMR study (issue 13): a sequential search on validation, then a multi-seed confirmation.

    python experiments/feddmr_study.py --dry-run                       # the plan and its CPU time
    python experiments/feddmr_study.py --data-dir ../shared/data       # screen, then confirm

Protocol, per method (``--methods``; FedDMR and the baselines get the same procedure):

1. **screen** (``--screen-rounds``, default 30; seed 0): a coordinate-wise search. Start from
   the method's reference values; for each knob of ``KNOBS[method]`` in the stated order, run
   the current point with the knob set to each of its values, keep the best on **validation**
   HR@10 (within ``--near-tie`` of the best: the higher validation AUC; exact ties: the current
   point, then the earlier value), move on. ``--knobs`` reorders or narrows the knobs,
   ``--max-points`` caps the screen points per method (the same budget for every method),
   ``--grid`` replaces the search by an explicit list of points.
2. **confirm** (``--stage confirm``, the default): the ``--top`` best screened points (same
   rule, applied repeatedly) run ``--rounds`` rounds (default 100) with ``--seeds`` seeds
   (default 3); the chosen point is the best on the validation means over seeds.

Choosing only ever sees a table whose test columns were removed (:func:`validation_view`;
:func:`choose` refuses a table with a test column). Test metrics, each run's at its best
validation round, are recorded in the CSV and never read by a choice.

Outputs under ``--out`` (default ``results/feddmr_study``):

* ``study_runs.csv``: one row per run: method, stage, search step and knob, point id, every
  knob value (resolved from the run's config), seed, rounds, best round, validation and test
  HR@10 / NDCG@10 / AUC / Precision@10, median seconds per round, wall seconds;
* ``study_knobs.csv``: each method's knob order and values, as searched;
* ``study_curves.csv``: train loss and validation HR@10 per round of every run;
* ``study_chosen.json``: per method, the chosen point and its validation means (no test);
* ``study_finalists.png``: the confirmed points' curves, if matplotlib is installed;
* ``runs/<method>/<stage>/<point id>/seed<k>/``: ``config.json``, ``metrics.jsonl``,
  ``summary.json`` of each run.

Resumable: a run whose ``summary.json`` holds the same config is reused (the search then
retraces the same path), an interrupted run continues from its last checkpoint
(``experiments/compare.py::run_one``); a second invocation runs nothing new.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (experiments/compare.py: run_one, build_run_config, write_csv)

from feddmr_jax import config as config_lib  # noqa: E402
from feddmr_jax.errors import ConfigError  # noqa: E402
from feddmr_jax.federated.private_store import PrivateStoreTooLarge  # noqa: E402
from feddmr_jax.methods import get_method  # noqa: E402
from feddmr_jax.timing import enable_compilation_cache  # noqa: E402

METRICS = compare.METRICS
SCREEN_SEED = 0
Point = dict[str, Any]        # {"section.key": value} on top of the method's reference values


class Knob(NamedTuple):
    """One coordinate of the search.

    ``values``: each either a value of ``key``, or a dict of settings (a compound value, e.g.
    an optimizer with its learning rates). With ``scale`` the values are factors on the
    current point's value of ``key`` (learning rates, whose scale depends on the optimizer).
    """

    key: str
    values: tuple[Any, ...]
    scale: bool = False


_SGD = {"train.optimizer": "sgd", "train.lr": 0.1}
# The search order and values (issue 13). The layer form and the attention input first: the
# post-norm model underfits (issue 13: train loss 0.486 with attention against 0.411 without, at
# 40 rounds) and they set the cost of every later point (ml-100k s/round on the idle 2-core CPU:
# history 50, 2 layers 18.8; history 0, 2 layers 11.4; history 10, 1 layer 7.1; no attention
# 1.4), then the training dynamics (every curve of the issue was still rising), the
# aggregation, the architecture's widths, and last the evaluation mode. SGD's learning rates are
# guesses (a mean loss gives each item row ~1/batch of the gradient, hence the large embedding
# lr); the lr knobs rescale whichever optimizer is current.
FEDDMR_KNOBS = (
    Knob("model.norm", ("post", "pre")),       # pre: zero-init branches, starts as no-attention
    Knob("model.history_len", (0, 10, 50)),    # 0: pair attention over [user, item] only
    Knob("model.layers", (1, 2)),
    Knob("train.embedding_lr", (0.3, 1.0, 3.0), scale=True),   # embeddings (items, user)
    Knob("train.lr", (0.3, 1.0, 3.0), scale=True),             # attention layers + head
    Knob("train.local_epochs", (1, 2, 5)),
    Knob("train.mu", (0.0, 1e-3, 1e-2, 1e-1)),
    Knob("train.prox_scope", ("all", "dense")),
    Knob("train.optimizer", ("adam", {**_SGD, "train.embedding_lr": 10.0},
                             {**_SGD, "train.embedding_lr": 100.0})),
    Knob("train.batch_size", (64, 256, 1024)),
    Knob("model.heads", (1, 2, 4, 8)),
    Knob("model.dim", (16, 32, 64)),
    Knob("model.ffn_dim", (None, 32, 128)),    # None: 2 * dim
    Knob("model.dropout", (0.0, 0.1, 0.2)),
    Knob("model.init_scale", (0.03, 0.1, 0.3)),
    Knob("train.table_mean", ("touched", "participants")),
    Knob("train.eval_mode", ("global", "local")),
)
# Baselines: the same procedure; each list holds the reference values (methods/*.py) and the
# points of experiments/compare.py's grid.
KNOBS: dict[str, tuple[Knob, ...]] = {
    "feddmr": FEDDMR_KNOBS,
    "fedmf": (Knob("train.embedding_lr", (0.02, 0.05, 0.1, 0.2, 0.5)),
              Knob("train.local_epochs", (1, 2, 5)), Knob("train.batch_size", (64, 256, 1024)),
              Knob("train.mu", (0.0, 1e-3, 1e-2)), Knob("model.dim", (16, 32, 64)),
              Knob("model.init_scale", (0.03, 0.1, 0.3)),
              Knob("train.table_mean", ("touched", "participants"))),
    "fedncf": (Knob("train.embedding_lr", (0.02, 0.05, 0.1, 0.2, 0.5)),
               Knob("train.lr", (0.001, 0.003, 0.01, 0.03)),
               Knob("train.local_epochs", (1, 2, 5)), Knob("train.batch_size", (64, 256, 1024)),
               Knob("train.mu", (0.0, 1e-3, 1e-2)), Knob("model.dim", (16, 32, 64)),
               Knob("train.table_mean", ("touched", "participants"))),
    "pfedrec": (Knob("model.lr", (0.03, 0.1, 0.3)), Knob("model.lr_eta", (20.0, 40.0, 80.0, 160.0)),
                Knob("train.local_epochs", (1, 2, 5)), Knob("train.batch_size", (64, 256, 1024)),
                Knob("model.dim", (16, 32, 64)), Knob("model.init_scale", (0.1, 1.0)),
                Knob("train.table_mean", ("participants", "touched")),
                Knob("train.eval_mode", ("local", "global"))),
    "fedrap": (Knob("model.lr_args", (50.0, 100.0, 200.0, 400.0)),
               Knob("model.lr_network", (0.1, 0.5, 1.0)), Knob("model.mu", (0.0, 1e-3, 0.1)),
               Knob("model.lam", (0.01, 0.1, 1.0)), Knob("train.local_epochs", (5, 10)),
               Knob("train.batch_size", (512, 2048)), Knob("model.weight_decay", (0.0, 1e-4)),
               Knob("model.dim", (16, 32, 64))),
}

# Seconds per ml-100k round (943 clients, evaluation excluded) on the project's 2-core CPU, at
# each method's reference local_epochs: FedDMR 18.8 (attention, history 50, 2 layers), 11.4
# (history 0) and 7.1 (history 10, 1 layer; bench_round --skip-loop --rounds 1, idle machine,
# commit ed12213, pre-norm) and 1.36 (no attention, benchmarks/RESULTS.md); PFedRec 0.81,
# FedMF 1.12, FedNCF 1.87, FedRAP 5.34 (10 epochs) from docs/results.md (100-round medians).
# History 10 with 2 layers is 2 x (7.1 - 1.36) + 1.36, an interpolation.
S_PER_ROUND = {"feddmr": 18.8, "feddmr_history0": 11.4, "feddmr_history10": 12.8,
               "feddmr_no_attention": 1.36, "pfedrec": 0.81, "fedmf": 1.12, "fedncf": 1.87,
               "fedrap": 5.34}


def estimate_s_per_round(method: str, cfg: config_lib.RunConfig,
                         reference: config_lib.RunConfig) -> float:
    """A rough ml-100k CPU estimate: the table, times epochs and (FedDMR) layers; dim ignored."""
    epochs = cfg.train.local_epochs / reference.train.local_epochs
    if method != "feddmr":
        return S_PER_ROUND[method] * epochs
    plain = S_PER_ROUND["feddmr_no_attention"]
    if not cfg.model.num_layers:
        return plain * epochs
    h = cfg.model.history_len
    full = S_PER_ROUND["feddmr" if h > 10 else f"feddmr_history{0 if h == 0 else 10}"]
    return (plain + (full - plain) * cfg.model.num_layers / 2) * epochs


def _round6(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def resolved(cfg: config_lib.RunConfig, key: str) -> Any:
    """The value ``cfg`` holds for ``"section.key"`` (``train.embedding_lr`` None: ``lr``)."""
    section, _, name = key.partition(".")
    value = getattr(getattr(cfg, section), name)
    if key == "train.embedding_lr" and value is None:
        return cfg.train.lr
    if key == "train.eval_mode" and value in (None, "default"):
        return get_method(cfg.train.model).eval_mode
    return value


def settings(knob: Knob, value: Any, current: config_lib.RunConfig) -> Point:
    """The settings one knob value stands for, at the current point's config."""
    if isinstance(value, dict):
        return dict(value)
    if knob.scale:
        return {knob.key: _round6(resolved(current, knob.key) * value)}
    return {knob.key: value}


def canonical(point: Point, reference: config_lib.RunConfig) -> Point:
    """``point`` without the settings equal to the reference values, keys sorted."""
    return {k: _round6(v) for k, v in sorted(point.items()) if v != resolved(reference, k)}


def point_id(point: Point) -> str:
    digest = hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:10]
    return f"p{digest}" if point else "reference"


def point_tag(point: Point) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items()) or "reference"


# ----------------------------------------------------------------------------- choosing

def validation_view(rows: list[dict]) -> list[dict]:
    """The rows without any test column: the only table a choice may read."""
    return [{k: v for k, v in r.items() if not k.startswith("test")} for r in rows]


def choose(rows: list[dict], near_tie: float) -> int:
    """Index of the best row: validation HR@10; within ``near_tie`` of it, validation AUC;
    exact ties, the first row.

    Raises:
      ValueError: a row holds a test column (pass :func:`validation_view`'s table).
    """
    leaked = sorted({k for r in rows for k in r if k.startswith("test")})
    if leaked:
        raise ValueError(f"choose() was given test columns {leaked}; use validation_view()")
    best = max(float(r["val_hr@10"]) for r in rows)
    near = [i for i, r in enumerate(rows) if float(r["val_hr@10"]) >= best - near_tie]
    return max(near, key=lambda i: float(rows[i]["val_auc"]))


def top_k(rows: list[dict], k: int, near_tie: float) -> list[int]:
    """Indices of the ``k`` best rows, by :func:`choose` applied repeatedly."""
    left, order = list(range(len(rows))), []
    while left and len(order) < k:
        order.append(left.pop(choose([rows[i] for i in left], near_tie)))
    return order


# ----------------------------------------------------------------------------- running

class Study:
    """Runs (or reuses) the points of one method and keeps one CSV row per run."""

    def __init__(self, method: str, args: argparse.Namespace, extra: Point) -> None:
        self.method, self.args, self.extra = method, args, extra
        self.reference = self.config({}, seed=SCREEN_SEED, rounds=args.screen_rounds)
        self.rows: list[dict] = []
        self._done: dict[tuple[str, str, int], dict] = {}

    def config(self, point: Point, *, seed: int, rounds: int) -> config_lib.RunConfig:
        return compare.build_run_config(
            compare.Spec(self.method, {}), point, dataset=self.args.dataset, seed=seed,
            rounds=rounds, data_dir=self.args.data_dir, extra=self.extra)

    def run_dir(self, stage: str, point: Point, seed: int) -> Path:
        return Path(self.args.out) / "runs" / self.method / stage / point_id(point) / f"seed{seed}"

    def run(self, point: Point, *, stage: str, seed: int, rounds: int, step: int = 0,
            knob: str = "") -> dict:
        """Trains (or reuses) one run; returns its CSV row (test columns included)."""
        key = (stage, point_id(point), seed)
        if key in self._done:
            return self._done[key]
        cfg = self.config(point, seed=seed, rounds=rounds)
        start = time.perf_counter()
        summary = compare.run_one(cfg, self.run_dir(stage, point, seed))
        row = {"method": self.method, "stage": stage, "step": step, "knob": knob,
               "point_id": point_id(point), "point": point_tag(point),
               **{k: resolved(cfg, k) for k in knob_keys(self.method, [point])},
               "seed": seed, "rounds": rounds, "best_round": summary["best_round"],
               **{f"val_{m}": summary["val"][m] for m in METRICS},
               **{f"test_{m}": summary["test"][m] for m in METRICS},
               "s_per_round": summary["round_seconds"], "wall_s": summary["total_seconds"]}
        print(f"{self.method} {stage} {point_id(point)} ({point_tag(point)}) seed {seed}: val "
              f"hr@10 {row['val_hr@10']:.4f} auc {row['val_auc']:.4f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        self._done[key] = row
        self.rows.append(row)
        return row

    def screen(self, points: list[Point] | None) -> list[Point]:
        """The screen stage; returns the screened points, in the order first run."""
        run = lambda p, step=0, knob="": self.run(  # noqa: E731
            p, stage=f"screen{self.args.screen_rounds}", seed=SCREEN_SEED,
            rounds=self.args.screen_rounds, step=step, knob=knob)
        if points is not None:
            for p in points:
                self.config(p, seed=SCREEN_SEED, rounds=1)       # a bad key: ConfigError
            canon = [canonical(p, self.reference) for p in points]
            points = [p for i, p in enumerate(canon) if p not in canon[:i]]   # no duplicates
            for p in points:
                run(p, knob="grid")
            return points
        config_of = lambda p: self.config(  # noqa: E731
            p, seed=SCREEN_SEED, rounds=self.args.screen_rounds)
        return sequential_search(knobs_for(self.method, self.args.knobs), self.reference,
                                 config_of, run,
                                 self.args.near_tie, self.args.max_points)

    def confirm(self, screened: list[Point]) -> Point:
        """The confirm stage; returns the chosen point."""
        val = validation_view([self._done[(f"screen{self.args.screen_rounds}", point_id(p),
                                           SCREEN_SEED)] for p in screened])
        finalists = [screened[i] for i in top_k(val, self.args.top, self.args.near_tie)]
        means = []
        for p in finalists:
            runs = validation_view([self.run(p, stage=f"confirm{self.args.rounds}", seed=s,
                                             rounds=self.args.rounds, knob="confirm")
                                    for s in self.args.seeds])
            means.append({f"val_{m}": statistics.mean(float(r[f"val_{m}"]) for r in runs)
                          for m in METRICS})
        chosen = choose(means, self.args.near_tie)
        return {"point_id": point_id(finalists[chosen]), "settings": finalists[chosen],
                "validation_mean": means[chosen], "seeds": self.args.seeds,
                "rounds": self.args.rounds,
                "finalists": [point_id(p) for p in finalists]}


def sequential_search(knobs: tuple[Knob, ...], reference: config_lib.RunConfig,
                      config_of: Callable[[Point], config_lib.RunConfig],
                      run: Callable[..., dict], near_tie: float,
                      max_points: int | None = None) -> list[Point]:
    """Coordinate-wise search; returns every point run, in order.

    Args:
      knobs: the search order.
      reference: the method's reference config (settings equal to it are dropped).
      config_of: a point's config (to resolve ``scale`` knobs at the current point).
      run: ``run(point, step, knob) -> row`` (a row may hold test columns; only its
        :func:`validation_view` is read).
      near_tie: validation HR@10 margin within which validation AUC decides.
      max_points: stop once this many distinct points have run (None: no bound).
    """
    current: Point = {}
    seen = [current]
    run(current, 0, "reference")
    for step, knob in enumerate(knobs, 1):
        candidates = [current]
        for value in knob.values:
            p = canonical({**current, **settings(knob, value, config_of(current))}, reference)
            if p not in candidates:
                candidates.append(p)
        if max_points is not None:              # keep the first new points that fit
            room = max(0, max_points - len(seen))
            fresh = [p for p in candidates if p not in seen][:room]
            candidates = [p for p in candidates if p in seen or p in fresh]
        rows = [run(p, step, knob.key) for p in candidates]
        seen += [p for p in candidates if p not in seen]
        current = candidates[choose(validation_view(rows), near_tie)]
    return seen


def knobs_for(method: str, order: str | None) -> tuple[Knob, ...]:
    """``KNOBS[method]``, or with ``--knobs`` those of its knobs named there, in that order."""
    if not order:
        return KNOBS[method]
    keys = [k.strip() for k in order.split(",") if k.strip()]
    known = {k.key: k for k in KNOBS[method]}
    return tuple(known[k] for k in keys if k in known)


def knob_keys(method: str, points: list[Point]) -> list[str]:
    """Every key the method's knobs (compound values included) or ``points`` set."""
    keys = [knob.key for knob in KNOBS[method]]
    keys += [k for knob in KNOBS[method] for v in knob.values if isinstance(v, dict) for k in v]
    keys += [k for p in points for k in p]
    return list(dict.fromkeys(keys))


# ----------------------------------------------------------------------------- outputs

def write_rows(path: Path, rows: list[dict]) -> None:
    """CSV of ``rows``; columns: the union, in order of first appearance."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def knob_rows(methods: list[str], order: str | None) -> list[dict]:
    return [{"method": m, "order": i, "knob": k.key, "scale": k.scale,
             "values": json.dumps(list(k.values))}
            for m in methods for i, k in enumerate(knobs_for(m, order), 1)]


def curve_rows(out: Path, rows: list[dict]) -> list[dict]:
    """Train loss and validation HR@10 per round of every run (from its metrics.jsonl)."""
    curves = []
    for r in rows:
        path = (out / "runs" / r["method"] / r["stage"] / r["point_id"] / f"seed{r['seed']}"
                / "metrics.jsonl")
        for rec in map(json.loads, path.read_text().splitlines()):
            curves.append({"method": r["method"], "stage": r["stage"],
                           "point_id": r["point_id"], "seed": r["seed"],
                           "round": rec["round"], "train_loss": rec["train_loss"],
                           "val_hr@10": rec["val"]["hr@10"] if "val" in rec else ""})
    return curves


def plot_finalists(path: Path, curves: list[dict]) -> bool:
    """Mean over seeds of train loss and validation HR@10 per round, per confirmed point."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install .[plot]): no finalists plot",
              file=sys.stderr)
        return False
    groups: dict[str, dict[int, list[dict]]] = {}
    for c in curves:
        if c["stage"].startswith("confirm"):
            groups.setdefault(f"{c['method']} {c['point_id']}", {}).setdefault(
                c["round"], []).append(c)
    if not groups:
        return False
    fig, (loss_ax, hr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, by_round in groups.items():
        rounds = sorted(by_round)
        loss_ax.plot(rounds, [statistics.mean(c["train_loss"] for c in by_round[r])
                              for r in rounds], label=label)
        val = [(r, [c["val_hr@10"] for c in by_round[r] if c["val_hr@10"] != ""])
               for r in rounds]
        hr_ax.plot(*zip(*[(r, statistics.mean(v)) for r, v in val if v]), label=label)
    loss_ax.set(xlabel="round", ylabel="train loss", title="finalists: train loss")
    hr_ax.set(xlabel="round", ylabel="validation HR@10", title="finalists: validation HR@10")
    for ax in (loss_ax, hr_ax):
        ax.grid(alpha=0.3)
    hr_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- plan

def plan(method: str, args: argparse.Namespace, extra: Point,
         grid: list[Point] | None) -> list[Point]:
    """The screen points of a first pass (each knob varied at the reference; the search
    then varies them around the points it keeps: as many points, different values)."""
    study = Study(method, args, extra)
    if grid is not None:
        for p in grid:
            study.config(p, seed=SCREEN_SEED, rounds=args.screen_rounds)
        return [canonical(p, study.reference) for p in grid]
    flat = {"val_hr@10": 0.0, "val_auc": 0.0}
    return sequential_search(
        knobs_for(method, args.knobs), study.reference,
        lambda p: study.config(p, seed=SCREEN_SEED, rounds=args.screen_rounds),
        lambda p, step, knob: (study.config(p, seed=SCREEN_SEED, rounds=1), flat)[1],
        args.near_tie, args.max_points)


def dry_run(methods: list[str], args: argparse.Namespace, extra: Point,
            grids: dict[str, list[Point]]) -> None:
    """Prints the planned points and the estimated CPU time (ml-100k figures)."""
    total = 0.0
    for method in methods:
        study = Study(method, args, extra)
        points = plan(method, args, extra, grids.get(method))
        s = [estimate_s_per_round(method, study.config(p, seed=0, rounds=1), study.reference)
             for p in points]
        screen = sum(s) * args.screen_rounds
        confirm = (estimate_s_per_round(method, study.reference, study.reference)
                   * args.rounds * len(args.seeds) * min(args.top, len(points)))
        total += screen + confirm
        print(f"{method}: {len(points)} screen points x {args.screen_rounds} rounds "
              f"(~{screen / 3600:.1f} h), confirm {min(args.top, len(points))} x "
              f"{len(args.seeds)} seeds x {args.rounds} rounds (~{confirm / 3600:.1f} h at the "
              "reference's s/round)")
        for p, sec in zip(points, s):
            print(f"  {point_id(p)}  ~{sec:5.1f} s/round  {point_tag(p)}")
    print(f"estimated CPU time: ~{total / 3600:.1f} h on the project's 2-core CPU (ml-100k "
          "s/round of benchmarks/RESULTS.md and docs/results.md, evaluation excluded; "
          "other datasets differ)")


# ----------------------------------------------------------------------------- main

def _grids(text: str | None, methods: list[str]) -> dict[str, list[Point]]:
    """``--grid``: JSON (or a .json file) of a list of points, or {method: [points]}."""
    if text is None:
        return {}
    raw = json.loads(Path(text).read_text() if text.endswith(".json") else text)
    if isinstance(raw, list):
        raw = {m: raw for m in methods}
    if not isinstance(raw, dict) or not all(
            isinstance(v, list) and all(isinstance(p, dict) for p in v) for v in raw.values()):
        raise ConfigError("--grid must be a list of {\"section.key\": value} points, or "
                          "{method: [points]}")
    return raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(KNOBS),
                   help=f"comma list of {', '.join(KNOBS)} (default: all)")
    p.add_argument("--dataset", default="ml-100k", help="data.dataset (default ml-100k)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default $FEDDMR_DATA_DIR)")
    p.add_argument("--out", default="results/feddmr_study", help="output folder")
    p.add_argument("--stage", choices=("screen", "confirm"), default="confirm",
                   help="screen: the search only; confirm: the search, then the finalists")
    p.add_argument("--screen-rounds", type=int, default=30, help="rounds per screen run (30)")
    p.add_argument("--rounds", type=int, default=100, help="rounds per confirm run (100)")
    p.add_argument("--seeds", default="3", help="confirm seeds: N (0..N-1) or a comma list")
    p.add_argument("--top", type=int, default=3, help="screened points confirmed (3)")
    p.add_argument("--near-tie", type=float, default=0.002,
                   help="validation HR@10 margin within which validation AUC decides (0.002)")
    p.add_argument("--max-points", type=int, default=None,
                   help="at most this many screen points per method (the same budget for all; "
                        "the knobs reached after the budget keep their current values)")
    p.add_argument("--knobs", default=None,
                   help="comma list of knob keys: search only these, in this order (a method "
                        "skips the keys it has no knob for), e.g. model.history_len,train.lr")
    p.add_argument("--grid", default=None,
                   help="explicit screen points instead of the search: JSON (or a .json file) "
                        "of [{\"section.key\": value}, ...] or {method: [...]}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a value for every run, e.g. data.synthetic_users=40 (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the planned points and the estimated CPU time; train nothing")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in KNOBS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)} (known: {', '.join(KNOBS)})")
    args.seeds = compare.parse_seeds(args.seeds)
    extra = compare.parse_set(args.set)
    try:
        grids = _grids(args.grid, methods)
        if args.dry_run:
            dry_run(methods, args, extra, grids)
            return 0
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        enable_compilation_cache()
        start, rows, chosen = time.perf_counter(), [], {}
        for method in methods:
            study = Study(method, args, extra)
            try:
                screened = study.screen(grids.get(method))
                if args.stage == "confirm":
                    chosen[method] = study.confirm(screened)
            except PrivateStoreTooLarge as e:   # FedRAP's [U, I, d] store
                chosen[method] = {"skipped": str(e)}
                print(f"{method} skipped: {e}", file=sys.stderr)
            rows += study.rows
    except (ConfigError, json.JSONDecodeError, OSError) as e:
        print(f"feddmr_study.py: error: {e}", file=sys.stderr)
        return 2
    if rows:
        write_rows(out / "study_runs.csv", rows)
        write_rows(out / "study_knobs.csv", knob_rows(methods, args.knobs))
        curves = curve_rows(out, rows)
        write_rows(out / "study_curves.csv", curves)
        plot_finalists(out / "study_finalists.png", curves)
    if chosen:
        (out / "study_chosen.json").write_text(json.dumps(chosen, indent=2) + "\n")
    print(f"done in {time.perf_counter() - start:.0f} s; results in {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
