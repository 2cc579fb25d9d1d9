"""experiments/run_folder.py through compare.py, on tiny data (2 rounds, dim 4):

* a diverged point is a ``diverged`` row, never chosen, and not trained again;
* a finished run is matched by its data's content, not by the spelling of its data path;
  a changed field is an error naming the run and the field, and deletes nothing; with
  ``--rerun-changed`` the run trains again;
* a line per round on stderr, named after the run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.errors import ConfigError, DataError, DivergedError, FeddmrError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import compare  # noqa: E402

TINY = ["--seeds", "1", "--rounds", "2", "--methods", "fedmf", "--grid", "none",
        "--set", "data.eval_negatives=10", "--set", "model.dim=4"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _stamps(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _main(args: list[str]) -> tuple[int, str]:
    """compare.main's exit code and stderr (round lines come from another thread)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = compare.main(args)
    return code, err.getvalue()


# ----------------------------------------------------------------------------- divergence

def test_diverged_point_is_recorded_never_chosen_and_not_retrained(tmp_path, monkeypatch):
    """A learning rate of 1e20 makes every score non-finite: evaluation raises; the grid
    goes on, the other point is chosen, and a second invocation trains nothing."""
    monkeypatch.setitem(compare.SPECS, "fedmf", compare.Spec("fedmf", {}, (
        {"train.embedding_lr": 1e20}, {"train.embedding_lr": 0.1})))
    args = ["--datasets", "synthetic", "--seeds", "2", "--rounds", "2", "--methods", "fedmf",
            "--set", "data.synthetic_users=30", "--set", "data.synthetic_items=40",
            "--set", "data.eval_negatives=10", "--set", "model.dim=4", "--out", str(tmp_path)]
    code, err = _main(args)
    assert code == 0, err
    grid = _rows(tmp_path / "compare_synthetic_grid.csv")
    assert [r["status"] for r in grid] == ["diverged", "ok"]
    assert "non-finite" in grid[0]["message"] and grid[0]["val_hr@10"] == ""
    rows = _rows(tmp_path / "compare_synthetic.csv")
    assert [(r["seed"], r["status"]) for r in rows] == [("0", "ok"), ("1", "ok")]
    assert {r["hyperparams"] for r in rows} == {json.dumps({"train.embedding_lr": 0.1})}
    bad = tmp_path / "runs" / "synthetic" / "fedmf" / "embedding_lr=1e+20" / "seed0"
    record = json.loads((bad / "diverged.json").read_text())
    assert "non-finite" in record["message"] and record["config"]["train"]["embedding_lr"] == 1e20
    assert not (bad / "summary.json").exists() and not (bad / "checkpoints").exists()
    assert "embedding_lr=1e+20 seed 0: diverged" in err
    stamps = _stamps(tmp_path / "runs")
    code, err = _main(args)
    assert code == 0, err
    assert _stamps(tmp_path / "runs") == stamps                 # nothing trained again
    assert "round 1/2" not in err
    assert _rows(tmp_path / "compare_synthetic_grid.csv")[0]["status"] == "diverged"


