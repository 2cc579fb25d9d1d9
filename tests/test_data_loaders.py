"""Loaders of every format on tiny hand-made files, and data folder resolution."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from feddmr_jax.data import load_dataset
from feddmr_jax.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_data_env")

ML100K = "10\t5\t3\t100\n7\t5\t4\t90\n10\t9\t5\t80\n10\t5\t1\t120\n7\t2\t2\t70\n"


def _rows(inter):
    """(orig user, orig item, timestamp, rating) tuples in table order."""
    t = inter.table
    return [(inter.user_ids[u], inter.item_ids[i], int(ts), float(r))
            for u, i, ts, r in zip(t.user, t.item, t.timestamp, t.rating)]


def _check_contract(inter):
    t = inter.table
    assert list(t.columns) == ["user", "item", "timestamp", "rating"]
    assert [str(d) for d in t.dtypes] == ["int32", "int32", "int64", "float32"]
    assert set(t.user) == set(range(inter.num_users))
    assert set(t.item) == set(range(inter.num_items))
    assert not t.duplicated(["user", "item"]).any()


def test_ml_100k_contiguous_ids_and_latest_duplicate(write_file, tmp_path, caplog):
    write_file("d/ml-100k/u.data", ML100K)
    with caplog.at_level(logging.WARNING):
        inter = load_dataset("ml-100k", tmp_path / "d")
    _check_contract(inter)
    assert list(inter.user_ids) == [7, 10] and list(inter.item_ids) == [2, 5, 9]
    assert inter.duplicates_removed == 1
    assert "1 duplicate" in caplog.text
    # (10, 5) kept once: the latest row (ts 120, rating 1); file order otherwise.
    assert _rows(inter) == [(7, 5, 90, 4.0), (10, 9, 80, 5.0), (10, 5, 120, 1.0), (7, 2, 70, 2.0)]


@pytest.mark.parametrize("rel", ["d/u.data", "d/ml-100k/u.data"])
def test_ml_100k_found_flat_or_in_subfolder(write_file, tmp_path, rel):
    write_file(rel, ML100K)
    assert len(load_dataset("ml-100k", tmp_path / "d").table) == 4


def test_ml_100k_from_env_and_explicit_path(write_file, tmp_path, monkeypatch):
    path = write_file("elsewhere/u.data", ML100K)
    monkeypatch.setenv("FEDDMR_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_dataset("ml-100k").num_users == 2
    assert load_dataset("ml-100k", path=path).num_items == 3
    assert load_dataset("ml-100k", path=path.parent).num_items == 3


def test_ml_1m_double_colon_format(write_file, tmp_path):
    write_file("ml-1m/ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"
               "2::1193::4::978298413\n\n3::3408::4::978300275\n")
    inter = load_dataset("ml-1m", tmp_path)
    _check_contract(inter)
    assert (inter.num_users, inter.num_items, len(inter.table)) == (3, 3, 4)
    assert _rows(inter)[1] == (1, 661, 978302109, 3.0)


def test_lastfm_weight_is_rating_and_file_order_is_time(write_file, tmp_path):
    write_file("hetrec2011-lastfm-2k/user_artists.dat",
               "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n4\t51\t7\n2\t51\t5\n")
    inter = load_dataset("lastfm-2k", tmp_path)
    _check_contract(inter)
    assert inter.duplicates_removed == 1  # (2, 51) twice: the later row wins
    assert _rows(inter) == [(2, 52, 1, 11690.0), (4, 51, 2, 7.0), (2, 51, 3, 5.0)]


AMAZON = ("AGZ8SM1BGK3CK,B000GFDAUG,5.0,1198195200\nA9RN,B000GIOPK2,2.0,1281052800\n"
          "A3ST,B000GIOPK2,5.0,1203897600\nA9RN,B000GFDAUG,4.0,1281052801\n"
          "A3ST,B000GFDAUG,3.0,1203897601\nA3ST,B00ONE,1.0,1203897602\n")


def test_amazon_string_ids_and_kcore(write_file, tmp_path):
    write_file("amazon-video/ratings.dat", AMAZON)
    inter = load_dataset("amazon-video", tmp_path)
    _check_contract(inter)
    assert list(inter.user_ids) == ["A3ST", "A9RN", "AGZ8SM1BGK3CK"]
    assert (inter.num_items, len(inter.table)) == (3, 6)
    core = load_dataset("amazon-video", path=tmp_path / "amazon-video" / "ratings.dat", kcore=2)
    _check_contract(core)
    assert list(core.user_ids) == ["A3ST", "A9RN"]
    assert list(core.item_ids) == ["B000GFDAUG", "B000GIOPK2"]
    assert len(core.table) == 4


def test_csv_with_header_names_defaults_and_quotes(write_file):
    path = write_file("x.csv", 'ts,who,what,stars\n5,u1,"i,1",4.5\n3,u2,i2,3\n9,u1,i2,1\n')
    inter = load_dataset("csv", path=path, header=True, user_col="who", item_col="what",
                         rating_col="stars", timestamp_col="ts")
    _check_contract(inter)
    assert _rows(inter) == [("u1", "i,1", 5, 4.5), ("u2", "i2", 3, 3.0), ("u1", "i2", 9, 1.0)]


def test_csv_rating_and_timestamp_optional(write_file):
    path = write_file("x.tsv", "3\t30\n1\t10\n3\t10\n")
    inter = load_dataset("csv", path=path)
    assert list(inter.user_ids) == [1, 3] and inter.user_ids.dtype == np.int64
    assert _rows(inter) == [(3, 30, 0, 1.0), (1, 10, 1, 1.0), (3, 10, 2, 1.0)]
    by_index = load_dataset("csv", path=path, sep="\t", user_col=1, item_col=0)
    assert list(by_index.user_ids) == [10, 30]


def test_csv_auto_columns(write_file):
    path = write_file("r.csv", "a,x,2.5,7\nb,y,4,8\n")
    assert _rows(load_dataset("csv", path=path)) == [("a", "x", 7, 2.5), ("b", "y", 8, 4.0)]


def test_unknown_option_is_named(write_file, tmp_path):
    write_file("u.data", ML100K)
    with pytest.raises(DataError, match="no option kcor .*accepted: download, remotes"):
        load_dataset("ml-100k", tmp_path, kcor=5)


def test_cache_dir_is_searched(isolated_data_env):
    (isolated_data_env / "ml-100k").mkdir(parents=True)
    (isolated_data_env / "ml-100k" / "u.data").write_text(ML100K)
    assert load_dataset("ml-100k").num_users == 2
