"""Every build-time validation rule: a bad value is a ConfigError naming its field.

One table, one row per rule (section, field, bad value, the message's field
name); the CLI turns the error into one line and exit status 2 before any
training.
"""

from __future__ import annotations

import dataclasses

import pytest

from feddmr_jax import cli
from feddmr_jax.config import EVAL_METRICS, RunConfig, with_model
from feddmr_jax.errors import ConfigError

# (model, section, {field: bad value}, text the message must contain)
CASES = [
    # [data]
    ("feddmr", "data", {"split": "random"}, "data.split"),
    ("feddmr", "data", {"eval_negatives": 0}, "data.eval_negatives"),
    ("feddmr", "data", {"synthetic_users": 0}, "data.synthetic_users"),
    ("feddmr", "data", {"synthetic_items": -1}, "data.synthetic_items"),
    ("feddmr", "data", {"synthetic_interactions": 0.0}, "data.synthetic_interactions"),
    ("feddmr", "data", {"eval_seed": -1}, "data.eval_seed"),
    ("feddmr", "data", {"synthetic_seed": -2}, "data.synthetic_seed"),
    ("feddmr", "data", {"tie_break": "item"}, "data.tie_break"),
    ("feddmr", "data", {"train_negatives": "none"}, "data.train_negatives"),
    ("feddmr", "data", {"seed": -1}, "data.seed"),
    # [train]
    ("feddmr", "train", {"rounds": 0}, "train.rounds"),
    ("feddmr", "train", {"eval_mode": "both"}, "train.eval_mode"),
    ("feddmr", "train", {"local_epochs": 0}, "train.local_epochs"),
    ("feddmr", "train", {"batch_size": -1}, "train.batch_size"),
    ("feddmr", "train", {"chunk_size": 0}, "train.chunk_size"),
    ("feddmr", "train", {"eval_every": 0}, "train.eval_every"),
    ("feddmr", "train", {"max_private_gb": 0.0}, "train.max_private_gb"),
    ("feddmr", "train", {"server_lr": 0.0}, "train.server_lr"),
    ("feddmr", "train", {"server_lr": -1.0}, "train.server_lr"),
    ("feddmr", "train", {"devices": 0}, "train.devices"),
    ("feddmr", "train", {"checkpoint_every": -1}, "train.checkpoint_every"),
    ("feddmr", "train", {"keep_checkpoints": -1}, "train.keep_checkpoints"),
    ("feddmr", "train", {"fault_nan": 1.0}, "train.fault_nan"),
    ("feddmr", "train", {"fault_scale": -0.1}, "train.fault_scale"),
    ("feddmr", "train", {"client_dropout": 1.5}, "train.client_dropout"),
    ("feddmr", "train", {"fault_nan": 0.5, "fault_scale": 0.5}, "train.fault_nan + "),
    ("feddmr", "train", {"fault_factor": float("inf")}, "train.fault_factor"),
    ("feddmr", "train", {"aggregator": "mode"}, "aggregator 'mode'"),
    ("feddmr", "train", {"clip_norm": 0.0}, "train.clip_norm"),
    ("feddmr", "train", {"trim_fraction": 0.5}, "train.trim_fraction"),
    ("feddmr", "train", {"num_negatives": 0}, "train.num_negatives"),
    ("feddmr", "train", {"mu": -0.01}, "train.mu"),
    ("feddmr", "train", {"l2": -1.0}, "train.l2"),
    ("feddmr", "train", {"lr": -0.01}, "train.lr"),
    ("feddmr", "train", {"embedding_lr": -0.1}, "train.embedding_lr"),
    ("feddmr", "train", {"optimizer": "rmsprop"}, "train.optimizer"),
    ("feddmr", "train", {"weighting": "loss"}, "train.weighting"),
    ("feddmr", "train", {"table_mean": "all"}, "train.table_mean"),
    ("feddmr", "train", {"client_fraction": 0.0}, "train.client_fraction"),
    ("feddmr", "train", {"client_fraction": 1.01}, "train.client_fraction"),
    ("feddmr", "train", {"clients_per_round": 0}, "train.clients_per_round"),
    ("feddmr", "train", {"patience": 0}, "train.patience"),
    ("feddmr", "train", {"select_metric": "hr@20"}, "train.select_metric"),
    ("feddmr", "train", {"select_metric": "HR@10"}, "train.select_metric"),
    ("feddmr", "train", {"seed": -1}, "train.seed"),
    # DP and secure aggregation
    ("feddmr", "train", {"dp_clip": 0.0}, "train.dp_clip"),
    ("feddmr", "train", {"dp_clip": 1.0, "table_mean": "participants", "dp_noise": -1.0},
     "train.dp_noise"),
    ("feddmr", "train", {"dp_clip": 1.0, "table_mean": "participants", "dp_delta": 1.0},
     "train.dp_delta"),
    ("feddmr", "train", {"dp_accountant": "moments"}, "train.dp_accountant"),
    ("feddmr", "train", {"dp_noise": 1.0}, "train.dp_noise needs train.dp_clip"),
    ("feddmr", "train", {"dp_delta": 1e-5}, "train.dp_delta needs train.dp_clip"),
    ("feddmr", "train", {"dp_clip": 1.0, "table_mean": "participants",
                         "aggregator": "median"}, "train.aggregator='median'"),
    ("feddmr", "train", {"dp_clip": 1.0, "table_mean": "participants",
                         "weighting": "examples"}, "train.weighting='examples'"),
    ("feddmr", "train", {"dp_clip": 1.0, "table_mean": "touched"}, "train.table_mean='touched'"),
    ("feddmr", "train", {"secure_agg_neighbors": 3}, "train.secure_agg_neighbors"),
    ("feddmr", "train", {"secure_agg_neighbors": -2}, "train.secure_agg_neighbors"),
    ("feddmr", "train", {"secure_agg_bits": 31}, "train.secure_agg_bits"),
    ("feddmr", "train", {"secure_agg": True, "aggregator": "trimmed_mean"},
     "train.aggregator='trimmed_mean'"),
    # [model], per model
    ("feddmr", "model", {"dim": 0}, "model.dim"),
    ("feddmr", "model", {"heads": 3}, "model.heads"),
    ("feddmr", "model", {"layers": -1}, "model.layers"),
    ("feddmr", "model", {"history_len": -1}, "model.history_len"),
    ("feddmr", "model", {"dropout": 1.0}, "model.dropout"),
    ("fedmf", "model", {"dim": 0}, "model.dim"),
    ("fedmf", "model", {"init_scale": -0.1}, "model.init_scale"),
    ("fedncf", "model", {"dim": -4}, "model.dim"),
    ("fedncf", "model", {"init_scale": -1.0}, "model.init_scale"),
    ("fedncf", "model", {"mlp_hidden": (8, 0)}, "model.mlp_hidden"),
    ("fedncf", "model", {"mlp_hidden": ()}, "model.mlp_hidden"),
    ("pfedrec", "model", {"dim": 0}, "model.dim"),
    ("pfedrec", "model", {"lr": -0.1}, "model.lr"),
    ("pfedrec", "model", {"lr_eta": -1.0}, "model.lr_eta"),
    ("pfedrec", "model", {"weight_decay": -1e-4}, "model.weight_decay"),
    ("pfedrec", "model", {"init_scale": -1.0}, "model.init_scale"),
    ("fedrap", "model", {"dim": 0}, "model.dim"),
    ("fedrap", "model", {"lam": -0.1}, "model.lam"),
    ("fedrap", "model", {"mu": -0.1}, "model.mu"),
    ("fedrap", "model", {"lr_network": -0.5}, "model.lr_network"),
    ("fedrap", "model", {"lr_args": -1.0}, "model.lr_args"),
    ("fedrap", "model", {"weight_decay": -1.0}, "model.weight_decay"),
    ("fedrap", "model", {"step_decay": 0.0}, "model.step_decay"),
    ("fedrap", "model", {"round_decay": 1.5}, "model.round_decay"),
    ("fedrap", "model", {"init_scale": -1.0}, "model.init_scale"),
]


