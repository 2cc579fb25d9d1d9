"""The Python API: RunConfig.create, train()'s run-folder rules, progress and its ETA."""

from __future__ import annotations

import json
import logging

import pytest

from feddmr_jax import cli, config as config_lib
from feddmr_jax.config import RunConfig
from feddmr_jax.errors import ConfigError
from feddmr_jax.models import FedRAPConfig, PFedRecConfig
from feddmr_jax.progress import Progress
from feddmr_jax.train import train

from engine_helpers import tiny_config


def test_create_sorts_keys_into_sections_and_applies_method_defaults():
    cfg = RunConfig.create(model="fedrap", dataset="ml-100k", rounds=7, dim=8,
                           data_dir="/data", sections={"model": {"mu": 0.3}})
    assert cfg.train.model == "fedrap" and cfg.train.rounds == 7
    assert cfg.data.dataset == "ml-100k" and cfg.data.data_dir == "/data"
    assert cfg.model == FedRAPConfig(dim=8, mu=0.3)
    # FedRAP's reference [train] values (methods.py), as from a TOML file:
    assert cfg == config_lib.build_config({"data": {"dataset": "ml-100k", "data_dir": "/data"},
                                           "train": {"model": "fedrap", "rounds": 7},
                                           "model": {"dim": 8, "mu": 0.3}})
    assert RunConfig.create() == config_lib.build_config({})
    # pfedrec ignores train.lr: a flat lr is its [model] lr.
    assert RunConfig.create(model="pfedrec", lr=0.3).model == PFedRecConfig(lr=0.3)


@pytest.mark.parametrize("kwargs, message", [
    ({"lam": 0.1}, r"unknown key 'lam' for model 'feddmr' \(it is a \[model\] key of fedrap\)"),
    ({"nope": 1}, r"unknown key 'nope' .*train: .*rounds.*model \(feddmr\): .*heads"),
    ({"model": "fedrap", "mu": 0.1}, r"'mu' is a key of both \[train\] and \[model\]"),
    ({"model": "fedmf", "heads": 2}, r"unknown key 'heads' for model 'fedmf'"),
    ({"rounds": 0}, r"train.rounds must be positive"),
    ({"dim": "8"}, r"model.dim must be an integer"),
    ({"sections": {"modle": {}}}, r"unknown section 'modle'; did you mean 'model'\?"),
    ({"embeding_lr": 0.1}, r"unknown key 'embeding_lr' for model 'feddmr'; did you mean "
                           r"'embedding_lr'\?"),
    ({"model": "fedrap", "lr_arg": 1.0}, r"did you mean 'lr_args'\?"),
    ({"model": "nope"}, r"unknown model 'nope'"),
])
def test_create_errors_name_the_key_and_its_section(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.create(**kwargs)


def _fake_run(folder, cfg) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_lib.to_dict(cfg)))
    (folder / "metrics.jsonl").write_text("")


def test_train_refuses_a_folder_holding_a_run(tmp_path):
    cfg = tiny_config()
    _fake_run(tmp_path / "run", cfg)
    with pytest.raises(ConfigError, match=r"holds another run; pass resume=True .* "
                                          r"overwrite=True"):
        train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").exists()        # nothing was deleted
    with pytest.raises(ConfigError, match="cannot resume: .* holds no run"):
        train(cfg, tmp_path / "empty", progress=False, resume=True)


def test_resume_refuses_a_changed_config_but_rounds(tmp_path):
    cfg = tiny_config()
    _fake_run(tmp_path / "run", cfg)
    changed = tiny_config(lr=0.5, rounds=9)
    with pytest.raises(ConfigError, match=r"only train.rounds may change\): train.lr "
                                          r"\(saved 0.05, given 0.5\)$"):
        train(changed, tmp_path / "run", progress=False, resume=True)


