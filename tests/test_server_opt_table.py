"""experiments/server_opt_table.py: the rounds-to-target arithmetic on hand-made curves."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import server_opt_table as table  # noqa: E402


def _curves(method, point, values_by_seed):
    return [{"method": method, "point_id": point, "stage": "confirm", "round": str(r + 1),
             "val_hr@10": str(v)} for seed in values_by_seed for r, v in enumerate(seed)]


def test_mean_curve_first_round_and_megabytes():
    curves = _curves("feddmr", "p1", [[0.1, 0.3, 0.5, 0.4], [0.3, 0.5, 0.5, 0.6]])
    curves += _curves("feddmr", "other", [[0.9, 0.9, 0.9, 0.9]])          # another point: ignored
    curve = table.mean_curve(curves, "feddmr", "p1", "confirm")
    assert curve == {1: 0.2, 2: 0.4, 3: 0.5, 4: 0.5}
    assert table.first_round(curve, 0.45) == 3 and table.first_round(curve, 0.6) is None
    per_round = {1: (1e6, 4e6), 2: (2e6, 4e6), 3: (3e6, 4e6), 4: (4e6, 4e6)}
    assert table.cumulative_mb(per_round, 3) == (6.0, 12.0)
    assert table.cumulative_mb(per_round, None) == (None, None)


def test_the_page_section_is_replaced_not_appended(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# title\n\n<!-- server-opt:begin -->\nold\n<!-- server-opt:end -->\ntail\n")
    row = {"method": "fedmf", "server": "sgd@1.0", "fedavg_val_hr@10_r100": 0.5,
           "fedavg_best_val_hr@10": 0.6, "confirm_rounds": 50, "opt_best_val_hr@10": 0.55,
           "upload_mb_per_round": 1.0, "download_mb_per_round": 2.0,
           "opt_val_hr@10_last": 0.55, "fedavg_round_to_opt_last": 8}
    for who in ("fedavg", "opt"):
        row.update({f"{who}_round_to_r100": 7 if who == "fedavg" else None,
                    f"{who}_up_mb_to_r100": 7.0, f"{who}_down_mb_to_r100": 14.0,
                    f"{who}_round_to_best": 9, f"{who}_test_auc": 0.8,
                    f"{who}_test_auc_std": 0.01, f"{who}_test_precision@10": 0.05,
                    f"{who}_test_precision@10_std": 0.001})
    table.write_page(page, [row], [])
    table.write_page(page, [row], [])
    text = page.read_text()
    assert text.count("<!-- server-opt:begin -->") == 1 and "old" not in text
    assert "| fedmf | sgd@1.0 | 0.5000 | 7 (7 / 14) | not in 50 rounds |" in text
    assert text.endswith("tail\n")
