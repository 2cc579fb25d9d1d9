"""One method of the FedDMR study on one dataset: its screen, its confirmation, and the
confirmation of a fixed point (the popularity floor, FedDMR's ablations).

:class:`Study` runs (or reuses, resumes, extends: ``run_folder.run_one``) each run and keeps
one ``study_runs.csv`` row per run; choices read :func:`study_search.validation_view` only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import run_folder
from feddmr_jax import config as config_lib
from runs_io import METRICS, diverged_fields, is_ok, run_config
from study_knobs import (ABLATIONS, FLOOR, Point, canonical, floor_extra, knob_keys, knobs_for,
                         model_of, resolved)
from study_search import (choose, point_id, point_tag, sequential_search, top_k,
                          validation_view)

SCREEN_SEED = 0
CONFIRM = "confirm"          # the confirmation's stage (its rounds: the rows' ``rounds``)
RESULT_COLUMNS = ["best_round", *(f"{s}_{m}" for s in ("val", "test") for m in METRICS),
                  "s_per_round", "wall_s"]


def screen_stage(args: argparse.Namespace) -> str:
    return f"screen{args.screen_rounds}"


class Study:
    """Runs (or reuses) the points of one method on one dataset; one CSV row per run.

    Args:
      method: a name of ``study_knobs.METHODS`` (an ablation trains ``feddmr`` with its
        fixed settings on top of the point it is given).
      args: the study's flags (``dataset``, ``data_dir``, ``runs``, ``screen_rounds``,
        ``seeds``, ``top``, ``near_tie``, ``max_points``, ``knobs``, ``rerun_changed``).
      extra: ``--set`` values (for the floor, only those it can take).
    """

    def __init__(self, method: str, args: argparse.Namespace, extra: Point) -> None:
        self.method, self.model, self.args = method, model_of(method), args
        self.fixed = ABLATIONS.get(method, {})
        self.extra = floor_extra(extra) if method == FLOOR else extra
        self.reference = self.config({}, seed=SCREEN_SEED, rounds=args.screen_rounds)
        self._rows: dict[tuple[str, str, int], dict] = {}
        self._done: dict[tuple[str, str, int, int], dict] = {}

    @property
    def rows(self) -> list[dict]:
        """One row per run, in the order first run (an extended run: its latest row)."""
        return list(self._rows.values())

    def config(self, point: Point, *, seed: int, rounds: int) -> config_lib.RunConfig:
        return run_config(self.model, {**point, **self.fixed}, dataset=self.args.dataset,
                          seed=seed, rounds=rounds, data_dir=self.args.data_dir,
                          extra=self.extra, source=f"feddmr_study.py ({self.method})")

    def run_dir(self, stage: str, point: Point, seed: int) -> Path:
        return Path(self.args.runs) / self.method / stage / point_id(point) / f"seed{seed}"

    def run(self, point: Point, *, stage: str, seed: int, rounds: int, step: int = 0,
            knob: str = "") -> dict:
        """Trains (or reuses) one run; returns its CSV row (test columns included; a
        diverged run's row has ``status`` diverged, empty figures and the message)."""
        key = (stage, point_id(point), seed)
        if (*key, rounds) in self._done:
            return self._done[(*key, rounds)]
        cfg = self.config(point, seed=seed, rounds=rounds)
        start, name = time.perf_counter(), f"{self.method} {stage} {point_id(point)} seed {seed}"
        shown = {**point, **self.fixed}
        row = {"dataset": self.args.dataset, "method": self.method, "stage": stage,
               "step": step, "knob": knob, "point_id": point_id(point),
               "point": point_tag(shown),
               **{k: resolved(cfg, k) for k in knob_keys(self.method, [shown])
                  if self.method != FLOOR},
               "seed": seed, "rounds": rounds}
        try:
            summary = run_folder.run_one(cfg, self.run_dir(stage, point, seed), name=name,
                                         rerun_changed=self.args.rerun_changed,
                                         keep_checkpoint=stage == CONFIRM,
                                         extend=stage == CONFIRM)
        except run_folder.RunDiverged as e:
            row.update(diverged_fields(RESULT_COLUMNS, e.message))
            print(f"{name} ({point_tag(shown)}): diverged ({e.message}); never chosen",
                  file=sys.stderr)
        else:
            row.update({"status": "ok", "best_round": summary["best_round"],
                        **{f"val_{m}": summary["val"][m] for m in METRICS},
                        **{f"test_{m}": summary["test"][m] for m in METRICS},
                        "s_per_round": summary["round_seconds"],
                        "wall_s": summary["total_seconds"], "message": ""})
            print(f"{name} ({point_tag(shown)}): val hr@10 {row['val_hr@10']:.4f} auc "
                  f"{row['val_auc']:.4f} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr)
        self._done[(*key, rounds)] = row
        if key in self._rows and self._rows[key]["rounds"] > rounds:
            return row                   # a shorter view never replaces an extended row
        self._rows[key] = row
        return row

    def screen(self, points: list[Point] | None, starts: list[Point]) -> list[Point]:
        """The screen stage (``points``: an explicit grid instead of the search); returns the
        screened points, in the order first run."""
        stage, rounds = screen_stage(self.args), self.args.screen_rounds
        run = lambda p, step=0, knob="": self.run(  # noqa: E731
            p, stage=stage, seed=SCREEN_SEED, rounds=rounds, step=step, knob=knob)
        if points is not None:
            for p in points:
                self.config(p, seed=SCREEN_SEED, rounds=1)       # a bad key: ConfigError
            canon = [canonical(p, self.reference) for p in points]
            points = [p for i, p in enumerate(canon) if p not in canon[:i]]   # no duplicates
            for p in points:
                run(p, knob="grid")
            return points
        config_of = lambda p: self.config(p, seed=SCREEN_SEED, rounds=rounds)  # noqa: E731
        return sequential_search(knobs_for(self.method, self.args.knobs), self.reference,
                                 config_of, run, self.args.near_tie, self.args.max_points,
                                 starts)

    def seeds_mean(self, point: Point, rounds: int, knob: str) -> dict:
        """Runs ``point`` with every confirmation seed; the validation means (or, a seed
        diverged, ``{"status": "diverged"}``)."""
        runs = validation_view([self.run(point, stage=CONFIRM, seed=s, rounds=rounds,
                                         knob=knob) for s in self.args.seeds])
        if not all(is_ok(r) for r in runs):      # a seed diverged: never chosen
            return {"status": "diverged"}
        return {f"val_{m}": statistics.mean(float(r[f"val_{m}"]) for r in runs)
                for m in METRICS}

    def confirm(self, screened: list[Point], rounds: int) -> dict:
        """The confirm stage: the ``--top`` screened points with every seed; returns the
        choice (``study_chosen.json``'s entry)."""
        stage = screen_stage(self.args)
        val = validation_view([self._done[(stage, point_id(p), SCREEN_SEED,
                                           self.args.screen_rounds)] for p in screened])
        finalists = [screened[i] for i in top_k(val, self.args.top, self.args.near_tie)]
        if not finalists:
            return {"diverged": f"all {len(screened)} screened points diverged"}
        means = [self.seeds_mean(p, rounds, CONFIRM) for p in finalists]
        diverged = [point_id(p) for p, m in zip(finalists, means) if not is_ok(m)]
        if len(diverged) == len(finalists):
            return {"diverged": "every finalist diverged on some seed", "finalists": diverged}
        chosen = choose(means, self.args.near_tie)
        return {"point_id": point_id(finalists[chosen]), "settings": finalists[chosen],
                "validation_mean": means[chosen], "seeds": self.args.seeds, "rounds": rounds,
                "screen_points": len(screened),
                "finalists": [point_id(p) for p in finalists],
                **({"diverged_finalists": diverged} if diverged else {})}

    def confirm_point(self, point: Point, rounds: int, knob: str) -> dict:
        """A fixed point (the floor's reference, an ablation at FedDMR's choice) with every
        seed: its ``study_chosen.json`` entry (no choice is made)."""
        mean = self.seeds_mean(point, rounds, knob)
        if not is_ok(mean):
            return {"diverged": "a seed diverged", "point_id": point_id(point)}
        return {"point_id": point_id(point), "settings": {**point, **self.fixed},
                "validation_mean": mean, "seeds": self.args.seeds, "rounds": rounds}
