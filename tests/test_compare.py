"""experiments/compare.py end to end on tiny synthetic data: grid chosen on validation,
CSV / markdown / plot written, finished runs skipped on a second invocation."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from run_helpers import assert_best_round_of

ROOT = Path(__file__).resolve().parents[1]


def _load_compare():
    spec = importlib.util.spec_from_file_location("compare", ROOT / "experiments" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare"] = module
    spec.loader.exec_module(module)
    return module


compare = _load_compare()

# 30 users x 40 items, dim 4. The private-store bound (15,032 bytes) admits PFedRec
# (30 x (head 5 + view 22 x 4) floats = 11,160 bytes) but not FedRAP (30 x (40 x 4 + 5)
# floats = 19,800 bytes): FedRAP must be reported as skipped, not crash the table.
ARGS = ["--datasets", "synthetic", "--seeds", "2", "--rounds", "2",
        "--methods", "fedmf,pfedrec,fedrap", "--grid", "full",
        "--set", "data.synthetic_users=30", "--set", "data.synthetic_items=40",
        "--set", "data.synthetic_interactions=8.0", "--set", "data.eval_negatives=10",
        "--set", "model.dim=4", "--set", "train.max_private_gb=1.4e-5"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    assert compare.main([*ARGS, "--out", str(out)]) == 0
    return out


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_one_row_per_method_and_seed(results):
    rows = _rows(results / "compare_synthetic.csv")
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("fedmf", "0"), ("fedmf", "1"), ("pfedrec", "0"), ("pfedrec", "1")]
    for r in rows:
        for split in ("val", "test"):
            for m in compare.METRICS:
                assert 0.0 <= float(r[f"{split}_{m}"]) <= 1.0
        run = (results / "runs" / "synthetic" / r["method"]
               / compare.point_tag(json.loads(r["hyperparams"])) / f"seed{r['seed']}")
        assert_best_round_of(int(r["best_round"]), run)
        assert float(r["seconds_per_round"]) > 0
        # Both seeds of a method use the same (chosen) hyperparameters.
    assert len({r["hyperparams"] for r in rows if r["method"] == "fedmf"}) == 1
    # Every run (grid points too) reports the argmax of its own validation curve.
    for path in (results / "runs").rglob("summary.json"):
        assert_best_round_of(json.loads(path.read_text())["best_round"], path.parent)


def test_grid_point_chosen_on_validation(results):
    grid = _rows(results / "compare_synthetic_grid.csv")
    chosen = {r["method"]: r["hyperparams"] for r in _rows(results / "compare_synthetic.csv")}
    for method in ("fedmf", "pfedrec"):
        mine = [r for r in grid if r["method"] == method]
        assert len(mine) == len(compare.SPECS[method].grid) == 2
        best = max(mine, key=lambda r: float(r["val_hr@10"]))      # first on ties, as compare
        assert chosen[method] == best["hyperparams"]


def test_markdown_plot_and_skip_note(results):
    text = (results / "compare_synthetic.md").read_text()
    assert "| fedmf | 2 |" in text and "| pfedrec | 2 |" in text and " ± " in text
    assert "fedrap skipped" in text and "train.max_private_gb" in text
    # matplotlib is in the dev extra: a missing plot is a failure, not a skip.
    assert (results / "compare_synthetic_val_hr10.png").stat().st_size > 1000


def test_second_invocation_reuses_finished_runs(results):
    summaries = sorted((results / "runs").rglob("summary.json"))
    assert len(summaries) == 6                       # 2 methods x (2 grid points + 1 seed)
    assert not list((results / "runs").rglob("checkpoints"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    assert compare.main([*ARGS, "--out", str(results)]) == 0
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    saved = json.loads(summaries[0].read_text())["config"]
    assert saved["data"]["synthetic_users"] == 30 and saved["train"]["rounds"] == 2


def test_unknown_method_is_an_error(capsys):
    with pytest.raises(SystemExit):
        compare.main(["--methods", "nope"])
    assert "unknown method(s) nope" in capsys.readouterr().err
