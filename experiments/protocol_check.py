"""The hold-out bias of docs/protocol.md: popularity of the held-out items under each tie-break.

    PYTHONPATH=src python experiments/protocol_check.py --data-dir ../shared/data

For ml-100k (``<data-dir>/ml-100k``) and its PFedRec row order
(``<data-dir>/pfedrec-order/ml-100k``), splits leave-one-out with equal
timestamps broken by item id (the old rule, reproduced by reading the rows
sorted by item id with the ``row`` tie-break), by file row, and by a seeded
random order (``data.seed`` 0), and prints one row per split: the mean
training popularity (number of training interactions) of the test and
validation items, that of the test items counted over the whole file, the users with a tie at the held-out position, and the
validation and test HR@10 of ranking the 100 candidates (1 held-out item + 99
negatives, ``eval_seed`` 0) by training popularity, with the project's metrics
(ties ranked pessimistically). CPU only, a few seconds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import numpy as np

from feddmr_jax.data import build_eval_sets, load_dataset, split_interactions
from feddmr_jax.data.stats import tied_users
from feddmr_jax.metrics import mean_metrics, ranking_metrics


def popularity_row(inter, tie_break: str, seed: int = 0) -> dict:
    """The figures of one split (see the module docstring)."""
    if tie_break == "item-id":
        table = inter.table.sort_values("item", kind="stable").reset_index(drop=True)
        split = split_interactions(dataclasses.replace(inter, table=table), tie_break="row")
    else:
        split = split_interactions(inter, tie_break=tie_break, seed=seed)
    counts = np.bincount(split.train["item"].to_numpy(), minlength=split.num_items)
    every = np.bincount(inter.table["item"].to_numpy(), minlength=split.num_items)
    row = {"tie_break": tie_break}
    val_set, test_set = build_eval_sets(split, 99, seed=0)
    for part, eval_set in (("test", test_set), ("val", val_set)):
        held = getattr(split, part)["item"].to_numpy()
        row[f"pop_{part}"] = float(counts[held].mean())
        row[f"pop_all_{part}"] = float(every[held].mean())
        row[f"tied_{part}"] = tied_users(split, part)
        scores = counts[eval_set.candidates].astype(np.float32)
        row[f"hr10_{part}"] = mean_metrics(ranking_metrics(scores, eval_set.labels,
                                                           eval_set.mask, k=10))["hr@10"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--csv", default=None,
                        help="also write the rows as CSV (docs/results/protocol_check.csv)")
    args = parser.parse_args()
    root = Path(args.data_dir)
    rows = []
    print("| file | tie-break | mean train pop. test | val | all-data pop. test "
          "| users tied test | val | popularity HR@10 val | test | val - test |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("ml-100k", "pfedrec-order/ml-100k"):
        inter = load_dataset("ml-100k", path=root / name / "u.data")
        for tie_break in ("item-id", "row", "random"):
            r = popularity_row(inter, tie_break)
            rows.append({"file": name, "tie_break": tie_break, **r})
            print(f"| {name} | {tie_break} | {r['pop_test']:.1f} | {r['pop_val']:.1f} "
                  f"| {r['pop_all_test']:.1f} | {r['tied_test']} | {r['tied_val']} | {r['hr10_val']:.3f} "
                  f"| {r['hr10_test']:.3f} | {r['hr10_val'] - r['hr10_test']:+.3f} |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
