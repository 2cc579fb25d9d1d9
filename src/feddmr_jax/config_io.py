"""Config parsing: TOML files, flags and keywords onto the typed run config.

:func:`build_config` turns ``{section: {key: value}}`` tables as a user writes
them (a TOML file, the command line, :meth:`RunConfig.create`) into a
:class:`~feddmr_jax.config.RunConfig`, starting from the chosen method's
reference ``[train]`` values; :func:`apply_overrides` replaces keys of a
config, type-checked, retyping ``[model]`` when ``train.model`` changes;
:func:`to_dict` / :func:`from_dict` are the ``config.json`` round trip. Unknown
sections or keys, and values of the wrong type, are one-line errors that name
the key (with a did-you-mean).

The dataclasses are ``config_sections.py``'s; ``feddmr_jax.config`` re-exports
the public names of both. Loads no JAX (the CLI parses flags with it).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from feddmr_jax.config_sections import SECTIONS, DataConfig, RunConfig, TrainConfig
from feddmr_jax.errors import ConfigError
from feddmr_jax.method_configs import (MODEL_CONFIGS, ModelConfig, get_spec, model_config_class,
                                       model_name_of)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)


def _coerce(section: str, field: dataclasses.Field, value: Any) -> Any:
    """Checks a TOML value against the field's annotated type."""
    kind = str(field.type)
    where = f"{section}.{field.name}"
    if value is None:
        if "None" not in kind:
            raise ConfigError(f"{where} may not be empty")
        return None
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if kind.startswith("tuple[int"):
        if (not isinstance(value, (list, tuple))
                or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
            raise ConfigError(f"{where} must be a list of integers, got {value!r}")
        return tuple(value)
    return value


def did_you_mean(name: str, known: Iterable[str], fmt: str = "{}") -> str:
    """``"; did you mean X?"`` (``X or Y`` for two) for the entries of ``known``
    close to ``name`` (difflib), each written by ``fmt``; ``""`` when none is.

    Args:
      name: the unknown name.
      known: the names it may have meant.
      fmt: how each suggestion is written (``"{}"``, ``"[{}]"``, ``"train.{}"``).

    Returns:
      The hint, to append to an error message, or ``""``.
    """
    near = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(fmt.format(n) for n in near)}?" if near else ""


def _key_hint(section: str, key: str, known: Iterable[str]) -> str:
    """A did-you-mean for an unknown ``section.key``: a near key of the section,
    else the same key in another section (``[train] dim`` -> ``model.dim``)."""
    hint = did_you_mean(key, known, f"{section}.{{}}")
    if hint:
        return hint
    classes = {"data": [DataConfig], "train": [TrainConfig], "model": MODEL_CONFIGS.values()}
    owners = [s for s, group in classes.items() if s != section
              and any(key in {f.name for f in dataclasses.fields(c)} for c in group)]
    return f"; did you mean {' or '.join(f'{s}.{key}' for s in owners)}?" if owners else ""


def _replace_section(section: str, current: Any, values: Mapping[str, Any], source: str,
                     model_name: str | None = None) -> Any:
    fields = {f.name: f for f in dataclasses.fields(current)}
    changes = {}
    for key, value in values.items():
        if key not in fields:
            owner = f" for model {model_name!r}" if model_name else ""
            raise ConfigError(f"{source}: unknown key {section}.{key}{owner}"
                              f"{_key_hint(section, key, fields)} "
                              f"(known: {', '.join(fields)})")
        changes[key] = _coerce(section, fields[key], value)
    return dataclasses.replace(current, **changes)


