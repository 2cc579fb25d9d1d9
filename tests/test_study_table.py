"""experiments/study_table.py: the docs tables of a FedDMR study, from its CSV."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import study_table  # noqa: E402


def _row(method, stage, pid, seed, test_auc, test_p, val_hr=0.5):
    row = {"method": method, "stage": stage, "step": 0, "knob": "confirm", "point_id": pid,
           "point": pid, "seed": seed, "rounds": 100, "best_round": 90, "s_per_round": 1.0,
           "wall_s": 100.0}
    for m in study_table.METRICS:
        row[f"val_{m}"] = val_hr
        row[f"test_{m}"] = 0.5
    row["test_auc"], row["test_precision@10"] = test_auc, test_p
    return row


def _write(folder: Path, rows: list[dict]) -> None:
    with open(folder / "study_runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_mean_std_and_relative_difference_to_the_best_baseline(tmp_path, capsys):
    rows = [_row("feddmr", "screen30", "reference", 0, 0.8, 0.05),
            _row("feddmr", "confirm100", "pa", 0, 0.86, 0.060),
            _row("feddmr", "confirm100", "pa", 1, 0.88, 0.062),
            _row("fedncf", "confirm100", "reference", 0, 0.90, 0.050),
            _row("fedncf", "confirm100", "reference", 1, 0.90, 0.050),
            _row("fedmf", "confirm100", "reference", 0, 0.70, 0.070),
            _row("fedmf", "confirm100", "reference", 1, 0.70, 0.070)]
    _write(tmp_path, rows)
    out_csv = tmp_path / "summary.csv"
    assert study_table.main([str(tmp_path), "--csv", str(out_csv)]) == 0
    text = capsys.readouterr().out
    assert "0.8700 ± 0.0141" in text                            # feddmr test AUC over 2 seeds
    assert "test AUC (fedncf): -3.33%" in text                  # 0.87 / 0.90 - 1
    assert "test PRECISION@10 (fedmf): -12.86%" in text         # 0.061 / 0.070 - 1
    assert "feddmr (`pa`) vs the best baseline" in text
    screen = text.split("## Confirmed")[0]
    assert screen.count("| feddmr |") == 1 and "`reference` | 0.5000" in screen
    summary = list(csv.DictReader(open(out_csv)))
    assert [s["method"] for s in summary] == ["feddmr", "fedncf", "fedmf"]
    assert float(summary[0]["test_auc_mean"]) == pytest.approx(0.87)


def test_missing_csv_is_a_one_line_error(tmp_path, capsys):
    assert study_table.main([str(tmp_path)]) == 2
    assert "study_runs.csv" in capsys.readouterr().err


def test_a_follow_up_replaces_a_method_and_its_chosen_point_is_compared(tmp_path, capsys):
    first, follow = tmp_path / "first", tmp_path / "follow"
    first.mkdir(), follow.mkdir()
    _write(first, [_row("feddmr", "confirm100", "old", s, 0.80, 0.05) for s in (0, 1)]
           + [_row("fedncf", "confirm100", "reference", s, 0.90, 0.05) for s in (0, 1)]
           # a confirmed baseline point its study did not choose (better on test): ignored
           + [_row("fedncf", "confirm100", "unchosen", s, 0.99, 0.09) for s in (0, 1)])
    (first / "study_chosen.json").write_text(json.dumps({"feddmr": {"point_id": "old"},
                                                         "fedncf": {"point_id": "reference"}}))
    _write(follow, [_row("feddmr", "confirm100", "new", s, 0.95, 0.05, val_hr=0.7)
                    for s in (0, 1)]
           + [_row("feddmr", "confirm100", "reference", s, 0.85, 0.05) for s in (0, 1)])
    # two confirmed FedDMR points and no choice: refused, with a one-line error
    assert study_table.main([str(first), str(follow)]) == 2
    assert "no study_chosen.json" in capsys.readouterr().err
    (follow / "study_chosen.json").write_text(json.dumps({"feddmr": {"point_id": "new"}}))
    assert study_table.main([str(first), str(follow)]) == 0
    text = capsys.readouterr().out
    assert "`old`" not in text                                   # replaced by the follow-up
    assert "feddmr (`new`) vs the best baseline on test AUC (fedncf): +5.56%" in text
    assert text.count("| fedncf |") == 2                          # the baseline's rows kept
    assert "(fedncf): +5.56%" in text and "0.99" not in text.split("- feddmr")[1]


def test_diverged_runs_are_marked_and_left_out(tmp_path, capsys):
    diverged = {"status": "diverged", "best_round": "", "s_per_round": "", "message": "nan",
                **{f"{s}_{m}": "" for s in ("val", "test") for m in study_table.METRICS}}
    rows = [{**_row("feddmr", "screen30", "pbad", 0, 0.8, 0.05), **diverged},
            {**_row("feddmr", "confirm100", "pa", 0, 0.86, 0.060), "status": "ok"},
            {**_row("feddmr", "confirm100", "pa", 1, 0.88, 0.062), "status": "ok"},
            {**_row("feddmr", "confirm100", "pb", 0, 0.99, 0.090), "status": "ok"},
            {**_row("feddmr", "confirm100", "pb", 1, 0.99, 0.090), **diverged}]
    _write(tmp_path, rows)
    assert study_table.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| feddmr | 0 | confirm | `pbad` | diverged |" in text
    assert "`pa`" in text and "`pb`" not in text          # pb has a diverged seed


def test_curves_are_written_to_six_digits_that_keep_every_hr_apart(tmp_path):
    """``write_rows(digits=6)`` (the study's curves): floats rounded, other cells as given;
    HR@10 values k / users of 10^5 users stay distinct and within half a unit of the 6th digit."""
    import runs_io
    users = 100_000
    hrs = [k / users for k in range(60_000, 60_200)]
    rows = [{"method": "fedmf", "round": i, "val_hr@10": h, "study": ""} for i, h in enumerate(hrs)]
    path = tmp_path / "curves.csv"
    runs_io.write_rows(path, rows, digits=6)
    back = list(csv.DictReader(open(path, newline="")))
    read = [float(r["val_hr@10"]) for r in back]
    assert len(set(read)) == len(hrs)
    assert max(abs(a - b) / b for a, b in zip(read, hrs)) <= 0.5e-5
    assert [r["round"] for r in back] == [str(i) for i in range(len(hrs))]
    assert back[0]["method"] == "fedmf" and back[0]["study"] == ""
    assert all(len(r["val_hr@10"]) <= 8 for r in back)
