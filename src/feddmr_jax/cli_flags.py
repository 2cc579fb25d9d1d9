"""``feddmr train`` flags derived from the typed config dataclasses.

One source of truth: every field of :class:`~feddmr_jax.config.DataConfig`,
:class:`~feddmr_jax.config.TrainConfig` and of each model's config class
(``feddmr_jax.method_configs.MODEL_CONFIGS``) becomes a flag; its help is the field's
trailing comment in the source, its default the dataclass default (plus the
methods' reference ``[train]`` values), so a new field gets a flag and help
without touching this file. Naming rule: ``--field-name``; a model or data
field whose name a ``[train]`` field already uses gets a section prefix
(``--model-lr``, ``--data-seed``); a boolean whose default is true becomes
``--no-field``. The few exceptions (today's names, fault injection) are in
``_FLAG_NAMES``; ``_GROUPS`` and ``_CHOICES`` only sort flags into help
groups and list the values of enum-like strings.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import tokenize
from typing import Any, NamedTuple

from feddmr_jax.errors import ConfigError
from feddmr_jax.config import LR_SCHEDULES, SERVER_OPTIMIZERS, DataConfig, TrainConfig
from feddmr_jax.method_configs import MODEL_CONFIGS, SPECS, get_spec

# (section, key) -> flag, where the naming rule is not wanted.
_FLAG_NAMES = {
    ("train", "sparse"): "--dense",                       # the flag turns the default off
    ("train", "client_dropout"): "--fault-client-dropout",
    ("model", "dropout"): "--model-dropout",              # not to be confused with the fault
}
# [train] keys by help group; others: privacy (dp_*, secure_agg*), faults
# (fault_*), else "training".
_GROUPS = {
    "federation": ("clients_per_round", "client_fraction", "weighting", "table_mean",
                   "server_lr", "server_optimizer", "server_momentum", "server_b1",
                   "server_b2", "server_eps", "server_lr_schedule", "aggregator", "clip_norm",
                   "trim_fraction", "chunk_size", "shape_classes", "sparse", "devices",
                   "max_private_gb"),
    "faults": ("client_dropout",),
    "run": ("checkpoint_every", "keep_checkpoints", "max_rejected_rounds"),
}
_GROUP_TITLES = {
    "data": "data", "model": "model (the [model] section of --model)",
    "training": "training", "federation": "federation (sampling, aggregation, devices)",
    "privacy": "privacy (docs/privacy.md)", "faults": "fault injection (robustness tests)",
    "run": "run (output folder, checkpoints, config file)",
}
# Enum-like string fields: their accepted values (validated again by the config).
_CHOICES = {
    ("data", "split"): ("loo", "ratio"),
    ("data", "tie_break"): ("row", "random"),
    ("data", "train_negatives"): ("strict", "reference"),
    ("train", "eval_mode"): ("default", "global", "local"),
    ("train", "optimizer"): ("adam", "sgd"),
    ("train", "weighting"): ("uniform", "examples"),
    ("train", "table_mean"): ("touched", "participants"),
    ("train", "prox_scope"): ("all", "dense"),
    ("model", "norm"): ("post", "pre"),
    ("train", "aggregator"): ("mean", "clipped_mean", "median", "trimmed_mean"),
    ("train", "dp_accountant"): ("rdp", "pld"),
    ("train", "server_optimizer"): SERVER_OPTIMIZERS,
    ("train", "server_lr_schedule"): LR_SCHEDULES,
    ("train", "lr_schedule"): LR_SCHEDULES,
}


class Flag(NamedTuple):
    """One config field's flag."""

    flag: str
    section: str            # data, model or train
    key: str
    kind: str               # bool, int, float, str, ints (tuple of ints)
    optional: bool          # the field accepts None (flag value "none")
    negated: bool           # a store-true flag that sets the field to False

    @property
    def dest(self) -> str:
        return f"{self.section}__{self.key}"


