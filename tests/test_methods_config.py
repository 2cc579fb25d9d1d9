"""The method registry, per-model [model] sections, and the CLI's model flags."""

from __future__ import annotations

import dataclasses
import json

import jax
import pytest

from feddmr_jax import cli
from feddmr_jax import config as config_lib
from feddmr_jax.errors import ConfigError
from feddmr_jax.methods import (EVAL_MODES, METHODS, MODEL_CONFIGS, MODELS, build_model,
                                get_method)
from feddmr_jax.models import (FedDMRConfig, FedMFConfig, FedNCFConfig, FedRAPConfig,
                               PFedRecConfig)

TRAIN_KEYS = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}


# ---------------------------------------------------------------- registry

@pytest.mark.parametrize("name", sorted(METHODS))
def test_registry_entry_is_consistent(name):
    method = get_method(name)
    assert method.name == name
    assert method.config is MODEL_CONFIGS[name] and method.build is MODELS[name]
    assert method.eval_mode in EVAL_MODES
    assert set(method.train_defaults) <= TRAIN_KEYS
    assert set(method.unused_train) <= TRAIN_KEYS
    assert not set(method.train_defaults) & set(method.unused_train)
    model = build_model(name, method.config(), num_items=7)
    assert model.name == name and model.config == method.config()
    shared = jax.eval_shape(model.init_shared, jax.random.key(0))
    assert all(t.shape[0] == 7 for t in shared.tables.values())


def test_the_registry_and_the_engine_free_specs_agree():
    """methods.METHODS and method_configs.SPECS (what the CLI and config.py read
    without JAX): the same names in the same order, configs, defaults, unused keys."""
    from feddmr_jax import losses
    from feddmr_jax.method_configs import SPECS

    assert list(SPECS) == list(METHODS)
    for name, spec in SPECS.items():
        method = METHODS[name]
        assert (spec.name, spec.config) == (method.name, method.config)
        assert dict(spec.train_defaults) == dict(method.train_defaults)
        assert spec.unused_train == method.unused_train
    assert config_lib.PROX_SCOPES == losses.PROX_SCOPES


def test_the_recipes_that_differ():
    assert get_method("pfedrec").local_step is not None
    assert get_method("pfedrec").eval_mode == "local"
    assert get_method("fedrap").round_optimizer is not None
    model = build_model("fedrap", FedRAPConfig(dim=2), num_items=3)
    assert set(get_method("fedrap").loss_terms(model)) == {"distance", "sparsity"}
    for name in ("feddmr", "fedmf", "fedncf"):
        m = get_method(name)
        assert m.local_step is None and m.round_optimizer is None and m.eval_mode == "global"


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'nope'.*fedrap.*pfedrec"):
        get_method("nope")


def test_build_model_refuses_another_models_config():
    with pytest.raises(ConfigError, match="needs a FedMFConfig"):
        build_model("fedmf", FedDMRConfig(), 5)


# ---------------------------------------------------------------- config sections

@pytest.mark.parametrize("name, cls, fields", [
    ("feddmr", FedDMRConfig, {"heads": 2}),
    ("fedmf", FedMFConfig, {"dim": 8}),
    ("fedncf", FedNCFConfig, {"mlp_hidden": [8, 4]}),
    ("pfedrec", PFedRecConfig, {"lr_eta": 20.0}),
    ("fedrap", FedRAPConfig, {"lam": 0.5}),
])
def test_model_section_is_typed_by_train_model_and_round_trips(name, cls, fields):
    cfg = config_lib.build_config({"train": {"model": name}, "model": fields})
    assert type(cfg.model) is cls
    cfg.validate()
    saved = json.loads(json.dumps(config_lib.to_dict(cfg)))        # as config.json
    assert saved["train"]["model"] == name
    assert config_lib.from_dict(saved) == cfg


def test_fedncf_hidden_sizes_become_a_tuple_and_are_checked():
    cfg = config_lib.build_config({"train": {"model": "fedncf"}, "model": {"mlp_hidden": [8, 4]}})
    assert cfg.model.mlp_hidden == (8, 4)
    with pytest.raises(ConfigError, match="model.mlp_hidden must be a list of integers"):
        config_lib.build_config({"train": {"model": "fedncf"}, "model": {"mlp_hidden": "8,4"}})


@pytest.mark.parametrize("name, key", [("fedmf", "heads"), ("pfedrec", "lam"),
                                       ("fedrap", "lr_eta"), ("feddmr", "lam")])
def test_unknown_model_key_names_key_and_model(name, key):
    with pytest.raises(ConfigError, match=rf"unknown key model\.{key} for model '{name}'"):
        config_lib.build_config({"train": {"model": name}, "model": {key: 1.0}}, "run.toml")


def test_method_train_defaults_apply_unless_set():
    cfg = config_lib.build_config({"train": {"model": "pfedrec"}})
    assert (cfg.train.mu, cfg.train.table_mean, cfg.train.batch_size) == (0.0, "participants", 256)
    assert cfg.train.chunk_size == 128
    assert config_lib.build_config({"train": {"model": "pfedrec",
                                              "chunk_size": 32}}).train.chunk_size == 32
    cfg = config_lib.build_config({"train": {"model": "pfedrec", "mu": 0.5}})
    assert cfg.train.mu == 0.5 and cfg.train.table_mean == "participants"
    rap = config_lib.build_config({"train": {"model": "fedrap"}})
    assert (rap.train.local_epochs, rap.train.batch_size) == (10, 2048)
    assert config_lib.build_config({}).train == config_lib.TrainConfig()     # FedDMR: as is