def _retype_model(current: ModelConfig, name: str, source: str) -> ModelConfig:
    """The ``[model]`` section as ``name``'s config class.

    Values of ``current`` that differ from its class defaults carry over; one
    the new class lacks is an error (it would be silently dropped otherwise).
    """
    cls = model_config_class(name)
    if type(current) is cls:
        return current
    old_name, defaults = model_name_of(current), type(current)()
    keys = {f.name for f in dataclasses.fields(cls)}
    carried = {}
    for f in dataclasses.fields(current):
        value = getattr(current, f.name)
        if value == getattr(defaults, f.name):
            continue
        if f.name not in keys:
            raise ConfigError(f"{source}: model.{f.name} = {value!r} was set for model "
                              f"{old_name!r}, but model {name!r} has no such key "
                              f"(known: {', '.join(sorted(keys))})")
        carried[f.name] = value
    return cls(**carried)


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Mapping[str, Any]],
                    source: str = "config") -> RunConfig:
    """Returns ``cfg`` with ``{section: {key: value}}`` replaced, type-checked.

    The ``[model]`` section is applied last, typed by the (possibly new)
    ``train.model``; a change of model retypes it (see :func:`_retype_model`).

    Args:
      cfg: the config to change.
      overrides: ``{section: {key: value}}`` (sections ``data``, ``model``, ``train``).
      source: where the values came from, for messages (a file name, ``flags``).

    Returns:
      The new config (not validated).

    Raises:
      ConfigError: an unknown section or key, or a value of the wrong type.
    """
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}]"
                              f"{did_you_mean(section, SECTIONS, '[{}]')} "
                              f"(known: {', '.join(SECTIONS)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
    new = {section: _replace_section(section, getattr(cfg, section), values, source)
           for section, values in overrides.items() if section != "model"}
    name = new["train"].model if "train" in new else cfg.train.model
    model = _retype_model(cfg.model, name, source)
    if "model" in overrides:
        model = _replace_section("model", model, overrides["model"], source, model_name=name)
    if model is not cfg.model:
        new["model"] = model
    return dataclasses.replace(cfg, **new)


def with_model(cfg: RunConfig, name: str, **model_fields: Any) -> RunConfig:
    """``cfg`` with ``train.model = name`` and its ``[model]`` section set from ``model_fields``.

    Args:
      cfg: the config to change.
      name: the new model (``feddmr_jax.methods.METHODS``).
      **model_fields: ``[model]`` keys of ``name``'s config class.

    Returns:
      The new config (not validated).
    """
    return apply_overrides(cfg, {"train": {"model": name}, "model": model_fields},
                           source="with_model")


def build_config(raw: Mapping[str, Mapping[str, Any]], source: str = "config", *,
                 base: RunConfig | None = None) -> RunConfig:
    """A config from ``{section: {key: value}}`` as a user writes it (file, flags).

    Without ``base``: the defaults, with the chosen method's reference
    ``[train]`` values (``feddmr_jax.methods``) for the keys ``raw`` does not
    set. With ``base``: ``raw`` on top of it (no method defaults). Either way
    ``[train]`` keys the method ignores are errors.

    Args:
      raw: ``{section: {key: value}}``.
      source: where ``raw`` came from, for messages.
      base: the config to apply ``raw`` to (None: the method's defaults).

    Returns:
      The config (not validated).

    Raises:
      ConfigError: an unknown model, section or key, a key the model ignores,
        a value of the wrong type.
    """
    train_raw = raw.get("train", {})
    if not isinstance(train_raw, Mapping):
        raise ConfigError(f"{source}: [train] must be a table")
    name = train_raw.get("model", (base or RunConfig()).train.model)
    if not isinstance(name, str):
        raise ConfigError(f"{source}: train.model must be a string, got {name!r}")
    method = get_spec(name)
    for key in method.unused_train:
        if key in train_raw:
            raise ConfigError(f"{source}: train.{key} does not apply to model {name!r}, "
                              "whose learning rates are [model] fields; remove it")
    if base is None:
        defaults = {k: v for k, v in method.train_defaults.items() if k not in train_raw}
        base = apply_overrides(RunConfig(), {"train": {"model": name, **defaults}},
                               source=f"model {name!r} defaults")
        cfg = _dp_table_mean(apply_overrides(base, raw, source), train_raw)
        _warn_adaptive_server_lr(cfg, train_raw)
        return cfg
    return apply_overrides(base, raw, source)


ADAPTIVE_SERVER_OPTIMIZERS = ("adam", "yogi", "adagrad")


def _warn_adaptive_server_lr(cfg: RunConfig, train_raw: Mapping[str, Any]) -> None:
    """A warning when an adaptive server optimizer runs at the FedAvg default ``server_lr``
    1.0 because the user did not set it: an adaptive step moves every touched parameter by
    about ``server_lr`` per round whatever the update's size (Reddi et al. tune it over
    [1e-3, 1]; FedDMR's best on ml-100k was 0.03, docs/server_optimization.md)."""
    t = cfg.train
    if t.server_optimizer in ADAPTIVE_SERVER_OPTIMIZERS and "server_lr" not in train_raw:
        log.warning("train.server_optimizer = %r at the default train.server_lr %g (FedAvg's): "
                    "an adaptive server step moves each parameter by about server_lr per round; "
                    "set train.server_lr (e.g. 0.01-0.1, docs/server_optimization.md)",
                    t.server_optimizer, t.server_lr)


