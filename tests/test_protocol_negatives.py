"""Training negatives: ``strict`` avoids only the client's training positives (and so
does draw its held-out items); ``reference`` avoids every known positive (leaky)."""

from __future__ import annotations

import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.data import (generate_synthetic, sample_train_negatives, split_interactions,
                             train_csr, train_exclusions)
from feddmr_jax.errors import DataError
from feddmr_jax.train import build_experiment


@pytest.fixture(scope="module")
def split():
    # A small catalogue: every held-out item is drawn many times over a few rounds.
    inter = generate_synthetic(num_users=60, num_items=50, mean_interactions=10, seed=4)
    return split_interactions(inter, "loo")


def _sets(split, part):
    frame = getattr(split, part)
    out = [set() for _ in range(split.num_users)]
    for u, i in zip(frame.user, frame.item):
        out[u].add(int(i))
    return out


def _draws(split, mode, rounds=40):
    train = train_csr(split)
    exclude = train_exclusions(split, mode)
    row_user = np.repeat(np.arange(split.num_users), train.lengths)
    drawn = [set() for _ in range(split.num_users)]
    for r in range(rounds):
        neg = sample_train_negatives(train, exclude, np.random.default_rng([0, r]), 4)
        for u, row in zip(row_user, neg):
            drawn[u].update(row.tolist())
    return drawn


def test_strict_avoids_training_positives_and_draws_held_out_items(split):
    drawn = _draws(split, "strict")
    train, val, test = (_sets(split, p) for p in ("train", "val", "test"))
    assert all(not d & t for d, t in zip(drawn, train))
    held = sum(len(d & (v | t)) for d, v, t in zip(drawn, val, test))
    assert held >= split.num_users          # most of the 2 * U held-out items show up


def test_reference_avoids_every_known_positive(split):
    drawn = _draws(split, "reference")
    known = [a | b | c for a, b, c in zip(*(_sets(split, p) for p in ("train", "val", "test")))]
    assert all(not d & k for d, k in zip(drawn, known))


def test_exclusion_lists(split):
    strict, ref = train_exclusions(split, "strict"), train_exclusions(split, "reference")
    assert strict.indptr[-1] == len(split.train)
    assert ref.indptr[-1] == len(split.train) + len(split.val) + len(split.test)
    with pytest.raises(DataError, match="unknown train_negatives 'all'"):
        train_exclusions(split, "all")


@pytest.mark.parametrize("mode, parts", [("strict", ("train",)),
                                         ("reference", ("train", "val", "test"))])
def test_the_planner_gets_the_configured_exclusions(mode, parts):
    cfg = config_lib.build_config({
        "data": {"dataset": "synthetic", "synthetic_users": 20, "synthetic_items": 40,
                 "synthetic_interactions": 8.0, "eval_negatives": 10, "train_negatives": mode},
        "train": {"model": "fedmf", "rounds": 1}, "model": {"dim": 4}})
    exp = build_experiment(cfg)
    assert exp.planner.exclude.indptr[-1] == sum(len(getattr(exp.split, p)) for p in parts)


def _every_item_csv(tmp_path):
    """alice has interacted with all 6 items; bob, carol and dave with 3 each."""
    rows = [f"alice,i{i},5,{i}" for i in range(6)]
    rows += [f"{u},i{i},4,{10 + i}" for u in ("bob", "carol", "dave") for i in range(3)]
    path = tmp_path / "every_item.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_reference_exclusions_refuse_a_user_with_every_item(tmp_path):
    """No item is left for alice's training negatives: an error naming her, at build time
    (issue 26: it raised only in the first round that sampled her, naming id 0)."""
    from feddmr_jax.data import load_dataset

    split = split_interactions(load_dataset("csv", path=_every_item_csv(tmp_path)), "ratio")
    with pytest.raises(DataError) as info:
        train_exclusions(split, "reference")
    message = str(info.value)
    assert message.startswith("user 'alice' has interacted with all 6 of the 6 items")
    assert "data.train_negatives = 'reference'" in message and "1 such user" in message
    assert "\n" not in message
    strict = train_exclusions(split, "strict")      # her held-out items stay drawable
    assert strict.lengths[0] == len(split.train[split.train.user == 0])


def test_strict_exclusions_refuse_a_user_whose_training_has_every_item(tmp_path):
    """The same check for strict: a split whose train part holds the whole catalogue."""
    import dataclasses

    import pandas as pd

    from feddmr_jax.data import load_dataset

    split = split_interactions(load_dataset("csv", path=_every_item_csv(tmp_path)), "ratio")
    everything = dataclasses.replace(split, train=pd.concat(
        [split.train, split.val[split.val.user == 0], split.test[split.test.user == 0]]))
    with pytest.raises(DataError, match=r"^user 'alice' has interacted with all 6 of the 6 "
                                        r"items .*data.train_negatives = 'strict'"):
        train_exclusions(everything, "strict")


def test_build_experiment_refuses_it_before_the_first_round(tmp_path, capsys):
    path = _every_item_csv(tmp_path)
    argv = ["train", "--dataset", "csv", "--data-path", str(path), "--split", "ratio",
            "--train-negatives", "reference", "--model", "fedmf", "--dim", "4",
            "--rounds", "1", "--quiet", "--out", str(tmp_path / "out")]
    from feddmr_jax import cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "user 'alice'" in err, err
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