@functools.lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """``{field: trailing comment}`` of a dataclass, read from its source once.

    Args:
      cls: a dataclass whose fields are written ``name: type = default  # help``.

    Returns:
      The comment text (without ``#``) of every field line that has one.
    """
    source = inspect.getsource(cls)
    out: dict[str, str] = {}
    line_tokens: list[tokenize.TokenInfo] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            line_tokens = []
        elif tok.type == tokenize.COMMENT:
            code = [t for t in line_tokens if t.type not in (tokenize.INDENT, tokenize.DEDENT)]
            if len(code) >= 2 and code[0].type == tokenize.NAME and code[1].string == ":":
                out.setdefault(code[0].string, tok.string.lstrip("#").strip())
        else:
            line_tokens.append(tok)
    return out


def _kind(annotation: Any) -> tuple[str, bool]:
    text = str(annotation).replace(" ", "")
    optional = text.endswith("|None") or text.startswith("Optional[")
    base = text.removesuffix("|None")
    if base.startswith("tuple[int"):
        return "ints", optional
    for kind in ("bool", "int", "float", "str"):
        if base == kind:
            return kind, optional
    raise TypeError(f"no flag type for config annotation {annotation!r}")


def _sections() -> dict[str, list[type]]:
    return {"data": [DataConfig], "train": [TrainConfig],
            "model": list(dict.fromkeys(MODEL_CONFIGS.values()))}


@functools.lru_cache(maxsize=None)
def config_flags() -> tuple[Flag, ...]:
    """Every config field's flag: data, then model (union of all models), then train."""
    sections = _sections()
    train_keys = {f.name for f in dataclasses.fields(sections["train"][0])}
    flags: dict[str, Flag] = {}
    for section in ("data", "model", "train"):
        for cls in sections[section]:
            for f in dataclasses.fields(cls):
                kind, optional = _kind(f.type)
                name = _FLAG_NAMES.get((section, f.name))
                if name is None:
                    prefix = f"{section}-" if section != "train" and f.name in train_keys else ""
                    stem = prefix + f.name.replace("_", "-")
                    name = f"--no-{stem}" if kind == "bool" and f.default is True else f"--{stem}"
                negated = kind == "bool" and (name.startswith("--no-") or name == "--dense")
                flag = Flag(name, section, f.name, kind, optional, negated)
                old = flags.setdefault(name, flag)
                if (old.section, old.key, old.kind) != (section, f.name, kind):
                    raise TypeError(f"{name} would mean both {old.section}.{old.key} and "
                                    f"{section}.{f.name} ({cls.__name__}) with different types")
    return tuple(flags.values())


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def _group(flag: Flag) -> str:
    if flag.section != "train":
        return flag.section
    if flag.key == "model":
        return "model"
    for group, keys in _GROUPS.items():
        if flag.key in keys:
            return group
    if flag.key.startswith(("dp_", "secure_agg")):
        return "privacy"
    if flag.key.startswith("fault_"):
        return "faults"
    return "training"


def default_text(flag: Flag) -> str:
    """The help's default clause of ``flag``, from the typed config and the methods.

    Returns:
      e.g. ``"default: 0.01; fedmf, fedncf: 0.0; pfedrec, fedrap: unused"``, or
      for a model field ``"default: 0.1 (feddmr, fedmf); 1.0 (pfedrec)"``.
    """
    if flag.section == "model":
        by_value: dict[str, list[str]] = {}
        for name, cls in MODEL_CONFIGS.items():
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if flag.key in fields:
                by_value.setdefault(_fmt(fields[flag.key].default), []).append(name)
        if len(by_value) == 1 and len(next(iter(by_value.values()))) == len(MODEL_CONFIGS):
            return f"default: {next(iter(by_value))}"
        return "default: " + "; ".join(f"{v} ({', '.join(names)})"
                                       for v, names in by_value.items())
    cls = _sections()[flag.section][0]
    default = {f.name: f.default for f in dataclasses.fields(cls)}[flag.key]
    text = f"default: {_fmt(default)}"
    if flag.section == "train":
        special: dict[str, list[str]] = {}
        for name, method in SPECS.items():
            if flag.key in method.unused_train:
                special.setdefault("unused", []).append(name)
            elif flag.key in method.train_defaults and method.train_defaults[flag.key] != default:
                special.setdefault(_fmt(method.train_defaults[flag.key]), []).append(name)
        text += "".join(f"; {', '.join(names)}: {v}" for v, names in special.items())
    return text


