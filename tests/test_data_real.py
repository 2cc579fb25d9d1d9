"""Published figures of the real datasets (skipped when the shared data is absent)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from feddmr_jax.cli import main
from feddmr_jax.data import (build_eval_sets, load_dataset, positives_csr, sample_train_negatives,
                             split_interactions, train_csr)

# name: (users, items, interactions, train, val, test, dropped users) under the loo split
FIGURES = {
    "ml-100k": (943, 1682, 100000, 98114, 943, 943, 0),
    "lastfm-2k": (1892, 17632, 92834, 89058, 1883, 1883, 9),
    "amazon-video": (8072, 11830, 63836, 47692, 8072, 8072, 0),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_stats_cli_figures(name, shared_data_dir, capsys):
    code = main(["data", "stats", "--dataset", name, "--data-dir", str(shared_data_dir), "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and len(out.strip().splitlines()) == 1
    s = json.loads(out)
    got = tuple(s[k] for k in ("users", "items", "interactions", "train", "val", "test",
                               "dropped_users"))
    assert got == FIGURES[name]
    assert s["duplicates_removed"] == 0


def test_ml_100k_pipeline(shared_data_dir):
    inter = load_dataset("ml-100k", shared_data_dir)
    split = split_interactions(inter)
    val, test = build_eval_sets(split)
    assert val.candidates.shape == test.candidates.shape == (943, 100)
    last = inter.table.groupby("user").timestamp.max().to_numpy()
    assert np.array_equal(split.test.timestamp.to_numpy(), last)
    neg = sample_train_negatives(train_csr(split), positives_csr(split),
                                 np.random.default_rng([0, 0]))
    assert neg.shape == (98114, 4)


def test_ml_100k_ratio(shared_data_dir):
    split = split_interactions(load_dataset("ml-100k", shared_data_dir), "ratio")
    assert len(split.train) + len(split.val) + len(split.test) == 100000
    assert split.val.groupby("user").size().min() >= 2  # every user has >= 20 ratings