def _dp_table_mean(cfg: RunConfig, train_raw: Mapping[str, Any]) -> RunConfig:
    """DP composes with the defaults: the DP-compatible item-row mean when the
    user asked for DP and did not choose ``train.table_mean`` (an explicit
    ``touched`` with DP stays an error of :meth:`TrainConfig.validate`)."""
    t = cfg.train
    if t.dp_clip is None or "table_mean" in train_raw or t.table_mean == "participants":
        return cfg
    log.warning("DP is on (train.dp_clip): train.table_mean set to 'participants' (the default "
                "%r divides item rows by a data-dependent count); DP-FedAvg divides the noisy "
                "sum by the expected number of participants", t.table_mean)
    return dataclasses.replace(cfg, train=dataclasses.replace(t, table_mean="participants"))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw tables of a TOML config file.

    Args:
      path: the ``.toml`` file.

    Returns:
      ``{section: {key: value}}`` as written.

    Raises:
      ConfigError: the file is missing, unreadable or not valid TOML.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def load_config_file(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Reads a TOML config file onto ``base`` (default config; see :func:`build_config`).

    Args:
      path: the ``.toml`` file.
      base: the config to apply it to (None: the method's defaults).

    Returns:
      The config (not validated).
    """
    return build_config(read_config_file(path), str(path), base=base)


def to_dict(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dict (for summary.json and checkpoints).

    Args:
      cfg: the config.

    Returns:
      ``{section: {key: value}}``, every field; :func:`from_dict` reads it back.
    """
    return dataclasses.asdict(cfg)


def from_dict(raw: Mapping[str, Mapping[str, Any]]) -> RunConfig:
    """The config :func:`to_dict` wrote (``train.model`` types ``[model]``).

    Args:
      raw: ``{section: {key: value}}`` (``config.json``).

    Returns:
      The config (not validated); keys ``raw`` lacks take the dataclass defaults,
      not the method's.
    """
    return apply_overrides(RunConfig(), raw, source="saved config")


def create_config(*, model: str = "feddmr", dataset: str | None = None,
                  rounds: int | None = None,
                  sections: Mapping[str, Mapping[str, Any]] | None = None,
                  **keys: Any) -> RunConfig:
    """:meth:`RunConfig.create`: flat keywords sorted into their sections, then
    :func:`build_config` and ``validate`` (arguments and errors: there).

    Returns:
      The validated config.
    """
    method = get_spec(model)
    raw: dict[str, dict[str, Any]] = {name: dict(values)
                                      for name, values in (sections or {}).items()}
    for name, values in raw.items():
        if name not in SECTIONS:
            near = did_you_mean(name, SECTIONS, "'{}'")
            raise ConfigError(f"RunConfig.create: unknown section {name!r}{near} "
                              f"(known: {', '.join(SECTIONS)})")
    raw.setdefault("train", {})["model"] = model
    if dataset is not None:
        raw.setdefault("data", {})["dataset"] = dataset
    if rounds is not None:
        raw["train"]["rounds"] = rounds
    owners = {"data": {f.name for f in dataclasses.fields(DataConfig)},
              "train": {f.name for f in dataclasses.fields(TrainConfig)} - set(method.unused_train),
              "model": {f.name for f in dataclasses.fields(method.config)}}
    for key, value in keys.items():
        found = [section for section, names in owners.items() if key in names]
        if len(found) > 1:
            raise ConfigError(f"RunConfig.create: {key!r} is a key of both " +
                              " and ".join(f"[{s}]" for s in found) + f" for model {model!r}; "
                              f"pass it as sections={{{found[-1]!r}: {{{key!r}: ...}}}}")
        if not found:
            others = [name for name, c in MODEL_CONFIGS.items()
                      if key in {f.name for f in dataclasses.fields(c)}]
            hint = (f"it is a [model] key of {', '.join(others)}" if others
                    else "it is a [train] key this model ignores (its learning rates are "
                         "[model] fields)" if key in method.unused_train
                    else "known: data: " + ", ".join(sorted(owners["data"])) + "; train: "
                         + ", ".join(sorted(owners["train"])) + f"; model ({model}): "
                         + ", ".join(sorted(owners["model"])))
            near = "" if others or key in method.unused_train else did_you_mean(
                key, set().union(*owners.values()), "'{}'")
            raise ConfigError(f"RunConfig.create: unknown key {key!r} for model {model!r}"
                              f"{near} ({hint})")
        raw.setdefault(found[0], {})[key] = value
    cfg = build_config(raw, source="RunConfig.create")
    cfg.validate()
    return cfg