def _config(model: str, section: str, values: dict) -> RunConfig:
    cfg = with_model(RunConfig(), model)
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section),
                                                                     **values)})


@pytest.mark.parametrize("model", ["feddmr", "fedmf", "fedncf", "pfedrec", "fedrap"])
def test_default_configs_are_valid(model):
    with_model(RunConfig(), model).validate()


@pytest.mark.parametrize("model, section, values, names", CASES,
                         ids=[f"{m}-{s}-{'-'.join(map(str, v.values()))}"
                              for m, s, v, _ in CASES])
def test_each_bad_value_is_a_config_error_naming_its_field(model, section, values, names):
    cfg = _config(model, section, values)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    message = str(info.value)
    assert names in message and "\n" not in message, message


def test_eval_metrics_are_the_metrics_evaluation_reports():
    """config.EVAL_METRICS (what select_metric may name) == the keys evaluate() returns."""
    from feddmr_jax.train import build_experiment, evaluate_state

    from engine_helpers import tiny_config

    exp = build_experiment(tiny_config())
    state = exp.algorithm.init(exp.keys["init"])
    assert set(evaluate_state(exp, state, exp.val_set)) == set(EVAL_METRICS)


def test_unknown_select_metric_in_a_config_file_stops_before_training(tmp_path, capsys):
    """The acceptance case: one line, exit 2, nothing trained or written."""
    path = tmp_path / "run.toml"
    path.write_text('[data]\ndataset = "synthetic"\n[train]\nrounds = 3\n'
                    'select_metric = "hr@20"\n')
    out = tmp_path / "out"
    rc = cli.main(["train", "--config", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "train.select_metric" in err and "hr@20" in err
    assert not (out / "metrics.jsonl").exists()


def _float_fields() -> list[tuple[str, str, str]]:
    """``(model, section, field)`` of every float field of every config class, found
    by introspection (a new float field is covered without touching this list)."""
    from feddmr_jax.config import DataConfig, TrainConfig
    from feddmr_jax.methods import MODEL_CONFIGS

    def floats(cls):
        return [f.name for f in dataclasses.fields(cls) if "float" in str(f.type)]

    out = [("feddmr", "data", name) for name in floats(DataConfig)]
    out += [("feddmr", "train", name) for name in floats(TrainConfig)]
    out += [(model, "model", name) for model, cls in MODEL_CONFIGS.items()
            for name in floats(cls)]
    return out


FLOAT_FIELDS = _float_fields()


def test_the_float_field_table_is_not_empty():
    names = {f"{section}.{name}" for _, section, name in FLOAT_FIELDS}
    assert {"train.embedding_lr", "train.max_private_gb", "data.synthetic_interactions",
            "model.lr_args"} <= names


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("model, section, name", FLOAT_FIELDS,
                         ids=[f"{m}-{s}.{n}" for m, s, n in FLOAT_FIELDS])
def test_every_float_field_must_be_finite(model, section, name, bad):
    cfg = _config(model, section, {name: bad})
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert str(info.value) == f"{section}.{name} must be finite, got {bad}"


def test_nan_flag_stops_the_cli_before_training(tmp_path, capsys):
    """The issue's reproduction: ``--embedding-lr nan`` trained and reported loss 0."""
    out = tmp_path / "out"
    rc = cli.main(["train", "--dataset", "synthetic", "--synthetic-users", "12",
                   "--synthetic-items", "40", "--eval-negatives", "5", "--model", "fedmf",
                   "--rounds", "2", "--embedding-lr", "nan", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert captured.err == "feddmr: error: train.embedding_lr must be finite, got nan\n"
    assert not out.exists()