def test_eta_uses_steady_rounds_of_this_process(capsys):
    bar = Progress(1, 10, True)
    bar.update(1, 50.0, 49.0, 0.5, {"hr@10": 0.1, "auc": 0.5})    # compiles: no ETA yet
    assert bar.eta(1) is None
    bar.update(2, 2.0, 0.0, 0.5, None)
    bar.update(3, 4.5, 0.5, 0.5, None)     # compile time inside a round is not steady time
    assert bar.eta(3) == pytest.approx(3.0 * 7)
    resumed = Progress(6, 10, True)       # after --resume at round 5: rounds of this process
    resumed.update(6, 30.0, 29.0, 0.5, None)
    resumed.update(7, 2.0, 0.0, 0.5, {"hr@10": 0.1, "auc": 0.5})
    assert resumed.eta(7) == pytest.approx(2.0 * 3)
    lines = capsys.readouterr().err.splitlines()
    # Not a terminal: the compile notes and one line per evaluated round, nothing else.
    assert [line.split(" [")[0] for line in lines] == [
        "first round done in 50.0s (compiling 49.0s)", "round 1/10",
        "first round done in 30.0s (compiling 29.0s)", "round 7/10"]
    assert "ETA --" in lines[1] and "ETA 6s" in lines[3]


def test_cli_log_messages_are_plain_lines(capsys):
    logger = logging.getLogger("feddmr_jax")
    before = (list(logger.handlers), logger.propagate)
    with cli._plain_logging():
        logging.getLogger("feddmr_jax.checkpoint").warning("received %s: saving", "SIGINT")
    assert capsys.readouterr().err == "feddmr: received SIGINT: saving\n"
    assert (list(logger.handlers), logger.propagate) == before     # caplog still sees records


def test_missing_dataset_says_what_was_looked_for_and_where(tmp_path, isolated_data_env, capsys):
    rc = cli.main(["data", "stats", "--dataset", "ml-1m", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"ml-1m: ratings.dat not found (looked in {tmp_path}/ml-1m/ratings.dat" in err
    assert "expected layout: DIR/ml-1m/ratings.dat" in err


def test_printed_summary_has_the_epsilon_of_a_dp_run(tmp_path, monkeypatch, capsys):
    def fake_train(cfg, out, **kwargs):
        assert cfg.train.dp_clip == 0.5 and kwargs["overwrite"] is False
        return {"best_round": 1, "val": {}, "test": {}, "epsilon": 2.5, "delta": 1e-4,
                "round_seconds": 1.0, "compile_seconds": 1.0, "total_seconds": 2.0}

    monkeypatch.setattr("feddmr_jax.train.train", fake_train)
    rc = cli.main(["train", "--dp-clip", "0.5", "--table-mean", "participants", "--quiet",
                   "--out", str(tmp_path / "run")])
    printed = json.loads(capsys.readouterr().out.split("\nwrote ")[0])
    assert rc == 0 and printed["epsilon"] == 2.5 and printed["delta"] == 1e-4


def test_compilation_cache_is_on_unless_turned_off(monkeypatch):
    import jax

    from feddmr_jax.timing import enable_compilation_cache

    monkeypatch.setenv("FEDDMR_COMPILE_CACHE", "off")
    assert enable_compilation_cache() is None
    monkeypatch.delenv("FEDDMR_COMPILE_CACHE")
    current = jax.config.jax_compilation_cache_dir
    if current:                                  # a folder already chosen is kept (idempotent)
        assert str(enable_compilation_cache()) == current
        assert jax.config.jax_compilation_cache_dir == current


def test_another_cache_folder_takes_effect_in_the_same_process(tmp_path):
    """JAX opens its persistent cache once per process; enable_compilation_cache with
    another folder resets it, so new programs land in the new folder."""
    import jax
    import jax.numpy as jnp

    from feddmr_jax.timing import enable_compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    jax.jit(lambda x: x * 3.0)(jnp.ones(3))            # the cache is open (if it is on)
    saved_min = jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        assert enable_compilation_cache(tmp_path / "xla") == tmp_path / "xla"
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.jit(lambda x: jnp.sin(x) * 7.0 + 0.123456)(jnp.ones(5))
        assert any((tmp_path / "xla").iterdir())
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", saved_min)
        if previous:
            enable_compilation_cache(previous)


def test_train_turns_the_compilation_cache_on(monkeypatch):
    from feddmr_jax.errors import FeddmrError

    calls = []
    monkeypatch.setattr("feddmr_jax.train.enable_compilation_cache", lambda: calls.append(1))
    with pytest.raises(FeddmrError, match="nope"):      # fails after the cache, at the data
        train(RunConfig.create(dataset="nope"), progress=False)
    assert calls == [1]
