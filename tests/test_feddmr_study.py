"""experiments/feddmr_study.py: the choice reads validation only, the coordinate-wise search
keeps the best point per knob, every planned point is a valid config, and end to end on tiny
synthetic data (2-round screens, a 2-point grid) it writes its CSVs and resumes."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from feddmr_jax import config as config_lib

ROOT = Path(__file__).resolve().parents[1]


def _load_study():
    path = ROOT / "experiments" / "feddmr_study.py"
    spec = importlib.util.spec_from_file_location("feddmr_study", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["feddmr_study"] = module
    spec.loader.exec_module(module)
    return module


study = _load_study()

TINY = ["--dataset", "synthetic", "--set", "data.synthetic_users=30",
        "--set", "data.synthetic_items=40", "--set", "data.synthetic_interactions=8.0",
        "--set", "data.eval_negatives=10", "--set", "model.dim=4"]
# init_scale does not change the compiled round: one compilation for the whole test.
GRID = '[{"model.init_scale": 0.1}, {"model.init_scale": 0.3}]'
ARGS = [*TINY, "--methods", "fedmf", "--grid", GRID, "--screen-rounds", "2",
        "--rounds", "2", "--seeds", "2", "--top", "1"]


def _row(hr, auc, test):
    return {"val_hr@10": hr, "val_auc": auc, **{f"test_{m}": test for m in study.METRICS}}


def test_choose_reads_validation_only():
    rows = [_row(0.50, 0.80, 0.9), _row(0.501, 0.70, 0.1), _row(0.40, 0.95, 1.0)]
    with pytest.raises(ValueError, match="test columns"):
        study.choose(rows, 0.002)
    view = study.validation_view(rows)
    assert all(not k.startswith("test") for r in view for k in r)
    # 0.501 and 0.50 are a near-tie: the higher AUC wins; 0.40 is out of the margin.
    assert study.choose(view, 0.002) == 0
    assert study.choose(view, 0.0) == 1
    flipped = study.validation_view([{**r, **{k: 1 - v for k, v in r.items()
                                              if k.startswith("test")}} for r in rows])
    assert study.choose(flipped, 0.002) == 0
    assert study.top_k(view, 2, 0.002) == [0, 1]


def test_sequential_search_keeps_the_best_per_knob(monkeypatch):
    """Knob by knob, the kept point is the validation best; test columns (made to favour
    other points) change nothing."""
    monkeypatch.setitem(study.KNOBS, "fedmf", (
        study.Knob("train.local_epochs", (1, 2, 5)),
        study.Knob("train.embedding_lr", (0.5, 1.0, 2.0), scale=True)))
    reference = config_lib.build_config({"train": {"model": "fedmf"}})
    config_of = lambda p: config_lib.build_config(  # noqa: E731
        {"train": {"model": "fedmf", **{k.split(".")[1]: v for k, v in p.items()}}})

    def searched(test_of):
        ran = []

        def run(point, step, knob):
            ran.append(point)
            cfg = config_of(point)
            hr = cfg.train.local_epochs / 10 - abs(cfg.train.embedding_lr - 0.2)
            return {"val_hr@10": hr, "val_auc": 0.5, "test_hr@10": test_of(hr)}

        seen = study.sequential_search(study.KNOBS["fedmf"], reference, config_of, run, 0.0)
        return seen, ran

    seen, ran = searched(lambda hr: hr)
    assert seen == [{}, {"train.local_epochs": 2}, {"train.local_epochs": 5},
                    {"train.embedding_lr": 0.05, "train.local_epochs": 5},
                    {"train.embedding_lr": 0.2, "train.local_epochs": 5}]
    assert ran.count({"train.local_epochs": 5}) == 2    # the kept point is rerun as-is
    assert searched(lambda hr: -hr)[0] == seen


def test_dry_run_builds_every_planned_point(capsys):
    assert study.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for method in study.KNOBS:
        assert f"\n{method}: " in f"\n{out}"
    assert "model.history_len=50" in out and "estimated CPU time" in out  # default is 0
    args = dict(dataset="ml-100k", data_dir=None, screen_rounds=30, near_tie=0.002)
    plan = study.plan("feddmr", study.argparse.Namespace(**args, max_points=5, knobs=None),
                      {}, None)
    assert len(plan) == 5 and plan[0] == {}
    plan = study.plan("feddmr", study.argparse.Namespace(
        **args, max_points=None, knobs="model.history_len,train.mu,model.nope"), {}, None)
    assert plan == [{}, {"model.history_len": 10}, {"model.history_len": 50},
                    {"train.mu": 0.0}, {"train.mu": 0.001}, {"train.mu": 0.1}]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    assert study.main([*ARGS, "--out", str(out)]) == 0
    return out


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_csvs_chosen_and_curves(results):
    rows = _rows(results / "study_runs.csv")
    assert [(r["stage"], r["seed"]) for r in rows] == [
        ("screen2", "0"), ("screen2", "0"), ("confirm2", "0"), ("confirm2", "1")]
    for column in ("method", "stage", "step", "knob", "point_id", "model.init_scale",
                   "train.embedding_lr", "train.local_epochs", "seed", "rounds", "best_round",
                   *(f"{s}_{m}" for s in ("val", "test") for m in study.METRICS),
                   "s_per_round", "wall_s"):
        assert column in rows[0], column
    screen = study.validation_view(rows[:2])
    best = rows[study.choose(screen, 0.002)]["point_id"]
    chosen = json.loads((results / "study_chosen.json").read_text())["fedmf"]
    assert chosen["finalists"] == [best] == [rows[2]["point_id"]] and chosen["seeds"] == [0, 1]
    curves = _rows(results / "study_curves.csv")
    assert len(curves) == 4 * 2 and {c["round"] for c in curves} == {"1", "2"}
    knobs = _rows(results / "study_knobs.csv")
    assert [k["knob"] for k in knobs] == [k.key for k in study.KNOBS["fedmf"]]
    pytest.importorskip("matplotlib")
    assert (results / "study_finalists.png").stat().st_size > 1000


def test_second_invocation_runs_nothing_and_ignores_test(results, monkeypatch):
    summaries = sorted((results / "runs").rglob("summary.json"))
    assert len(summaries) == 4 and not list((results / "runs").rglob("checkpoints"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    before = json.loads((results / "study_chosen.json").read_text())
    original = study.compare.run_one

    def inverted_test(cfg, run_dir):           # every test metric made to favour the other point
        summary = original(cfg, run_dir)
        return {**summary, "test": {k: 1.0 - v for k, v in summary["test"].items()}}

    monkeypatch.setattr(study.compare, "run_one", inverted_test)
    assert study.main([*ARGS, "--out", str(results)]) == 0
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    assert json.loads((results / "study_chosen.json").read_text()) == before
    rows = _rows(results / "study_runs.csv")
    first = json.loads(summaries[0].read_text())
    assert any(abs(float(r["test_hr@10"]) - (1 - first["test"]["hr@10"])) < 1e-9 for r in rows)
