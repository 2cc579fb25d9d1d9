"""The figures of the results page (``results_page.py``), from the committed files of each
dataset's study (``docs/results/study_<dataset>/``): the chosen points' test figures, FedDMR
against the best baseline, the ablations, and the rounds to a validation target.

Choices here read validation only: the chosen points are the study's (``study_chosen.json``,
made on validation), and the **best baseline** of a metric is the baseline (FedMF, FedNCF,
PFedRec, FedRAP; not the popularity floor, not FedDMR's ablations) whose chosen point has the
highest mean *validation* value of that metric over the seeds. Test columns are only reported.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import NamedTuple

from runs_io import is_ok, seed_stats
from study_knobs import ABLATIONS, BASELINES, FLOOR, KNOBS, METHODS
from study_rounds import rounds_rows

CLAIM_METRICS = ("auc", "precision@10")       # the paper's claim: AUC and Precision
PAPER_CLAIM = 2.63                             # % over the best baseline, on average


class StudyFiles(NamedTuple):
    """One dataset's committed study: its rows, curves and choices."""

    dataset: str
    folder: Path
    runs: list[dict]
    curves: list[dict]
    chosen: dict[str, dict]


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_study(folder: Path, dataset: str) -> StudyFiles | None:
    """The study of ``dataset`` in ``folder`` (None without ``study_runs.csv``); only the
    rows whose ``dataset`` column is ``dataset``.

    Raises:
      ValueError: a row without a ``dataset`` column.
    """
    runs = _read_csv(folder / "study_runs.csv")
    if not runs:
        return None
    if any("dataset" not in r for r in runs):
        raise ValueError(f"{folder}/study_runs.csv has no dataset column")
    chosen_path = folder / "study_chosen.json"
    chosen = json.loads(chosen_path.read_text()) if chosen_path.is_file() else {}
    return StudyFiles(dataset, folder, [r for r in runs if r["dataset"] == dataset],
                      [c for c in _read_csv(folder / "study_curves.csv")
                       if c.get("dataset") == dataset], chosen)


def screen_points(study: StudyFiles, method: str) -> int:
    """The number of distinct screen points of ``method`` (per ``study`` column, if any)."""
    return len({(r.get("study", ""), r["point_id"]) for r in study.runs
                if r["method"] == method and r["stage"].startswith("screen")})


def chosen_summary(study: StudyFiles) -> list[dict]:
    """One row per method with a confirmed choice: its point, seeds, rounds, screen points,
    and the mean and std over seeds of every validation and test metric (a choice with a
    diverged seed is left out, as the study never chooses it)."""
    out = []
    order = [m for m in METHODS if m in study.chosen] + [m for m in study.chosen
                                                          if m not in METHODS]
    for method, pick in ((m, study.chosen[m]) for m in order):
        if "point_id" not in pick or "diverged" in pick:
            continue
        runs = [r for r in study.runs if r["method"] == method and r["stage"] == "confirm"
                and r["point_id"] == pick["point_id"]]
        if not runs or not all(is_ok(r) for r in runs):
            continue
        row = {"dataset": study.dataset, "method": method, "point": runs[0]["point"],
               "seeds": len(runs), "rounds": max(int(r["rounds"]) for r in runs),
               "screen_points": pick.get("screen_points", screen_points(study, method))
               if method in KNOBS else ""}
        row.update(seed_stats(runs))
        out.append(row)
    return out


def best_baseline(summary: list[dict], metric: str) -> dict | None:
    """The baseline whose chosen point has the highest mean validation ``metric`` (first on
    ties, in ``study_knobs.BASELINES`` order), or None when no baseline is there."""
    rows = [s for b in BASELINES for s in summary if s["method"] == b]
    return max(rows, key=lambda s: s[f"val_{metric}_mean"]) if rows else None


def claim(summary: list[dict]) -> dict[str, tuple[str, float]] | None:
    """``{metric: (best baseline, FedDMR's relative test difference in %)}`` for the claim's
    metrics, or None without FedDMR or a baseline."""
    mine = next((s for s in summary if s["method"] == "feddmr"), None)
    out = {}
    for m in CLAIM_METRICS:
        best = best_baseline(summary, m)
        if mine is None or best is None:
            return None
        out[m] = (best["method"], 100 * (mine[f"test_{m}_mean"] / best[f"test_{m}_mean"] - 1))
    return out


def claim_average(claims: dict[str, dict[str, tuple[str, float]]]) -> dict[str, float]:
    """Mean over datasets of each claim metric's relative difference, and of both (``all``)."""
    out = {m: statistics.mean(c[m][1] for c in claims.values()) for m in CLAIM_METRICS}
    out["all"] = statistics.mean(c[m][1] for c in claims.values() for m in CLAIM_METRICS)
    return out


def rounds_table(study: StudyFiles) -> list[dict]:
    """``study_rounds.py``'s rows for the chosen points (popularity left out: one round)."""
    picks = {m: p["point_id"] for m, p in study.chosen.items()
             if "point_id" in p and "diverged" not in p and m != FLOOR}
    return rounds_rows(study.dataset, study.curves, picks, BASELINES)


def missing(study: StudyFiles) -> list[str]:
    """What the study lacks, one line each: methods absent, skipped, diverged."""
    lines = []
    for method in (*KNOBS, FLOOR, *ABLATIONS):
        pick = study.chosen.get(method)
        if pick is None:
            lines.append(f"{method}: no confirmed point yet (not run, or not finished)")
        elif "skipped" in pick:
            lines.append(f"{method}: skipped ({pick['skipped'].splitlines()[0][:160]})")
        elif "diverged" in pick:
            lines.append(f"{method}: diverged ({pick['diverged']})")
    return lines
