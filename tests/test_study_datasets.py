"""experiments/feddmr_study.py per dataset (issue 24), with a fake ``run_one`` (no training:
each run's curve is a function of its config), so that the whole protocol runs in seconds:

* every row of every CSV has its ``dataset``; two datasets write separate folders;
* every searched method screens the same number of points, starting from its reference
  values and the committed starting point (experiments/configs/study_starts.toml);
* choices read validation only, on every dataset (test columns made to favour other points);
* the popularity floor runs 1 round, the ablations at FedDMR's chosen point;
* ``--extend`` extends every confirmation alike while a mean curve still rises, records it,
  and a later invocation confirms at the recorded rounds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

import pytest

from feddmr_jax import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import feddmr_study as study  # noqa: E402
import study_knobs  # noqa: E402

SEARCHED = list(study_knobs.KNOBS)
SMALL = ["--set", "data.synthetic_users=30", "--set", "data.synthetic_items=40"]


def _level(cfg: config_lib.RunConfig) -> float:
    """A validation level in [0.2, 0.7) from the config (seed, rounds and the data file's path
    aside: a path under pytest's tmp_path differs per machine, and the choices must not)."""
    raw = config_lib.to_dict(cfg)
    raw["train"] = {k: v for k, v in raw["train"].items() if k not in ("seed", "rounds")}
    raw["data"] = {k: v for k, v in raw["data"].items() if k != "data_path"}
    digest = hashlib.sha1(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    return 0.2 + 0.5 * int(digest[:8], 16) / 16**8


class FakeRuns:
    """``run_one`` without training: validation rises with the round (``rising``: forever,
    else up to round 3), test = 1 - validation (favouring the points validation ranks last)."""

    def __init__(self, rising: bool = False):
        self.rising, self.calls = rising, []

    def __call__(self, cfg, run_dir, *, name=None, rerun_changed=False, keep_checkpoint=False,
                 extend=False):
        self.calls.append((Path(run_dir), cfg.train.rounds, cfg))
        level, seed = _level(cfg), cfg.train.seed
        curve = [level + 0.01 * seed + (0.002 * r if self.rising else 0.05 * min(r, 3))
                 for r in range(1, cfg.train.rounds + 1)]
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"round": r, "train_loss": 1.0 / r, "val": {"hr@10": v},
                             "upload_bytes": 1000 * r}) for r, v in enumerate(curve, 1)]
        (Path(run_dir) / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        best = max(range(len(curve)), key=lambda i: (curve[i], i))
        val = {m: curve[best] for m in study.METRICS}
        return {"best_round": best + 1, "val": val, "test": {m: 1.0 - v for m, v in val.items()},
                "round_seconds": 0.1, "total_seconds": 1.0}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def fake(monkeypatch):
    runs = FakeRuns()
    monkeypatch.setattr(study.run_folder, "run_one", runs)
    return runs


@pytest.fixture()
def csv_file(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("".join(f"u{u},i{(u * 7 + k) % 40},1,{k}\n" for u in range(30)
                            for k in range(8)))
    return path


def test_two_datasets_write_separate_folders_with_a_dataset_column(fake, tmp_path, csv_file,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)                       # the default --out / --runs layout
    common = ["--screen-rounds", "2", "--rounds", "4", "--seeds", "2", "--top", "1",
              "--max-points", "5"]
    assert study.main(["--dataset", "synthetic", *SMALL, *common]) == 0
    assert study.main(["--dataset", "csv", "--set", f"data.data_path={csv_file}",
                       *common]) == 0
    for dataset in ("synthetic", "csv"):
        out = tmp_path / "docs" / "results" / f"study_{dataset}"
        for name in ("study_runs.csv", "study_curves.csv", "study_knobs.csv", "study_rounds.csv"):
            rows = _rows(out / name)
            assert rows and {r["dataset"] for r in rows} == {dataset}, name
        runs = _rows(out / "study_runs.csv")
        assert (tmp_path / "results" / f"study_{dataset}" / "runs" / "feddmr" / "confirm").is_dir()
        chosen = json.loads((out / "study_chosen.json").read_text())
        assert set(chosen) == set(study_knobs.METHODS)
        skipped = {m for m, c in chosen.items() if "skipped" in c}
        assert skipped <= set(study_knobs.ABLATIONS)   # an ablation equal to FedDMR's choice
        assert {r["method"] for r in runs} == set(study_knobs.METHODS) - skipped
    assert {Path(d).parts[1] for d, _, _ in fake.calls} == {"study_synthetic", "study_csv"}


def test_every_method_screens_the_same_number_of_points_from_both_starts(fake, tmp_path):
    assert study.main(["--dataset", "synthetic", *SMALL, "--stage", "screen",
                       "--screen-rounds", "2", "--max-points", "9", "--out", str(tmp_path)]) == 0
    runs = _rows(tmp_path / "study_runs.csv")
    starts = study_knobs.read_starts(study_knobs.STARTS_FILE)
    for method in SEARCHED:
        mine = [r for r in runs if r["method"] == method]
        assert len({r["point_id"] for r in mine}) == 9, method
        step0 = [r for r in mine if r["step"] == "0"]
        reference = study.Study(method, study.parse_args(
            ["--dataset", "synthetic", *SMALL, "--out", str(tmp_path)]), {}).reference
        second = study_knobs.canonical(starts[method][0], reference)
        assert [r["point_id"] for r in step0] == ["reference"] + (
            [study.point_id(second)] if second else [])
    knobs = _rows(tmp_path / "study_knobs.csv")
    fedncf = [json.loads(k["values"]) for k in knobs
              if k["method"] == "fedncf" and k["knob"] == "start"]
    assert fedncf == [{}, {"train.embedding_lr": 0.2, "train.lr": 0.003, "train.mu": 0.001}]


def test_starting_points_are_the_committed_ml100k_choices():
    starts = study_knobs.read_starts(study_knobs.STARTS_FILE)
    assert set(starts) == set(SEARCHED)
    chosen = json.loads((ROOT / "docs" / "results" / "study_ml-100k" / "study_chosen.json")
                        .read_text())
    for method in ("fedmf", "fedncf", "pfedrec"):        # relative to today's reference values
        assert starts[method] == [chosen[method]["settings"]], method
    assert starts["feddmr"] == [{"model.norm": "pre", "model.history_len": 0,
                                 "train.batch_size": 64}]
    assert starts["fedrap"][0]["model.lr_args"] == 1000.0


def test_choices_read_validation_only_on_every_dataset(fake, tmp_path, csv_file, monkeypatch):
    """Test columns (1 - validation) favour the points validation ranks last; the choices are
    validation's, per dataset, and they would not move if the test columns were flipped."""
    common = ["--methods", "fedmf,fedncf", "--screen-rounds", "2", "--rounds", "3",
              "--seeds", "2", "--top", "2", "--max-points", "6"]
    chosen = {}
    for dataset, extra in (("synthetic", SMALL), ("csv", ["--set", f"data.data_path={csv_file}"])):
        out = tmp_path / dataset
        assert study.main(["--dataset", dataset, *extra, *common, "--out", str(out)]) == 0
        runs = _rows(out / "study_runs.csv")
        chosen[dataset] = json.loads((out / "study_chosen.json").read_text())
        for method in ("fedmf", "fedncf"):
            confirm = [r for r in runs if r["method"] == method and r["stage"] == "confirm"]
            by_point = {}
            for r in confirm:
                by_point.setdefault(r["point_id"], []).append(float(r["val_hr@10"]))
            best = max(by_point, key=lambda p: sum(by_point[p]))
            assert chosen[dataset][method]["point_id"] == best
            assert "test_hr@10" not in json.dumps(chosen[dataset][method])
    with pytest.raises(ValueError, match="test columns"):
        study.choose([{"val_hr@10": 1, "val_auc": 1, "test_auc": 0}], 0.0)


def test_floor_runs_one_round_and_ablations_run_at_feddmrs_choice(fake, tmp_path):
    assert study.main(["--dataset", "synthetic", *SMALL, "--methods",
                       "feddmr,popularity,feddmr_no_attention,feddmr_1layer", "--screen-rounds",
                       "2", "--rounds", "3", "--seeds", "2", "--top", "1", "--max-points", "4",
                       "--out", str(tmp_path)]) == 0
    chosen = json.loads((tmp_path / "study_chosen.json").read_text())
    runs = _rows(tmp_path / "study_runs.csv")
    floor = [r for r in runs if r["method"] == "popularity"]
    assert [(r["stage"], r["rounds"], r["seed"]) for r in floor] == [("confirm", "1", "0"),
                                                                     ("confirm", "1", "1")]
    for name, setting in study_knobs.ABLATIONS.items():
        assert chosen[name]["point_id"] == chosen["feddmr"]["point_id"]
        assert chosen[name]["settings"] == {**chosen["feddmr"]["settings"], **setting}
        cfgs = [cfg for d, _, cfg in fake.calls if f"/{name}/confirm/" in str(d)]
        assert len(cfgs) == 2 and all(
            getattr(c.model, k.split(".")[1]) == v for c in cfgs for k, v in setting.items())
    with pytest.raises(SystemExit):
        study.parse_args(["--methods", "feddmr_1layer"])     # needs feddmr's choice


def test_an_ablation_equal_to_feddmrs_choice_is_skipped_not_rerun(fake, tmp_path):
    """On lastfm-2k the screen chose model.layers = 1: the one-layer ablation would be
    FedDMR's own confirmation again (hours of identical runs, a meaningless row)."""
    assert study.main(["--dataset", "synthetic", *SMALL, "--methods",
                       "feddmr,feddmr_no_attention,feddmr_1layer", "--screen-rounds", "2",
                       "--rounds", "3", "--seeds", "2", "--top", "1", "--grid",
                       '[{"model.layers": 1}]', "--out", str(tmp_path)]) == 0
    chosen = json.loads((tmp_path / "study_chosen.json").read_text())
    assert chosen["feddmr"]["settings"] == {"model.layers": 1}
    assert "the ablation is FedDMR itself" in chosen["feddmr_1layer"]["skipped"]
    assert not [d for d, _, _ in fake.calls if "/feddmr_1layer/" in str(d)]
    assert chosen["feddmr_no_attention"]["settings"] == {"model.layers": 1,
                                                         "model.attention": False}


def test_extend_every_confirmation_while_a_curve_rises(tmp_path, monkeypatch):
    rising = FakeRuns(rising=True)
    monkeypatch.setattr(study.run_folder, "run_one", rising)
    args = ["--dataset", "synthetic", *SMALL, "--methods", "fedmf,fedncf,popularity",
            "--screen-rounds", "2", "--rounds", "3", "--seeds", "2", "--top", "1",
            "--max-points", "3", "--out", str(tmp_path)]
    assert study.main([*args, "--extend", "2", "--max-rounds", "7"]) == 0
    record = json.loads((tmp_path / "study_extension.json").read_text())
    assert record["rounds"] == 7 and [s["to"] for s in record["steps"]] == [5, 7]
    runs = _rows(tmp_path / "study_runs.csv")
    confirm = [r for r in runs if r["stage"] == "confirm" and r["method"] != "popularity"]
    assert len(confirm) == 4 and {r["rounds"] for r in confirm} == {"7"}
    extended = [rounds for d, rounds, _ in rising.calls if "/confirm/" in str(d)
                and "/popularity/" not in str(d)]
    assert extended == [3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7]   # every method alike
    curves = _rows(tmp_path / "study_curves.csv")
    assert max(int(c["round"]) for c in curves if c["stage"] == "confirm") == 7
    rising.calls.clear()                      # a later invocation confirms at the record
    assert study.main(args) == 0
    assert {rounds for d, rounds, _ in rising.calls if "/confirm/" in str(d)
            and "/popularity/" not in str(d)} == {7}


def test_server_knobs_come_last_and_the_lr_grid_follows_the_optimizer():
    """Issue 25 item 5: the server optimizer, then its lr on that optimizer's grid, after the
    knobs of the committed ml-100k search (same keys, same values, same order)."""
    committed = _rows(ROOT / "docs" / "results" / "feddmr_study" / "study_knobs.csv")
    for method, knobs in study_knobs.KNOBS.items():
        assert [k.key for k in knobs[-2:]] == ["train.server_optimizer", "train.server_lr"]
        before = [(k["knob"], json.loads(k["values"])) for k in committed if k["method"] == method]
        if before:                                    # fedrap was not searched on ml-100k
            assert [(k.key, list(k.values)) for k in knobs[:-2]] == before, method
    reference = config_lib.build_config({"train": {"model": "fedmf"}})
    config_of = lambda p: config_lib.build_config(  # noqa: E731
        {"train": {"model": "fedmf", **{k.split(".")[1]: v for k, v in p.items()}}})
    adam = {"train.server_lr": 0.1, "train.server_optimizer": "adam"}

    def run(point, step, knob):                       # validation prefers adam at lr 0.1
        return {"val_hr@10": 0.5 + 0.1 * (point == adam), "val_auc": 0.5}

    seen = study.sequential_search(study_knobs.SERVER_KNOBS, reference, config_of, run, 0.0)
    assert seen == [{}, *({"train.server_lr": 0.1, "train.server_optimizer": name}
                          for name in ("momentum", "adam", "yogi", "adagrad")),
                    {**adam, "train.server_lr": 0.01},
                    {"train.server_optimizer": "adam"}]     # lr 1.0 is the reference's