def test_engine_errors_are_divergence_and_others_are_not():
    import jax
    from run_folder import is_divergence

    assert is_divergence(FloatingPointError("nan"))
    assert is_divergence(DivergedError("no client upload was accepted in 3 rounds in a row"))
    assert is_divergence(DivergedError("evaluation: ... the model diverged"))
    assert not is_divergence(RuntimeError("a bug"))
    assert not is_divergence(FeddmrError("some other user error"))
    assert not is_divergence(ConfigError("train.lr"))
    assert not is_divergence(DataError("u.data"))
    assert not is_divergence(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory"))
    assert not is_divergence(ValueError("a bug"))


def test_a_stop_raised_by_training_is_kept_and_not_retrained(tmp_path, monkeypatch):
    import run_folder

    calls = []

    def stops(cfg, out_dir, **kw):
        calls.append(out_dir)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.json").write_text(json.dumps(run_folder.config_json(cfg)))
        (Path(out_dir) / "metrics.jsonl").write_text("")
        raise DivergedError("no client upload was accepted in 3 rounds in a row")

    monkeypatch.setattr(run_folder, "train", stops)
    cfg = config_lib.build_config({"train": {"model": "fedmf", "rounds": 2}})
    for _ in range(2):
        with pytest.raises(run_folder.RunDiverged, match="no client upload was accepted"):
            run_folder.run_one(cfg, tmp_path / "run")
    assert len(calls) == 1
    assert json.loads((tmp_path / "run" / "diverged.json").read_text())["error"] == "DivergedError"


# ----------------------------------------------------------------------------- reuse

@pytest.fixture()
def csv_data(tmp_path):
    """30 users x 8 of 40 items, timestamped, in ``tmp_path/data/ratings.csv``."""
    rng = np.random.default_rng(0)
    lines = [f"u{u},i{i},1,{1000 * u + t}" for u in range(30)
             for t, i in enumerate(rng.choice(40, size=8, replace=False))]
    path = tmp_path / "data" / "ratings.csv"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def test_path_spelling_reuses_and_a_changed_field_deletes_nothing(tmp_path, csv_data,
                                                                   monkeypatch):
    out = tmp_path / "out"
    first = ["--datasets", "csv", *TINY, "--out", str(out), "--data-dir", str(csv_data.parent),
             "--set", f"data.data_path={csv_data}"]
    code, err = _main(first)
    assert code == 0, err
    run = out / "runs" / "csv" / "fedmf" / "embedding_lr=0.1" / "seed0"
    stamps = _stamps(out / "runs")

    # $FEDDMR_DATA_DIR instead of --data-dir, and a relative data path: the same run.
    monkeypatch.chdir(csv_data.parent)
    monkeypatch.setenv("FEDDMR_DATA_DIR", str(csv_data.parent))
    relative = ["--datasets", "csv", *TINY, "--out", str(out),
                "--set", "data.data_path=ratings.csv"]
    code, err = _main(relative)
    assert code == 0, err
    assert _stamps(out / "runs") == stamps and "round 1/2" not in err
    assert json.loads((run / "data_fingerprint.json").read_text())["rows"] == 240

    # How runs are kept (checkpoints, the store's bound) is not a change: the same run.
    code, err = _main([*relative, "--set", "train.keep_checkpoints=0", "--set",
                       "train.max_private_gb=12", "--set", "train.checkpoint_every=1"])
    assert code == 0, err
    assert _stamps(out / "runs") == stamps and "round 1/2" not in err

    # A field that changes results: an error naming the run and the field; nothing deleted.
    code, err = _main([*relative, "--set", "train.mu=0.5"])
    assert code == 2
    assert str(run) in err and "train.mu (saved 0.0, given 0.5)" in err and "--rerun-changed" in err
    assert _stamps(out / "runs") == stamps

    # Other data content at the same path: an error too.
    original = csv_data.read_text()
    csv_data.write_text(original.replace("u0,", "u99,", 1))
    code, err = _main(relative)
    assert code == 2 and "data content" in err and str(run) in err
    assert _stamps(out / "runs") == stamps
    csv_data.write_text(original)

    # --rerun-changed: trained again with the new value.
    code, err = _main([*relative, "--set", "train.mu=0.5", "--rerun-changed"])
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["train"]["mu"] == 0.5 and "round 2/2" in err


# ----------------------------------------------------------------------------- progress

def test_a_line_per_round_named_after_the_run(tmp_path):
    code, err = _main(["--datasets", "synthetic", *TINY, "--out", str(tmp_path),
                       "--set", "data.synthetic_users=30", "--set", "data.synthetic_items=40"])
    assert code == 0, err
    lines = [line for line in err.splitlines() if ": round " in line]
    assert [line.split(" loss ")[0] for line in lines] == [
        "synthetic fedmf embedding_lr=0.1 seed 0: round 1/2",
        "synthetic fedmf embedding_lr=0.1 seed 0: round 2/2"]
    assert all(" val hr@10 0." in line and " s/round" in line for line in lines)


def test_an_interrupted_run_resumes_whatever_the_path_spelling(tmp_path, capsys):
    import run_folder
    from feddmr_jax.train import Interrupted, train

    raw = {"data": {"dataset": "synthetic", "synthetic_users": 30, "synthetic_items": 40,
                    "eval_negatives": 10, "data_dir": str(tmp_path)},
           "model": {"dim": 4}, "train": {"model": "fedmf", "rounds": 2, "eval_every": 1}}
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(config_lib.build_config(raw), run, progress=False, stop_after_round=1)
    elsewhere = {**raw, "data": {**raw["data"], "data_dir": "./" + tmp_path.name}}
    changed = {**raw, "train": {**raw["train"], "mu": 0.5}}
    with pytest.raises(run_folder.ConfigChanged, match=r"unfinished .*train\.mu"):
        run_folder.run_one(config_lib.build_config(changed), run)
    assert (run / "checkpoints").is_dir()                        # nothing deleted
    capsys.readouterr()
    summary = run_folder.run_one(config_lib.build_config(elsewhere), run, name="r")
    assert summary["resumed"] and summary["rounds_run"] == 2
    err = capsys.readouterr().err
    assert "r: round 2/2 loss" in err and "round 1/2" not in err   # round 2 only trained
    assert summary["config"]["data"]["data_dir"] == str(tmp_path)


def test_a_round_without_accepted_upload_gets_a_line_too(tmp_path):
    from round_lines import RoundLines

    path = tmp_path / "metrics.jsonl"
    lines = RoundLines("run", path, 2)
    path.write_text(json.dumps({"round": 1, "train_loss": None, "accepted": 0}) + "\n")
    assert lines.line(json.loads(path.read_text())) == "run: round 1/2 no upload accepted"


# ----------------------------------------------------------------------------- extension

def test_a_finished_run_is_extended_only_when_asked(tmp_path, capsys):
    """``extend=True``: a finished run with fewer rounds resumes from its kept checkpoint (or,
    without one, trains again from round 1); either way its rounds equal a fresh run's."""
    import run_folder

    raw = {"data": {"dataset": "synthetic", "synthetic_users": 30, "synthetic_items": 40,
                    "eval_negatives": 10},
           "model": {"dim": 4}, "train": {"model": "fedmf", "rounds": 2, "eval_every": 1}}
    short = config_lib.build_config(raw)
    longer = config_lib.build_config({**raw, "train": {**raw["train"], "rounds": 3}})
    kept, dropped, fresh = tmp_path / "kept", tmp_path / "dropped", tmp_path / "fresh"
    run_folder.run_one(short, kept, keep_checkpoint=True)
    run_folder.run_one(short, dropped)
    assert (kept / "checkpoints").is_dir() and not (dropped / "checkpoints").exists()
    with pytest.raises(run_folder.ConfigChanged, match=r"train\.rounds"):
        run_folder.run_one(longer, kept)                   # not asked: an error
    capsys.readouterr()
    summary = run_folder.run_one(longer, kept, name="k", keep_checkpoint=True, extend=True)
    err = capsys.readouterr().err
    assert summary["resumed"] and summary["rounds_run"] == 3
    assert "k: round 3/3 loss" in err and "round 1/3" not in err      # round 3 only
    summary = run_folder.run_one(longer, dropped, name="d", extend=True)
    err = capsys.readouterr().err
    assert "no checkpoint kept" in err and "d: round 1/3 loss" in err and summary["rounds_run"] == 3
    run_folder.run_one(longer, fresh)
    curves = [[(r["round"], r["val"]["hr@10"], r["train_loss"]) for r in map(
        json.loads, (folder / "metrics.jsonl").read_text().splitlines())]
        for folder in (kept, dropped, fresh)]
    assert curves[0] == curves[1] == curves[2] and len(curves[0]) == 3
    assert run_folder.run_one(longer, kept, extend=True)["rounds_run"] == 3   # nothing to do
