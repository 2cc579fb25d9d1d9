"""experiments/privacy_table.py end to end in --quick mode (tiny synthetic data)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from run_helpers import assert_best_round_of

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("privacy_table",
                                                  ROOT / "experiments" / "privacy_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_doc_has_the_table_markers():
    script = load_script()
    text = (ROOT / "docs" / "privacy.md").read_text()
    assert text.count(script.BEGIN) == 1 and text.count(script.END) == 1


def test_quick_run_writes_csv_and_regenerates_the_doc_section(tmp_path):
    script = load_script()
    doc = tmp_path / "privacy.md"
    doc.write_text(f"# t\n\nkept above\n\n{script.BEGIN}\nold table\n{script.END}\n\nkept below\n")
    assert script.main(["--quick", "--out", str(tmp_path), "--doc", str(doc)]) == 0
    with open(tmp_path / "privacy_synthetic.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["non-private", "dp-eps1", "dp-eps5", "dp-eps10"]
    assert rows[0]["epsilon"] == "" and rows[0]["noise_multiplier"] == ""
    noise = []
    for r, target in zip(rows[1:], (1.0, 5.0, 10.0)):
        eps = float(r["epsilon"])
        assert 0.95 * target < eps <= target          # calibrated to the target
        assert float(r["delta"]) < 1 / 40             # below 1 / users
        noise.append(float(r["noise_multiplier"]))
    assert noise[0] > noise[1] > noise[2] > 0
    for r in rows:
        assert 0.0 <= float(r["test_hr@10"]) <= 1.0 and 0.0 <= float(r["test_auc"]) <= 1.0
        assert_best_round_of(int(r["best_round"]), tmp_path / "privacy_runs" / r["run"])
    text = doc.read_text()
    assert "kept above" in text and "kept below" in text and "old table" not in text
    assert "| dp-eps5 | 5.0 |" in text and "| non-private | - |" in text
    # Run again: the section is replaced, not duplicated.
    script.write_doc(doc, "second")
    assert doc.read_text().count(script.BEGIN) == 1 and "second" in doc.read_text()


def test_doc_without_markers_is_refused(tmp_path):
    script = load_script()
    doc = tmp_path / "x.md"
    doc.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        script.write_doc(doc, "table")
