"""`feddmr train`: the two-round smoke run, config files, flags and user errors."""

from __future__ import annotations

import json
import math

import pytest

from feddmr_jax import cli
from feddmr_jax.config import RunConfig, apply_overrides, load_config_file
from feddmr_jax.errors import ConfigError

from run_helpers import assert_best_round

TINY_FLAGS = ["--dataset", "synthetic", "--rounds", "2", "--dim", "8", "--heads", "2",
              "--history-len", "4", "--batch-size", "16", "--chunk-size", "8", "--quiet"]


def _tiny_toml(tmp_path, extra: str = "") -> str:
    path = tmp_path / "run.toml"
    path.write_text(
        "[data]\ndataset = \"synthetic\"\nsynthetic_users = 30\nsynthetic_items = 40\n"
        "synthetic_interactions = 8.0\neval_negatives = 10\n"
        "[train]\nrounds = 5\nlr = 0.02\n" + extra)
    return str(path)


def test_two_round_smoke_run_writes_finite_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--config", _tiny_toml(tmp_path), *TINY_FLAGS, "--out", str(out)])
    assert rc == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["train"]["rounds"] == 2          # flag overrode the file's 5
    assert summary["config"]["train"]["lr"] == 0.02           # file value kept
    for split in ("val", "test"):
        for key in ("hr@10", "ndcg@10", "auc", "precision@10"):
            assert math.isfinite(summary[split][key]) and 0.0 <= summary[split][key] <= 1.0
    assert_best_round(summary["best_round"], lines, "hr@10")
    for key in ("round_seconds", "compile_seconds"):
        assert summary[key] > 0
    assert summary["devices"]
    assert "best_round" in capsys.readouterr().out
    # A second run into the same folder is refused without --overwrite.
    rc = cli.main(["train", "--config", _tiny_toml(tmp_path), *TINY_FLAGS, "--out", str(out)])
    assert rc == 2
    assert "holds another run" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--rounds", "0"], "train.rounds must be positive"),
    (["--rounds", "-3"], "train.rounds must be positive"),
    (["--mu", "-0.1"], "train.mu must be >= 0"),
    (["--heads", "5"], "must divide model.dim"),
    (["--client-fraction", "1.5"], "client_fraction must be in (0, 1]"),
    (["--client-fraction", "0"], "client_fraction must be in (0, 1]"),
    (["--model", "nope"], "invalid choice: 'nope'"),
    (["--aggregator", "nope"], "invalid choice: 'nope'"),
    (["--fault-nan", "1.5"], "must be in [0, 1)"),
    (["--fault-client-dropout", "-0.1"], "must be in [0, 1)"),
    (["--dropout", "0.1"], "did you mean --model-dropout or --fault-client-dropout?"),
    (["--drop", "0.1"], "did you mean --model-dropout or --fault-client-dropout?"),
    (["--round", "3"], "did you mean --rounds"),
    (["--dataset", "nope"], "nope"),
    (["--dataset", "ml-100k", "--data-dir", "/nonexistent/feddmr"], "/nonexistent/feddmr"),
    (["--config", "/nonexistent/run.toml"], "config file not found"),
    (["--rounds", "two"], "invalid int value"),
])
def test_user_errors_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDDMR_OFFLINE", "1")
    monkeypatch.setenv("FEDDMR_CACHE_DIR", str(tmp_path / "cache"))
    rc = cli.main(["train", *argv, "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


def test_config_file_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key train.roundz"):
        load_config_file(_tiny_toml(tmp_path, "roundz = 3\n"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nrounds = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="unknown section"):
        apply_overrides(RunConfig(), {"optim": {"lr": 1.0}})
    with pytest.raises(ConfigError, match="train.rounds must be an integer"):
        apply_overrides(RunConfig(), {"train": {"rounds": "ten"}})
    cfg = load_config_file(_tiny_toml(tmp_path))
    assert cfg.train.rounds == 5 and cfg.data.synthetic_users == 30


@pytest.mark.parametrize("content, message", [
    ("[train\nrounds = 3", "is not valid TOML"),
    ("[train]\nroundz = 3\n", "unknown key train.roundz"),
    ("[optim]\nlr = 1.0\n", "unknown section [optim]"),
])
def test_bad_config_files_are_one_line_exit_2(content, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    rc = cli.main(["train", "--config", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert message in err and str(path) in err and "Traceback" not in err


@pytest.mark.parametrize("content, message", [
    ("[train]\nroundz = 3\n", "unknown key train.roundz; did you mean train.rounds? (known: "),
    ("[train]\nembeding_lr = 0.1\n", "did you mean train.embedding_lr?"),
    ("[model]\nhistory = 4\n", "did you mean model.history_len?"),
    ("[trian]\nrounds = 3\n", "unknown section [trian]; did you mean [train]?"),
])
def test_unknown_toml_keys_and_sections_suggest_the_near_name(content, message, tmp_path,
                                                              capsys):
    path = tmp_path / "typo.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    rc = cli.main(["train", "--config", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_unreadable_config_file(tmp_path, capsys):
    """A path that cannot be read as a file (here: a folder) is a one-line error."""
    folder = tmp_path / "conf.toml"
    folder.mkdir()
    rc = cli.main(["train", "--config", str(folder), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "cannot read config file" in err and "Traceback" not in err
