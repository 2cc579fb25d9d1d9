"""Markdown tables of a FedDMR study (experiments/feddmr_study.py's ``study_runs.csv``).

    python experiments/study_table.py results/feddmr_study [--csv docs/results/feddmr_study_test.csv]
    python experiments/study_table.py results/feddmr_study results/feddmr_study_s5   # a follow-up

Prints, per method, the screen points in the order they ran (validation figures only, as the
search saw them; a diverged run says so), then the confirmed points' **test** figures at the
best validation round, mean ± std over seeds (a point with a diverged seed is left out), and
FedDMR's relative difference to the best baseline on each metric (the paper's claim is about
AUC and Precision@10). This script reports; it chooses nothing
(the choice is the study's, on validation: ``study_chosen.json``).

Several folders: a later folder's rows of a method replace the earlier folders' rows of that
method (a follow-up study of one method keeps the others' runs). The relative difference
compares each method's **chosen** point (``study_chosen.json`` of the folder its rows come
from; without that file a method must have exactly one confirmed point), never the best of
several confirmed points on test.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs_io import METRICS, is_ok, seed_stats  # noqa: E402  (the study's CSV columns, its status)


def read_rows(folder: Path) -> list[dict]:
    path = folder / "study_runs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no study_runs.csv (run experiments/feddmr_study.py)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_studies(folders: list[Path]) -> tuple[list[dict], dict[str, str]]:
    """Rows of several studies (a later folder's method replaces that method's rows) and
    each method's chosen point id (``study_chosen.json`` of the folder its rows come from)."""
    rows: list[dict] = []
    chosen: dict[str, str] = {}
    for folder in folders:
        new = read_rows(folder)
        methods = {r["method"] for r in new}
        rows = [r for r in rows if r["method"] not in methods] + new
        picks_path = folder / "study_chosen.json"
        picks = json.loads(picks_path.read_text()) if picks_path.is_file() else {}
        for method in methods:
            chosen.pop(method, None)
            if "point_id" in picks.get(method, {}):
                chosen[method] = picks[method]["point_id"]
    return rows, chosen


def screen_table(rows: list[dict]) -> str:
    lines = ["| method | step | knob | point | val HR@10 | val AUC | best round | s/round |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["stage"].startswith("screen") and not is_ok(r):
            lines.append(f"| {r['method']} | {r['step']} | {r['knob']} | `{r['point']}` | "
                         f"diverged | | | |")
        elif r["stage"].startswith("screen"):
            lines.append(f"| {r['method']} | {r['step']} | {r['knob']} | `{r['point']}` | "
                         f"{float(r['val_hr@10']):.4f} | {float(r['val_auc']):.4f} | "
                         f"{r['best_round']} | {float(r['s_per_round']):.2f} |")
    return "\n".join(lines)


def confirm_summary(rows: list[dict]) -> list[dict]:
    """One row per (method, confirmed point): mean and std over seeds of val and test.
    A point with a diverged seed is left out (the study never chooses it)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    bad = {(r["method"], r["point_id"]) for r in rows
           if r["stage"].startswith("confirm") and not is_ok(r)}
    for r in rows:
        if r["stage"].startswith("confirm") and (r["method"], r["point_id"]) not in bad:
            groups.setdefault((r["method"], r["point_id"]), []).append(r)
    out = []
    for (method, pid), runs in groups.items():
        row = {"method": method, "point_id": pid, "point": runs[0]["point"],
               "seeds": len(runs), "rounds": runs[0]["rounds"],
               "best_rounds": " ".join(r["best_round"] for r in runs),
               "s_per_round": statistics.median(float(r["s_per_round"]) for r in runs)}
        row.update(seed_stats(runs))
        out.append(row)
    return out


def chosen_rows(summary: list[dict], chosen: dict[str, str]) -> list[dict]:
    """Each method's chosen confirmed point (its only one, or the one ``chosen`` names):
    the comparison is between the points each study chose on validation, never the best
    of several confirmed points on test."""
    out = []
    for method in dict.fromkeys(s["method"] for s in summary):
        rows = [s for s in summary if s["method"] == method]
        if method in chosen:
            rows = [s for s in rows if s["point_id"] == chosen[method]]
        elif len(rows) > 1:
            raise ValueError(f"{len(rows)} confirmed {method} points and no study_chosen.json "
                             f"naming one: which to compare is the study's choice")
        out += rows
    return out


def test_table(summary: list[dict], target: str = "feddmr",
               chosen: dict[str, str] | None = None) -> str:
    cols = " | ".join(f"test {m.upper()}" for m in METRICS)
    lines = [f"| method | point | seeds | {cols} | val HR@10 | s/round |",
             "|---|---|---|" + "---|" * len(METRICS) + "---|---|"]
    for s in summary:
        cells = " | ".join(f"{s[f'test_{m}_mean']:.4f} ± {s[f'test_{m}_std']:.4f}"
                           for m in METRICS)
        lines.append(f"| {s['method']} | `{s['point']}` | {s['seeds']} | {cells} | "
                     f"{s['val_hr@10_mean']:.4f} | {s['s_per_round']:.2f} |")
    picked = chosen_rows(summary, chosen or {})
    mine = [s for s in picked if s["method"] == target]
    others = [s for s in picked if s["method"] != target]
    if mine and others:
        lines.append("")
        for m in METRICS:
            best = max(others, key=lambda s: s[f"test_{m}_mean"])
            rel = mine[0][f"test_{m}_mean"] / best[f"test_{m}_mean"] - 1.0
            lines.append(f"- {target} (`{mine[0]['point']}`) vs the best baseline on test "
                         f"{m.upper()} ({best['method']}): {100 * rel:+.2f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", metavar="folder",
                   help="the study's --out folder; several: later ones replace a method's rows")
    p.add_argument("--csv", default=None, help="also write the confirm summary to this CSV")
    args = p.parse_args(argv)
    try:
        rows, chosen = read_studies([Path(f) for f in args.folders])
        summary = confirm_summary(rows)
        table = test_table(summary, chosen=chosen) if summary else ""
    except (FileNotFoundError, ValueError) as e:
        print(f"study_table.py: error: {e}", file=sys.stderr)
        return 2
    print("## Screen (validation only)\n")
    print(screen_table(rows))
    if summary:
        print("\n## Confirmed points (test at the best validation round)\n")
        print(table)
        if args.csv:
            with open(args.csv, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(summary[0]))
                writer.writeheader()
                writer.writerows(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
