"""The hold-out protocol: tie-breaks independent of item ids, seeded, and data without timestamps.

docs/protocol.md: among equal timestamps the later file row (``row``) or a
seeded permutation (``random``) decides; item ids never do. Data without
timestamps holds out seeded random interactions, not the file's last rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feddmr_jax.cli import main
from feddmr_jax.data import load_dataset, split_interactions
from feddmr_jax.data.stats import dataset_stats
from feddmr_jax.data.tidy import build_interactions
from feddmr_jax.errors import DataError


def _tied(num_users=60, per_user=8, distinct_times=3, seed=0):
    """Raw columns with many equal timestamps per user (few distinct times)."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(num_users), per_user)
    item = np.concatenate([rng.choice(200, per_user, replace=False) for _ in range(num_users)])
    ts = rng.integers(0, distinct_times, len(user))
    row = rng.permutation(len(user))           # the file's row order
    return user[row], item[row], ts[row]


def _held_out(split, part):
    """``{(original user, original item)}`` of a split part."""
    frame = getattr(split, part)
    return set(zip(split.user_ids[frame.user].tolist(), split.item_ids[frame.item].tolist()))


@pytest.mark.parametrize("tie_break", ["row", "random"])
def test_hold_out_is_independent_of_item_ids(tie_break):
    user, item, ts = _tied()
    relabel = np.random.default_rng(7).permutation(1000)   # a bijection of item ids
    a = split_interactions(build_interactions("a", user, item, None, ts), tie_break=tie_break)
    b = split_interactions(build_interactions("b", user, relabel[item], None, ts),
                           tie_break=tie_break)
    assert a.tie_break == b.tie_break == tie_break
    for part in ("val", "test"):
        back = {(u, int(np.flatnonzero(relabel == i)[0])) for u, i in _held_out(b, part)}
        assert back == _held_out(a, part), part


def test_the_item_id_tie_break_is_gone():
    """With every rating at one time, ``row`` holds out the last rows, whatever their ids."""
    user = np.repeat([0, 1], 5)
    item = np.array([9, 8, 7, 6, 5, 1, 2, 3, 4, 0])
    split = split_interactions(build_interactions("x", user, item, None, np.zeros(10, int)))
    assert _held_out(split, "test") == {(0, 5), (1, 0)}
    assert _held_out(split, "val") == {(0, 6), (1, 4)}


def test_random_tie_break_is_seeded():
    inter = build_interactions("t", *_tied()[:2], None, _tied()[2])
    a = split_interactions(inter, tie_break="random", seed=0)
    b = split_interactions(inter, tie_break="random", seed=0)
    c = split_interactions(inter, tie_break="random", seed=1)
    row = split_interactions(inter, tie_break="row")
    for part in ("train", "val", "test"):
        pd.testing.assert_frame_equal(getattr(a, part), getattr(b, part))
    assert _held_out(a, "test") != _held_out(c, "test")
    assert _held_out(a, "test") != _held_out(row, "test")
    # Ties only: the held-out items are still among each user's latest interactions.
    latest = inter.table.groupby("user").timestamp.max()
    assert (c.test.timestamp.to_numpy() == latest.to_numpy()[c.test.user]).all()


def _untimed(num_users=40, per_user=10):
    """A Last.fm-like file: no timestamps, rows sorted by user then item id."""
    user = np.repeat(np.arange(num_users), per_user)
    item = np.tile(np.arange(per_user), num_users) + 3 * user % 17
    return build_interactions("untimed", user, item, None, None)


def test_data_without_timestamps_holds_out_seeded_random_interactions():
    inter = _untimed()
    assert not inter.has_timestamps
    split = split_interactions(inter)                 # tie_break "row" is not used
    assert split.tie_break == "untimed"
    last_rows = inter.table.groupby("user").tail(1)
    last = set(zip(last_rows.user, last_rows.item))
    test = set(zip(split.test.user, split.test.item))
    assert len(test & last) < len(test) / 2           # about 1 in 10 by chance
    again = split_interactions(inter, tie_break="random")
    assert set(zip(again.test.user, again.test.item)) == test
    other = split_interactions(inter, seed=1)
    assert set(zip(other.test.user, other.test.item)) != test
    # Pseudo-timestamps follow the drawn order: val before test, train before val.
    assert (split.val.timestamp.to_numpy() < split.test.timestamp.to_numpy()).all()
    assert (split.train.groupby("user").timestamp.max() < split.val.timestamp.to_numpy()).all()


def test_unknown_tie_break():
    with pytest.raises(DataError, match="unknown tie_break 'item'"):
        split_interactions(_untimed(), tie_break="item")


def test_stats_report_the_scheme_and_ties():
    user = np.repeat([0, 1, 2], 4)
    item = np.tile([0, 1, 2, 3], 3)
    ts = np.array([1, 2, 3, 3,   1, 2, 3, 4,   1, 2, 2, 2])
    inter = build_interactions("ties", user, item, None, ts)
    s = dataset_stats(split_interactions(inter), inter)
    # user 0: test and val tie at t=3; user 1: no tie; user 2: test, val and a train item at t=2.
    assert (s["tie_break"], s["tied_test_users"], s["tied_val_users"]) == ("row", 2, 2)
    untimed = _untimed()
    s = dataset_stats(split_interactions(untimed), untimed)
    assert s["tie_break"] == "untimed" and s["tied_test_users"] is None


def test_lastfm_loader_marks_no_timestamps(shared_data_dir):
    inter = load_dataset("lastfm-2k", shared_data_dir)
    assert not inter.has_timestamps
    assert load_dataset("ml-100k", shared_data_dir).has_timestamps


@pytest.mark.parametrize("folder", ["ml-100k", "pfedrec-order/ml-100k"])
def test_ml_100k_loader_keeps_the_file_row_order(shared_data_dir, folder):
    """``row`` means the file's row order: the tidy table is the file, row for row."""
    path = shared_data_dir / folder / "u.data"
    raw = np.loadtxt(path, dtype=np.int64)
    inter = load_dataset("ml-100k", path=path)
    t = inter.table
    assert len(t) == len(raw)
    np.testing.assert_array_equal(inter.user_ids[t.user], raw[:, 0])
    np.testing.assert_array_equal(inter.item_ids[t.item], raw[:, 1])
    np.testing.assert_array_equal(t.timestamp, raw[:, 3])


def test_stats_cli_reports_ties_on_ml_100k(shared_data_dir, capsys):
    import json

    code = main(["data", "stats", "--dataset", "ml-100k", "--data-dir", str(shared_data_dir),
                 "--tie-break", "random", "--seed", "3", "--json"])
    s = json.loads(capsys.readouterr()[0])
    assert code == 0 and s["tie_break"] == "random"
    # 44 % of ml-100k users have several ratings at their latest timestamp.
    assert 0.40 < s["tied_test_users"] / s["users"] < 0.48
    assert 0 < s["tied_val_users"] <= s["users"]
