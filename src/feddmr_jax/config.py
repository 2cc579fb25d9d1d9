"""Typed, frozen run configuration; TOML files and CLI flags map onto it.

A config file has one table per section::

    [data]
    dataset = "ml-100k"
    data_dir = "../shared/data"

    [model]
    dim = 32
    heads = 4

    [train]
    rounds = 100
    mu = 0.01

Flags given on the command line override the file. Unknown sections or keys,
and values of the wrong type, are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Mapping

from feddmr_jax.errors import ConfigError
from feddmr_jax.models.feddmr import FedDMRConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"          # ml-100k, ml-1m, lastfm-2k, amazon-video, csv, synthetic
    data_dir: str | None = None         # folder with the files (default: $FEDDMR_DATA_DIR / cache)
    data_path: str | None = None        # file for amazon-video / csv
    split: str = "loo"                  # loo (leave-one-out) or ratio (80/10/10 by time)
    eval_negatives: int = 99            # sampled negatives per user (loo)
    eval_seed: int = 0                  # seed of the fixed evaluation negatives
    synthetic_users: int = 300          # synthetic dataset: users
    synthetic_items: int = 500          # synthetic dataset: items
    synthetic_interactions: float = 15.0  # synthetic dataset: mean interactions per user
    synthetic_seed: int = 0             # synthetic dataset: generator seed

    def load_options(self) -> dict:
        """Loader options of the chosen dataset."""
        if self.dataset != "synthetic":
            return {}
        return {"num_users": self.synthetic_users, "num_items": self.synthetic_items,
                "mean_interactions": self.synthetic_interactions, "seed": self.synthetic_seed}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "feddmr"               # model name (see feddmr_jax.models.MODELS)
    rounds: int = 20                    # communication rounds
    local_epochs: int = 1               # local epochs per round
    batch_size: int = 256               # local minibatch size
    num_negatives: int = 4              # training negatives per positive, fresh each round
    optimizer: str = "adam"             # client optimizer: adam or sgd (fresh state each round)
    lr: float = 0.01                    # client lr of the network (chosen on ml-100k validation)
    embedding_lr: float | None = 0.1    # lr of item tables and private params; None = lr
    mu: float = 0.01                    # proximal coefficient (FedProx); 0 = FedAvg
    l2: float = 0.0                     # weight decay on the params a client trains
    clients_per_round: int | None = None  # participants per round (None: see client_fraction)
    client_fraction: float | None = None  # fraction of clients per round (None and None: all)
    weighting: str = "uniform"          # aggregation weights: uniform or examples
    table_mean: str = "touched"         # item rows averaged over clients that used them, or participants
    server_lr: float = 1.0              # server SGD step on the mean delta (1.0 = FedAvg)
    aggregator: str = "mean"            # mean, clipped_mean, median, trimmed_mean
    clip_norm: float = 1.0              # clipped_mean: L2 bound of each upload
    trim_fraction: float = 0.1          # trimmed_mean: fraction trimmed at each end
    chunk_size: int = 64                # clients per chunk (x batch_size bounds chunk memory)
    sparse: bool = True                 # train on gathered item rows (False: full tables)
    eval_every: int = 1                 # evaluate every k rounds (and at the last round)
    patience: int | None = None         # stop after this many evaluations without improvement
    select_metric: str = "hr@10"        # validation metric for model selection
    seed: int = 0                       # master seed (init, sampling, negatives, shuffling)
    fault_nan: float = 0.0              # fault injection: fraction of sampled clients uploading NaN
    fault_scale: float = 0.0            # fault injection: fraction uploading a scaled update
    fault_factor: float = 100.0         # fault injection: the scale factor (negative: sign flip)
    client_dropout: float = 0.0         # fault injection: fraction of sampled clients never reporting
    checkpoint_every: int = 10          # save a checkpoint every k rounds (0: only on SIGINT/SIGTERM)
    keep_checkpoints: int = 3           # how many of the newest checkpoints to keep

    def validate(self) -> None:
        positive = ("rounds", "local_epochs", "batch_size", "chunk_size", "eval_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError("train.checkpoint_every must be >= 0 and train.keep_checkpoints >= 1, "
                              f"got {self.checkpoint_every} and {self.keep_checkpoints}")
        self.faults().validate()
        aggregators = ("mean", "clipped_mean", "median", "trimmed_mean")
        if self.aggregator not in aggregators:
            raise ConfigError(f"unknown aggregator {self.aggregator!r} "
                              f"(known: {', '.join(aggregators)})")
        if self.clip_norm <= 0:
            raise ConfigError(f"train.clip_norm must be positive, got {self.clip_norm}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"train.trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if self.num_negatives < 1:
            raise ConfigError(f"train.num_negatives must be >= 1, got {self.num_negatives}")
        if self.mu < 0:
            raise ConfigError(f"train.mu must be >= 0, got {self.mu}")
        if self.l2 < 0:
            raise ConfigError(f"train.l2 must be >= 0, got {self.l2}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if self.embedding_lr is not None and self.embedding_lr <= 0:
            raise ConfigError(f"train.embedding_lr must be positive, got {self.embedding_lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"train.optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.weighting not in ("uniform", "examples"):
            raise ConfigError(f"train.weighting must be uniform or examples, got {self.weighting!r}")
        if self.table_mean not in ("touched", "participants"):
            raise ConfigError(f"train.table_mean must be touched or participants, got {self.table_mean!r}")
        if self.client_fraction is not None and not 0 < self.client_fraction <= 1:
            raise ConfigError(f"train.client_fraction must be in (0, 1], got {self.client_fraction}")
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise ConfigError(f"train.clients_per_round must be >= 1, got {self.clients_per_round}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"train.patience must be >= 1, got {self.patience}")


    def faults(self):
        from feddmr_jax.federated.faults import FaultConfig

        return FaultConfig(nan=self.fault_nan, scale=self.fault_scale,
                           factor=self.fault_factor, dropout=self.client_dropout)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig = DataConfig()
    model: FedDMRConfig = FedDMRConfig()
    train: TrainConfig = TrainConfig()

    def validate(self) -> None:
        if self.data.split not in ("loo", "ratio"):
            raise ConfigError(f"data.split must be loo or ratio, got {self.data.split!r}")
        self.model.validate()
        self.train.validate()


SECTIONS = {"data": DataConfig, "model": FedDMRConfig, "train": TrainConfig}


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
    return value


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Mapping[str, Any]],
                    source: str = "config") -> RunConfig:
    """Returns ``cfg`` with ``{section: {key: value}}`` replaced, type-checked."""
    new = {}
    for section, values in overrides.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}] "
                              f"(known: {', '.join(SECTIONS)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        changes = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"{source}: unknown key {section}.{key} "
                                  f"(known: {', '.join(fields)})")
            changes[key] = _coerce(section, fields[key], value)
        new[section] = dataclasses.replace(getattr(cfg, section), **changes)
    return dataclasses.replace(cfg, **new)


def load_config_file(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Reads a TOML config file onto ``base`` (default config)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return apply_overrides(base or RunConfig(), raw, source=str(path))


def to_dict(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dict (for summary.json and checkpoints)."""
    return dataclasses.asdict(cfg)


def from_dict(raw: Mapping[str, Mapping[str, Any]]) -> RunConfig:
    return apply_overrides(RunConfig(), raw, source="saved config")