def test_train_keys_a_method_ignores_are_errors():
    with pytest.raises(ConfigError, match="train.lr does not apply to model 'pfedrec'"):
        config_lib.build_config({"train": {"model": "pfedrec", "lr": 0.1}}, "run.toml")
    with pytest.raises(ConfigError, match="train.optimizer does not apply to model 'fedrap'"):
        config_lib.build_config({"train": {"model": "fedrap", "optimizer": "sgd"}})


def test_mismatched_section_is_a_validation_error():
    cfg = config_lib.RunConfig(train=config_lib.TrainConfig(model="fedmf"))
    with pytest.raises(ConfigError, match="is a FedDMRConfig but train.model is 'fedmf'"):
        cfg.validate()
    ok = config_lib.with_model(cfg, "fedmf", dim=8)
    ok.validate()
    assert ok.model == FedMFConfig(dim=8)


def test_switching_models_carries_shared_values_and_refuses_lost_ones():
    cfg = config_lib.RunConfig(model=FedDMRConfig(dim=8))
    switched = config_lib.apply_overrides(cfg, {"train": {"model": "fedmf"}})
    assert switched.model == FedMFConfig(dim=8)
    with pytest.raises(ConfigError, match="model.heads = 2 was set for model 'feddmr'"):
        config_lib.apply_overrides(config_lib.RunConfig(model=FedDMRConfig(heads=2)),
                                   {"train": {"model": "fedmf"}})


def test_config_file_selects_the_model(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nmodel = "fedrap"\nrounds = 3\n[model]\nlam = 0.2\n')
    cfg = config_lib.load_config_file(path)
    assert cfg.model == FedRAPConfig(lam=0.2) and cfg.train.local_epochs == 10
    path.write_text('[train]\nmodel = "fedmf"\n[model]\nheads = 4\n')
    with pytest.raises(ConfigError, match=r"run.toml: unknown key model.heads for model 'fedmf'"):
        config_lib.load_config_file(path)


# ---------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv, message", [
    (["--model", "fedmf", "--heads", "2"], "--heads does not apply to --model fedmf"),
    (["--model", "pfedrec", "--no-attention"], "--no-attention does not apply to --model pfedrec"),
    (["--model", "fedrap", "--lr-eta", "3"], "--lr-eta does not apply to --model fedrap"),
    (["--model", "pfedrec", "--lr", "0.5"], "--lr does not apply to --model pfedrec"),
    (["--model", "fedrap", "--optimizer", "sgd"], "--optimizer does not apply to --model fedrap"),
    (["--lam", "0.1"], "--lam does not apply to --model feddmr"),
    (["--model", "nope"], "invalid choice: 'nope'"),
])
def test_flags_that_do_not_apply_are_one_line_errors(argv, message, capsys, tmp_path):
    rc = cli.main(["train", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


def test_flag_model_retypes_the_file_model_section(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nlam = 0.3\n')                 # a FedRAP key; the file names no model
    args = cli.build_parser().parse_args(["train", "--config", str(path), "--model", "fedrap",
                                          "--dim", "8"])
    cfg = cli._train_config(args)
    assert cfg.model == FedRAPConfig(dim=8, lam=0.3)
    assert cfg.train.local_epochs == 10                     # the method's default, not set


def test_cli_trains_a_baseline_and_resumes_with_its_config(tmp_path, capsys):
    """A run cut after round 1 and resumed by the CLI from its saved config ends
    exactly where the uninterrupted CLI run does (a lost baseline field, e.g.
    model.lr_eta, would change round 2)."""
    from feddmr_jax.train import Interrupted, load_run_config, train

    data = tmp_path / "data.toml"
    data.write_text('[data]\nsynthetic_users = 30\nsynthetic_items = 40\n'
                    'synthetic_interactions = 8.0\neval_negatives = 10\n')
    out = tmp_path / "run"
    flags = ["--config", str(data), "--dataset", "synthetic", "--model", "pfedrec",
             "--rounds", "2", "--dim", "4", "--lr-eta", "20", "--batch-size", "16",
             "--chunk-size", "8", "--checkpoint-every", "1", "--quiet", "--out", str(out)]
    assert cli.main(["train", *flags]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["model"] == "pfedrec" and saved["model"]["lr_eta"] == 20.0
    assert saved["train"]["table_mean"] == "participants"           # the method's default
    assert saved["data"]["synthetic_users"] == 30
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["test"]["hr@10"] <= 1.0

    cut = tmp_path / "cut"
    with pytest.raises(Interrupted):
        train(load_run_config(out), cut, progress=False, stop_after_round=1)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(cut), "--quiet"]) == 0
    resumed = json.loads((cut / "summary.json").read_text())
    assert resumed["resumed"] and resumed["config"] == summary["config"]
    assert (resumed["best_round"], resumed["val"], resumed["test"]) == (
        summary["best_round"], summary["val"], summary["test"])
    rows = lambda run: [(r["round"], r["train_loss"], r.get("val")) for r in  # noqa: E731
                        map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert rows(cut) == rows(out)
