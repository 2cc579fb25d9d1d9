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
    for method in study.METHODS:
        assert f"\n{method}: " in f"\n{out}"
    assert "model.history_len=50" in out and "estimated CPU time" in out  # default is 0
    for dataset in ("ml-100k", "lastfm-2k", "amazon-video"):      # one estimate per dataset
        assert f"  {dataset}: ~" in out
    assert "12 screen points" in out and "unequal screen budgets" not in out
    args = dict(dataset="ml-100k", data_dir=None, screen_rounds=30, near_tie=0.002)
    s = study.Study("feddmr", study.argparse.Namespace(**args, runs="r"), {})
    config_of = lambda p: s.config(p, seed=0, rounds=1)  # noqa: E731
    plan = study.plan("feddmr", study.argparse.Namespace(**args, max_points=5, knobs=None),
                      config_of, s.reference, None, [])
    assert len(plan) == 5 and plan[0] == {}
    plan = study.plan("feddmr", study.argparse.Namespace(
        **args, max_points=None, knobs="model.history_len,train.mu,model.nope"),
        config_of, s.reference, None, [])
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
    assert [(r["stage"], r["seed"], r["rounds"]) for r in rows] == [
        ("screen2", "0", "2"), ("screen2", "0", "2"), ("confirm", "0", "2"), ("confirm", "1", "2")]
    assert {r["dataset"] for r in rows} == {"synthetic"}
    for column in ("dataset", "method", "stage", "step", "knob", "point_id", "model.init_scale",
                   "train.embedding_lr", "train.local_epochs", "seed", "rounds", "best_round",
                   *(f"{s}_{m}" for s in ("val", "test") for m in study.METRICS),
                   "s_per_round", "wall_s"):
        assert column in rows[0], column
    screen = study.validation_view(rows[:2])
    best = rows[study.choose(screen, 0.002)]["point_id"]
    chosen = json.loads((results / "study_chosen.json").read_text())["fedmf"]
    assert chosen["finalists"] == [best] == [rows[2]["point_id"]] and chosen["seeds"] == [0, 1]
    curves = _rows(results / "study_curves.csv")
    assert len(curves) == 2 * 2 and {c["round"] for c in curves} == {"1", "2"}
    assert {c["stage"] for c in curves} == {"confirm"}   # screens' curves: in their folders
    assert all(c["dataset"] == "synthetic" and int(c["upload_bytes"]) > 0 for c in curves)
    knobs = _rows(results / "study_knobs.csv")
    assert [k["knob"] for k in knobs] == ["start", "start", *(k.key for k in study.KNOBS["fedmf"])]
    rounds = _rows(results / "study_rounds.csv")
    assert [(r["dataset"], r["method"], r["point_id"]) for r in rounds] == [
        ("synthetic", "fedmf", best)]
    pytest.importorskip("matplotlib")
    assert (results / "study_finalists.png").stat().st_size > 1000


def test_second_invocation_runs_nothing_and_ignores_test(results, monkeypatch):
    summaries = sorted((results / "runs").rglob("summary.json"))
    assert len(summaries) == 4
    kept = sorted(p.parent.name for p in (results / "runs").rglob("checkpoints"))
    assert kept == ["seed0", "seed1"]      # the confirmation's: it can be extended
    stamps = [p.stat().st_mtime_ns for p in summaries]
    before = json.loads((results / "study_chosen.json").read_text())
    original = study.run_folder.run_one

    def inverted_test(cfg, run_dir, **kw):     # every test metric made to favour the other point
        summary = original(cfg, run_dir, **kw)
        return {**summary, "test": {k: 1.0 - v for k, v in summary["test"].items()}}

    monkeypatch.setattr(study.run_folder, "run_one", inverted_test)
    assert study.main([*ARGS, "--out", str(results)]) == 0
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    assert json.loads((results / "study_chosen.json").read_text()) == before
    rows = _rows(results / "study_runs.csv")
    first = json.loads(summaries[0].read_text())
    assert any(abs(float(r["test_hr@10"]) - (1 - first["test"]["hr@10"])) < 1e-9 for r in rows)


def test_choose_never_takes_a_diverged_row():
    diverged = {"status": "diverged", "val_hr@10": "", "val_auc": "", "message": "nan"}
    rows = [diverged, {"status": "ok", "val_hr@10": 0.3, "val_auc": 0.6},
            {"val_hr@10": 0.2, "val_auc": 0.9}]            # no status column: a finished run
    assert study.choose(rows, 0.0) == 1 and study.choose(rows, 0.5) == 2
    assert study.top_k(rows, 3, 0.0) == [1, 2]
    with pytest.raises(ValueError, match="diverged"):
        study.choose([diverged], 0.0)


def test_diverged_point_is_recorded_never_chosen_and_not_retrained(tmp_path, capsys):
    """A screen point with embedding_lr 1e20 diverges (non-finite scores): the study goes on,
    confirms the other point, and a second invocation trains nothing."""
    grid = '[{"train.embedding_lr": 1e20}, {"model.init_scale": 0.1}]'
    args = [*TINY, "--methods", "fedmf", "--grid", grid, "--screen-rounds", "2", "--rounds", "2",
            "--seeds", "1", "--top", "2", "--out", str(tmp_path)]
    assert study.main(args) == 0
    err = capsys.readouterr().err
    rows = _rows(tmp_path / "study_runs.csv")
    assert [(r["stage"], r["status"]) for r in rows] == [
        ("screen2", "diverged"), ("screen2", "ok"), ("confirm", "ok")]
    assert "non-finite" in rows[0]["message"] and rows[0]["val_hr@10"] == ""
    chosen = json.loads((tmp_path / "study_chosen.json").read_text())["fedmf"]
    assert chosen["point_id"] == rows[1]["point_id"] == rows[2]["point_id"]
    assert chosen["finalists"] == [rows[1]["point_id"]]
    bad = tmp_path / "runs" / "fedmf" / "screen2" / rows[0]["point_id"] / "seed0"
    assert (bad / "diverged.json").is_file() and not (bad / "summary.json").exists()
    assert f"fedmf screen2 {rows[1]['point_id']} seed 0: round 2/2 loss " in err   # round lines
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    assert study.main(args) == 0
    assert "round 1/2" not in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((tmp_path / "study_chosen.json").read_text())["fedmf"] == chosen


def test_data_path_spelling_reuses_and_a_changed_field_is_an_error(results, tmp_path, capsys):
    summaries = sorted((results / "runs").rglob("summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    # data.data_dir given now (unset before): where the data lies, not what it is.
    assert study.main([*ARGS, "--out", str(results), "--data-dir", str(tmp_path)]) == 0
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    assert "round 1/2" not in capsys.readouterr().err
    assert study.main([*ARGS, "--out", str(results), "--set", "train.mu=0.5"]) == 2
    err = capsys.readouterr().err
    assert "runs/fedmf/screen2/" in err and "train.mu (saved 0.0, given 0.5)" in err
    assert "--rerun-changed" in err
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