def _value_type(flag: Flag):
    base = {"int": int, "float": float, "str": str, "ints": int}[flag.kind]
    if not flag.optional or flag.kind == "ints":
        return base

    def parse(text: str):
        return None if text.lower() == "none" else base(text)

    parse.__name__ = base.__name__      # argparse names the type in "invalid int value"
    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """Adds every config flag to ``parser`` in help groups; returns the groups by name.

    Flags default to ``argparse.SUPPRESS``: only flags given appear in the
    namespace (see :func:`given_flags`).
    """
    groups = {name: parser.add_argument_group(title)
              for name, title in _GROUP_TITLES.items()}
    owners: dict[str, list[str]] = {}
    for name, cls in MODEL_CONFIGS.items():
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, []).append(name)
    for flag in config_flags():
        classes = _sections()[flag.section]
        comment = next((field_comments(c)[flag.key] for c in classes
                        if flag.key in field_comments(c)), "")
        where = f"{flag.section}.{flag.key}"
        if flag.kind == "bool":
            where = f"sets {where} = {_fmt(not flag.negated)}"
        if flag.section == "model" and len(owners[flag.key]) < len(MODEL_CONFIGS):
            where += "; " + ", ".join(owners[flag.key]) + " only"
        help_ = f"{comment} [{where}; {default_text(flag)}]".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": flag.dest, "default": argparse.SUPPRESS,
                                  "help": help_.strip()}
        if flag.kind == "bool":
            kwargs.update(action="store_const", const=not flag.negated)
        else:
            kwargs.update(type=_value_type(flag), metavar=flag.key.upper())
            if flag.kind == "ints":
                kwargs["nargs"] = "+"
            choices = _CHOICES.get((flag.section, flag.key))
            if flag.key == "model" and flag.section == "train":
                choices = tuple(MODEL_CONFIGS)
            if choices:
                kwargs.update(choices=choices, metavar="{" + ",".join(choices) + "}")
        action = groups[_group(flag)].add_argument(flag.flag, **kwargs)
        action.config_flag = flag       # for tests and tools that walk the parser
    return groups


def given_flags(args: argparse.Namespace) -> list[tuple[Flag, Any]]:
    """The config flags present on the command line, with their values."""
    return [(flag, getattr(args, flag.dest)) for flag in config_flags()
            if hasattr(args, flag.dest)]


def overrides_of(given: list[tuple[Flag, Any]]) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` of the given flags (lists of ints become tuples)."""
    out: dict[str, dict[str, Any]] = {}
    for flag, value in given:
        out.setdefault(flag.section, {})[flag.key] = (tuple(value) if isinstance(value, list)
                                                      else value)
    return out


def check_flags_apply(given: list[tuple[Flag, Any]], model: object) -> None:
    """Model flags of another model, and ``[train]`` flags the model ignores, are errors."""

    if not isinstance(model, str):
        return                                 # reported by the config builder
    method = get_spec(model)
    keys = [f.name for f in dataclasses.fields(method.config)]
    for flag, _ in given:
        if flag.section == "model" and flag.key not in keys:
            raise ConfigError(f"{flag.flag} does not apply to --model {model} "
                              f"(its [model] keys: {', '.join(keys)})")
        if flag.section == "train" and flag.key in method.unused_train:
            raise ConfigError(f"{flag.flag} does not apply to --model {model}: its learning "
                              f"rates are [model] fields ({', '.join(keys)})")
