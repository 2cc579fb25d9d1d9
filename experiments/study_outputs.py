"""The FedDMR study's curves: ``study_curves.csv`` and ``study_finalists.png``."""

from __future__ import annotations

import statistics
from pathlib import Path

from runs_io import pyplot, read_records


def run_dir_of(runs: Path, row: dict) -> Path:
    """The folder of the run a ``study_runs.csv`` row describes."""
    return Path(runs) / row["method"] / row["stage"] / row["point_id"] / f"seed{row['seed']}"


def curve_rows(runs: Path, rows: list[dict]) -> list[dict]:
    """Train loss, validation HR@10 and the round's bytes uploaded / downloaded (every
    client; empty where metrics.jsonl has none) per round of every confirmation run (from
    its metrics.jsonl; a diverged run's rounds up to its divergence). Screen runs are left
    out: nothing reads their curves, and each run folder's metrics.jsonl keeps them."""
    curves = []
    for r in rows:
        if not r["stage"].startswith("confirm"):
            continue
        for rec in read_records(run_dir_of(runs, r)):
            if rec["round"] > int(r["rounds"]):          # never past the row's rounds
                continue
            curves.append({"dataset": r["dataset"], "method": r["method"], "stage": r["stage"],
                           "point_id": r["point_id"], "seed": r["seed"],
                           "round": rec["round"], "train_loss": rec["train_loss"],
                           "val_hr@10": rec["val"]["hr@10"] if "val" in rec else "",
                           "upload_bytes": rec.get("upload_bytes", ""),
                           "download_bytes": rec.get("download_bytes", "")})
    return curves


def plot_finalists(path: Path, curves: list[dict]) -> bool:
    """Mean over seeds of train loss and validation HR@10 per round, per confirmed point."""
    plt = pyplot("finalists plot")
    if plt is None:
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
        loss = [(r, [c["train_loss"] for c in by_round[r] if c["train_loss"] not in ("", None)])
                for r in rounds]
        loss_ax.plot(*zip(*[(r, statistics.mean(v)) for r, v in loss if v]), label=label)
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
