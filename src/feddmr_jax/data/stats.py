"""Dataset and split statistics, and the ``feddmr data stats`` command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from feddmr_jax.data.datasets import load_dataset
from feddmr_jax.data.splits import UNTIMED, split_interactions
from feddmr_jax.data.types import Interactions, Split


def tied_users(split: Split, part: str) -> int | None:
    """Users whose held-out ``part`` interaction shares its timestamp with another of theirs.

    For those users the tie-break, not time, decided which interaction is held
    out (with several held-out items per user, as in ``ratio``: any of them).

    Args:
      split: the split.
      part: ``"val"`` or ``"test"``.

    Returns:
      The count, or None for data without timestamps (no ties to break).
    """
    if split.tie_break == UNTIMED:
        return None
    frames = [split.train, split.val, split.test]
    every = pd.concat([f[["user", "timestamp"]] for f in frames], ignore_index=True)
    size = every.groupby(["user", "timestamp"]).size().rename("n").reset_index()
    held = getattr(split, part)[["user", "timestamp"]].merge(size, on=["user", "timestamp"])
    return int(held.loc[held["n"] > 1, "user"].nunique())


def dataset_stats(split: Split, inter: Interactions) -> dict:
    """Summarizes a dataset and its split.

    Args:
      split: the split of ``inter``.
      inter: the interactions (after de-duplication, before dropping users).

    Returns:
      A JSON-ready dict: dataset, scheme, users, items, interactions (after
      de-duplication, before dropping users), density, train, val, test,
      split_users (users kept by the split), dropped_users, duplicates_removed,
      min/median/max interactions per user, tie_break (the order among equal
      timestamps; ``untimed``: no timestamps, seeded random hold-out) and
      tied_test_users / tied_val_users (users whose held-out interaction
      shares its timestamp with another one, see :func:`tied_users`; None
      without timestamps).
    """
    per_user = np.bincount(inter.table["user"].to_numpy(), minlength=inter.num_users)
    n = len(inter.table)
    return {
        "dataset": inter.name,
        "scheme": split.scheme,
        "users": int(inter.num_users),
        "items": int(inter.num_items),
        "interactions": int(n),
        "density": float(n / max(inter.num_users * inter.num_items, 1)),
        "train": int(len(split.train)),
        "val": int(len(split.val)),
        "test": int(len(split.test)),
        "split_users": int(split.num_users),
        "dropped_users": int(split.dropped_users),
        "duplicates_removed": int(inter.duplicates_removed),
        "min_per_user": int(per_user.min()) if per_user.size else 0,
        "median_per_user": float(np.median(per_user)) if per_user.size else 0.0,
        "max_per_user": int(per_user.max()) if per_user.size else 0,
        "tie_break": split.tie_break,
        "tied_test_users": tied_users(split, "test"),
        "tied_val_users": tied_users(split, "val"),
    }


def format_stats(stats: dict) -> str:
    """Renders :func:`dataset_stats` as an aligned two-column table.

    Args:
      stats: the dict.

    Returns:
      The table text (no trailing newline).
    """
    width = max(len(k) for k in stats)
    lines = []
    for key, value in stats.items():
        if isinstance(value, float) and key == "density":
            shown = f"{value:.6f}"
        elif isinstance(value, int):
            shown = f"{value:,}"
        elif value is None:
            shown = "n/a"
        else:
            shown = str(value)
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)


def run_stats_command(args: argparse.Namespace) -> int:
    """Runs ``feddmr data stats``: load, split, print a table or one JSON line.

    Args:
      args: parsed CLI arguments with ``dataset``, ``data_dir``, ``data_path``,
        ``split``, ``tie_break``, ``seed`` and ``json``.

    Returns:
      Exit code 0 (errors are raised as :class:`DataError` for the CLI to report).
    """
    inter = load_dataset(args.dataset, args.data_dir, path=args.data_path)
    split = split_interactions(inter, args.split, tie_break=args.tie_break, seed=args.seed)
    stats = dataset_stats(split, inter)
    if args.json:
        print(json.dumps(stats))
    else:
        print(format_stats(stats))
    return 0
