"""dataset_stats and the ``feddmr data stats`` command on tiny inputs."""

from __future__ import annotations

import json

import pytest

from feddmr_jax.cli import main
from feddmr_jax.data import dataset_stats, load_dataset, split_interactions

pytestmark = pytest.mark.usefixtures("isolated_data_env")

ROWS = "".join(f"{u}\t{i}\t3\t{100 * u + i}\n" for u in range(1, 4) for i in range(1, 4 + u))
ROWS += "9\t1\t5\t1\n1\t1\t4\t50\n"  # user 9 has one rating (dropped); (1, 1) duplicated


def test_dataset_stats_keys_and_values(tmp_path):
    (tmp_path / "u.data").write_text(ROWS)
    inter = load_dataset("ml-100k", tmp_path)
    stats = dataset_stats(split_interactions(inter), inter)
    assert stats["users"] == 4 and stats["items"] == 6
    assert stats["interactions"] == 4 + 5 + 6 + 1
    assert (stats["train"], stats["val"], stats["test"]) == (4 + 5 + 6 - 6, 3, 3)
    assert stats["dropped_users"] == 1 and stats["duplicates_removed"] == 1
    assert stats["density"] == pytest.approx(16 / 24)


def test_cli_json_is_one_object_line(tmp_path, capsys):
    (tmp_path / "u.data").write_text(ROWS)
    code = main(["data", "stats", "--dataset", "ml-100k", "--data-dir", str(tmp_path), "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and len(out.splitlines()) == 1
    stats = json.loads(out)
    assert {"users", "items", "interactions", "train", "val", "test"} <= set(stats)


def test_cli_table_and_ratio_split(capsys):
    code = main(["data", "stats", "--dataset", "synthetic", "--split", "ratio"])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["users"].strip() == "2,000" and lines["scheme"].strip() == "ratio"
