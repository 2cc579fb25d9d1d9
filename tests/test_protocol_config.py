"""The protocol's config fields: in TOML files, flags, config.json, summary.json and --resume."""

from __future__ import annotations

import json

import pytest

from feddmr_jax import cli
from feddmr_jax import config as config_lib
from feddmr_jax.errors import ConfigError
from feddmr_jax.train import Interrupted, load_run_config, train

FLAGS = ["--dataset", "synthetic", "--model", "fedmf", "--dim", "4", "--rounds", "2",
         "--batch-size", "16", "--chunk-size", "8", "--quiet", "--checkpoint-every", "1"]
TOML = ("[data]\nsynthetic_users = 20\nsynthetic_items = 40\nsynthetic_interactions = 8.0\n"
        "eval_negatives = 10\ntie_break = \"random\"\nseed = 3\n"
        "train_negatives = \"reference\"\n[train]\neval_mode = \"local\"\n")


def test_defaults():
    cfg = config_lib.RunConfig()
    assert (cfg.data.tie_break, cfg.data.seed, cfg.data.train_negatives) == ("row", 0, "strict")
    assert cfg.train.eval_mode is None


@pytest.mark.parametrize("raw, message", [
    ({"data": {"tie_break": "item"}}, "data.tie_break must be row or random"),
    ({"data": {"train_negatives": "all"}}, "data.train_negatives must be strict or reference"),
    ({"train": {"eval_mode": "both"}}, "train.eval_mode must be default, global or local"),
    ({"train": {"lr": -1.0}}, "train.lr must be >= 0"),
])
def test_bad_values_are_config_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.build_config(raw).validate()


def test_flags_are_in_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--tie-break", "--train-negatives", "--eval-mode"):
        assert flag in out


def test_toml_and_flags_reach_config_json_and_resume_keeps_them(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    cfg = config_lib.load_config_file(path)
    assert (cfg.data.tie_break, cfg.data.seed, cfg.data.train_negatives,
            cfg.train.eval_mode) == ("random", 3, "reference", "local")
    out = tmp_path / "run"
    # The flags override the file.
    argv = ["train", "--config", str(path), *FLAGS, "--out", str(out), "--tie-break", "row",
            "--train-negatives", "strict", "--eval-mode", "global"]
    args = cli.build_parser().parse_args(argv)
    flagged = cli._train_config(args)
    assert (flagged.data.tie_break, flagged.data.train_negatives,
            flagged.train.eval_mode) == ("row", "strict", "global")
    # A run interrupted after round 1, then resumed from its folder.
    run_cfg = config_lib.load_config_file(path)
    run_cfg = config_lib.apply_overrides(run_cfg, {"train": {
        "model": "fedmf", "rounds": 2, "batch_size": 16, "chunk_size": 8,
        "checkpoint_every": 1}, "model": {"dim": 4}})
    with pytest.raises(Interrupted):
        train(run_cfg, out, progress=False, stop_after_round=1)
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["tie_break"] == "random" and saved["data"]["seed"] == 3
    assert saved["data"]["train_negatives"] == "reference"
    assert saved["train"]["eval_mode"] == "local"
    assert load_run_config(out) == run_cfg
    assert cli.main(["train", "--resume", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] and summary["eval_mode"] == "local"
    assert summary["config"]["data"]["train_negatives"] == "reference"
    assert summary["config"]["data"]["tie_break"] == "random"
