"""`feddmr train` flags: derived from the typed configs, defaults in help, no abbreviations."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys

import pytest

from feddmr_jax import cli, cli_flags
from feddmr_jax.config import DataConfig, RunConfig, TrainConfig
from feddmr_jax.errors import ConfigError
from feddmr_jax.methods import METHODS
from feddmr_jax.methods import MODEL_CONFIGS


def _train_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _config_actions():
    return [a for a in _train_parser()._actions if hasattr(a, "config_flag")]


def _shown(value) -> str:
    """How help writes a config value (written here, independently of cli_flags)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_every_config_field_has_exactly_one_flag():
    fields = {("data", f.name) for f in dataclasses.fields(DataConfig)}
    fields |= {("train", f.name) for f in dataclasses.fields(TrainConfig)}
    fields |= {("model", f.name) for cls in MODEL_CONFIGS.values()
               for f in dataclasses.fields(cls)}
    flagged = [(a.config_flag.section, a.config_flag.key) for a in _config_actions()]
    assert sorted(flagged) == sorted(fields)


def test_every_help_default_equals_the_typed_config_default():
    for action in _config_actions():
        flag = action.config_flag
        assert action.default is argparse.SUPPRESS        # only given flags override
        if flag.section == "model":
            for name, cls in MODEL_CONFIGS.items():
                field = {f.name: f for f in dataclasses.fields(cls)}.get(flag.key)
                if field is not None:
                    value = _shown(field.default)
                    per_model = rf"(default: |; ){re.escape(value)} \([^)]*\b{name}\b"
                    assert (re.search(per_model, action.help)
                            or f"default: {value}]" in action.help), \
                        (action.option_strings, name, action.help)
            continue
        cls = DataConfig if flag.section == "data" else TrainConfig
        default = {f.name: f.default for f in dataclasses.fields(cls)}[flag.key]
        assert f"default: {_shown(default)}" in action.help, (action.option_strings, action.help)
        if flag.section == "train":          # the methods' reference values are listed too
            for name, method in METHODS.items():
                if flag.key in method.unused_train:
                    assert name in action.help.split("unused")[0].rsplit(";", 1)[-1]
                elif method.train_defaults.get(flag.key, default) != default:
                    assert name in action.help and \
                        _shown(method.train_defaults[flag.key]) in action.help


def test_embedding_lr_help_tells_what_a_default_run_uses():
    cfg = cli._train_config(cli.build_parser().parse_args(["train"]))
    action = next(a for a in _config_actions() if "--embedding-lr" in a.option_strings)
    assert cfg.train.lr == 0.01 and cfg.train.embedding_lr == 0.1
    assert "default: 0.1;" in action.help and "--lr" not in action.help


def test_help_has_groups_and_choices(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    for title in ("data:", "model (", "training:", "federation (", "privacy (",
                  "fault injection (", "run ("):
        assert f"\n{title}" in out
    assert "--split {loo,ratio}" in out and "--model {feddmr," in out
    faults = out.split("fault injection (")[1].split("\nrun (")[0]
    for flag in ("--fault-client-dropout", "--fault-nan", "--fault-scale", "--fault-factor"):
        assert flag in faults
    assert "starts from its method's\nreference [train] values" in out


@pytest.mark.parametrize("argv, suggestion", [
    (["train", "--drop", "0.1"], "--model-dropout"),
    (["train", "--round", "3"], "--rounds"),
    (["train", "--dropout=0.1"], "--fault-client-dropout"),
    (["data", "stats", "--jso"], "--json"),
])
def test_prefixes_are_refused_with_a_suggestion(argv, suggestion, capsys):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "did you mean" in err and suggestion in err


def test_flags_set_their_fields():
    def cfg(*argv):
        return cli._train_config(cli.build_parser().parse_args(["train", *argv]))

    c = cfg("--fault-client-dropout", "0.2", "--model-dropout", "0.1", "--dense",
            "--no-attention", "--embedding-lr", "none", "--clients-per-round", "3")
    assert c.train.client_dropout == 0.2 and c.model.dropout == 0.1
    assert c.train.sparse is False and c.model.attention is False
    assert c.train.embedding_lr is None and c.train.clients_per_round == 3
    c = cfg("--model", "fedncf", "--mlp-hidden", "16", "8")
    assert c.model.mlp_hidden == (16, 8)
    c = cfg("--model", "fedrap", "--model-mu", "0.3", "--mu", "0.2")
    assert c.model.mu == 0.3 and c.train.mu == 0.2
    assert cfg().train == RunConfig().train            # no flags: the typed defaults


def test_choices_agree_with_validation():
    for (section, key), choices in cli_flags._CHOICES.items():
        def build(value):
            return dataclasses.replace(RunConfig(), **{section: dataclasses.replace(
                getattr(RunConfig(), section), **{key: value})})
        for choice in choices:
            extra = {}
            if key == "dp_accountant":          # DP options need DP on
                extra = {"dp_clip": 1.0, "table_mean": "participants"}
            if key.endswith("lr_schedule"):     # cosine and warmup kinds need their lengths
                extra = {"schedule_rounds": 10, "schedule_warmup_rounds": 2}
            cfg = build(choice)
            if extra:
                cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **extra))
            cfg.validate()
        with pytest.raises(ConfigError) as e:
            build("bogus").validate()
        assert all(choice in str(e.value) for choice in choices)


def test_every_field_has_a_help_comment():
    for cls in (DataConfig, TrainConfig, *MODEL_CONFIGS.values()):
        comments = cli_flags.field_comments(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not comments.get(f.name)]
        assert not missing, (cls.__name__, missing)


_NO_ENGINE = """
import sys
from feddmr_jax import cli
for argv in (["--help"], ["train", "--help"], ["train", "--round", "3"],
             ["train", "--rounds", "two"], ["train", "--model", "nope"], [],
             ["train", "--embedding-lr", "nan"], ["train", "--heads", "5"]):
    try:
        rc = cli.main(argv)
    except SystemExit as e:            # --help
        rc = e.code
    print("rc", argv, rc, file=sys.stderr)
cli.build_parser().parse_args(["train", "--model", "fedrap", "--model-mu", "0.2", "--dim", "8"])
engine = ("jax", "jaxlib", "flax", "optax", "orbax")
print(sorted(m for m in sys.modules if m.split(".")[0] in engine)[:5])
"""


def test_help_and_argument_errors_do_not_import_jax():
    """``feddmr --help`` and usage errors answer without loading the engine (issue 27)."""
    result = subprocess.run([sys.executable, "-c", _NO_ENGINE], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("rc ") == 8 and "Traceback" not in result.stderr, result.stderr
    assert "rc ['train', '--rounds', 'two'] 2" in result.stderr
    assert "train.embedding_lr must be finite, got nan" in result.stderr      # config errors too
    assert result.stdout.strip().splitlines()[-1] == "[]"       # no engine module loaded
