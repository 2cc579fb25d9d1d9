"""Bad input: one clear DataError, through the library and through the CLI."""

from __future__ import annotations

import json
import re

import pytest

from feddmr_jax.cli import main
from feddmr_jax.data import load_dataset, split_interactions
from feddmr_jax.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_data_env")

GOOD = "1\t10\t3\t100\n2\t10\t4\t101\n"

# (case id, dataset, file to write (relative path, text) or None,
#  the file/folder to pass as --data-path (relative), expected message regex)
CASES = [
    ("missing_file", "csv", None, "nope.csv", r"nope\.csv: file not found"),
    ("missing_folder", "ml-100k", None, "no_dir", r"no_dir: file or folder not found"),
    ("folder_without_file", "ml-100k", ("d/other.txt", "x"), "d", r"d: no u\.data for ml-100k"),
    ("empty_file", "ml-100k", ("u.data", ""), "u.data", r"u\.data: file is empty"),
    ("blank_file", "amazon-video", ("r.dat", "\n \n"), "r.dat", r"r\.dat: file is empty"),
    ("header_only", "lastfm-2k", ("ua.dat", "userID\tartistID\tweight\n"), "ua.dat",
     r"ua\.dat: no data lines after the header"),
    ("wrong_header", "lastfm-2k", ("ua.dat", "user\tartist\tweight\n2\t51\t1\n"), "ua.dat",
     r"ua\.dat: line 1: expected the header"),
    ("too_many_fields", "ml-100k", ("u.data", GOOD + "3\t10\t4\t102\t9\n"), "u.data",
     r"u\.data: line 3: expected 4 tab-separated fields, found 5"),
    ("too_few_fields", "ml-100k", ("u.data", GOOD + "\n3\t10\t4\n"), "u.data",
     r"u\.data: line 4: expected 4 tab-separated fields, found 3"),
    ("ml1m_fields", "ml-1m", ("ratings.dat", "1::2::3::4\n1::2::3\n"), "ratings.dat",
     r"ratings\.dat: line 2: expected 4 '::'-separated fields, found 3"),
    ("bad_user", "ml-100k", ("u.data", GOOD + "x7\t10\t4\t102\n"), "u.data",
     r"u\.data: line 3: field 'user' \(column 1\): not an integer: 'x7'"),
    ("bad_item", "ml-1m", ("ratings.dat", "1::2::3::4\n1::2.5::3::4\n"), "ratings.dat",
     r"line 2: field 'item' \(column 2\): not an integer: '2.5'"),
    ("bad_rating", "amazon-video", ("r.dat", "a,b,5.0,1\nc,d,five,2\n"), "r.dat",
     r"r\.dat: line 2: field 'rating' \(column 3\): not a number: 'five'"),
    ("bad_timestamp", "ml-100k", ("u.data", GOOD + "3\t10\t4\t2020-01-01\n"), "u.data",
     r"line 3: field 'timestamp' \(column 4\): not an integer: '2020-01-01'"),
    ("bad_weight", "lastfm-2k", ("ua.dat", "userID\tartistID\tweight\n2\t51\tnan\n"), "ua.dat",
     r"ua\.dat: line 2: field 'weight' \(column 3\): not a number: 'nan'"),
    ("missing_value", "ml-100k", ("u.data", GOOD + "3\t\t4\t102\n"), "u.data",
     r"u\.data: line 3: field 'item' \(column 2\): missing value"),
    ("missing_id_str", "amazon-video", ("r.dat", "a,b,5.0,1\n,d,4,2\n"), "r.dat",
     r"r\.dat: line 2: field 'user' \(column 1\): missing value"),
    ("csv_bad_column", "csv", ("x.csv", "a,b\n"), "x.csv",
     r"x\.csv: option rating_col='stars' names a column, but header=False"),
]


def _setup(tmp_path, case):
    _, _, spec, rel, _ = case
    if spec is not None:
        p = tmp_path / spec[0]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(spec[1])
    return tmp_path / rel


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_library_raises_clear_error(tmp_path, case):
    path = _setup(tmp_path, case)
    options = {"rating_col": "stars"} if case[0] == "csv_bad_column" else {}
    with pytest.raises(DataError, match=case[4]) as info:
        load_dataset(case[1], path=path, **options)
    assert "\n" not in str(info.value)


def _run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", [c for c in CASES if c[0] != "csv_bad_column"],
                         ids=[c[0] for c in CASES if c[0] != "csv_bad_column"])
def test_cli_reports_one_line(tmp_path, case, capsys):
    path = _setup(tmp_path, case)
    code, out, err = _run_cli(["data", "stats", "--dataset", case[1], "--data-path", str(path)],
                              capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("feddmr: error: ")
    assert "Traceback" not in err
    assert re.search(case[4], lines[0])


@pytest.mark.parametrize("argv, pattern", [
    (["--dataset", "movielens"], r"unknown dataset 'movielens'; known datasets: amazon-video, "
                                 r"csv, lastfm-2k, ml-100k, ml-1m, synthetic"),
    (["--dataset", "csv"], r"dataset 'csv' needs a file: pass path=FILE \(CLI: --data-path FILE\)"),
    (["--dataset", "ml-100k", "--data-dir", "/nonexistent/dir"],
     r"data folder /nonexistent/dir \(from --data-dir\) does not exist"),
    (["--dataset", "amazon-video", "--data-dir", "."],
     r"amazon-video: ratings\.dat not found \(looked in .*\); pass the file with --data-path"),
])
def test_cli_errors_without_files(argv, pattern, capsys):
    code, out, err = _run_cli(["data", "stats", *argv], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(pattern, err)


def test_named_dataset_missing_offline(tmp_path):
    """No data folder given (the cache is searched) and FEDDMR_OFFLINE=1."""
    with pytest.raises(DataError, match=r"ml-100k: u\.data not found .*downloads are disabled; "
                                        r"pass a local folder with --data-dir DIR or FEDDMR_DATA_DIR"):
        load_dataset("ml-100k")


def test_unknown_dataset_lists_known():
    with pytest.raises(DataError, match="known datasets: amazon-video, csv, lastfm-2k"):
        load_dataset("ml-20m")


def test_unknown_split_scheme(tmp_path):
    (tmp_path / "u.data").write_text(GOOD + "1\t11\t1\t5\n1\t12\t1\t6\n")
    inter = load_dataset("ml-100k", tmp_path)
    with pytest.raises(DataError, match="unknown split scheme 'random'; known schemes: loo, ratio"):
        split_interactions(inter, "random")


def test_duplicates_are_reported_not_an_error(tmp_path, capsys):
    rows = "".join(f"u{i % 2},i{i},5,{i}\n" for i in range(8)) + "u0,i0,1,99\nu0,i0,2,98\n"
    (tmp_path / "r.csv").write_text(rows)
    code, out, err = _run_cli(["data", "stats", "--dataset", "csv", "--data-path",
                               str(tmp_path / "r.csv"), "--json"], capsys)
    assert code == 0 and "error" not in err
    stats = json.loads(out)
    assert stats["duplicates_removed"] == 2 and stats["interactions"] == 8
