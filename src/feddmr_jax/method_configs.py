"""Each method's configuration without the engine: its ``[model]`` dataclass, its
reference ``[train]`` values, and the ``[train]`` keys it ignores.

This module imports no JAX (only :mod:`feddmr_jax.errors`): ``config.py`` types
the ``[model]`` section with these classes and the CLI derives its flags and
help from them, so ``feddmr --help`` and argument errors answer without
loading the engine. The Flax models (``feddmr_jax.models``) import their
config class from here, and each registry entry (``feddmr_jax.methods``) takes
its name, config class, ``train_defaults`` and ``unused_train`` from
:data:`SPECS` (``Method.of``); a new method adds its config class and one
:class:`MethodSpec` line here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, NamedTuple, Union

from feddmr_jax.errors import ConfigError

# FedDMR's layer forms (model.norm; models/attention.py).
NORMS = ("post", "pre")
# [train] keys of the client optimizer: unused by methods whose learning rates are [model] fields.
OWN_OPTIMIZER = ("optimizer", "lr", "embedding_lr", "lr_schedule")


def check_fields(cfg: Any, *, positive: Iterable[str] = (), non_negative: Iterable[str] = (),
                 unit_interval: Iterable[str] = ()) -> None:
    """Validates numeric fields of a model config dataclass.

    Args:
      cfg: the config (fields read by name).
      positive: fields that must be > 0.
      non_negative: fields that must be >= 0.
      unit_interval: fields that must lie in (0, 1].

    Raises:
      ConfigError: naming the first offending field and its value.
    """
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"model.{name} must be positive, got {getattr(cfg, name)}")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"model.{name} must be >= 0, got {getattr(cfg, name)}")
    for name in unit_interval:
        if not 0.0 < getattr(cfg, name) <= 1.0:
            raise ConfigError(f"model.{name} must be in (0, 1], got {getattr(cfg, name)}")


@dataclasses.dataclass(frozen=True)
class FedDMRConfig:
    """FedDMR hyperparameters (every choice the paper leaves open is a field);
    the model: ``models/feddmr.py``."""

    dim: int = 32                 # embedding size d
    heads: int = 4                # attention heads H (must divide dim)
    layers: int = 2               # attention layers ("dual-layer" = 2)
    history_len: int = 0          # memory size n of recent training positives; 0: pair attention
    ffn_dim: int | None = None    # feed-forward width; None = 2 * dim
    dropout: float = 0.0          # dropout on attention and FFN outputs
    attention: bool = True        # False: MLP head on raw embeddings (ablation)
    init_scale: float = 0.1       # std of the embedding initializers
    norm: str = "pre"             # layer form: pre (zero-init branches) or post (LN after each residual)

    def validate(self) -> None:
        if self.dim <= 0:
            raise ConfigError(f"model.dim must be positive, got {self.dim}")
        if self.heads <= 0 or self.dim % self.heads:
            raise ConfigError(f"model.heads ({self.heads}) must divide model.dim ({self.dim})")
        if self.layers < 0:
            raise ConfigError(f"model.layers must be >= 0, got {self.layers}")
        if self.history_len < 0:
            raise ConfigError(f"model.history_len must be >= 0, got {self.history_len}")
        if self.norm not in NORMS:
            raise ConfigError(f"model.norm must be post or pre, got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")

    @property
    def ffn_width(self) -> int:
        return self.ffn_dim or 2 * self.dim

    @property
    def num_layers(self) -> int:
        """Attention layers actually built (0 when attention is off)."""
        return self.layers if self.attention else 0


@dataclasses.dataclass(frozen=True)
class FedMFConfig:
    """FedMF hyperparameters."""

    dim: int = 32              # embedding size d
    init_scale: float = 0.1    # std of the normal initializer of both embeddings

    def validate(self) -> None:
        check_fields(self, positive=("dim",), non_negative=("init_scale",))


@dataclasses.dataclass(frozen=True)
class FedNCFConfig:
    """FedNCF (NeuMF) hyperparameters."""

    dim: int = 32                          # embedding size d of each tower
    mlp_hidden: tuple[int, ...] | None = None  # MLP output sizes; None = (d, d // 2)
    init_scale: float = 0.1                # std of the embedding initializers

    def validate(self) -> None:
        check_fields(self, positive=("dim",), non_negative=("init_scale",))
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ConfigError(f"model.mlp_hidden must be non-empty and positive, got "
                              f"{self.hidden} (dim={self.dim}: use dim >= 2 for the default)")

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(self.mlp_hidden) if self.mlp_hidden is not None else (
            self.dim, self.dim // 2)


@dataclasses.dataclass(frozen=True)
class PFedRecConfig:
    """PFedRec hyperparameters (defaults: the reference ``train.py``)."""

    dim: int = 32                # latent_dim d
    init_scale: float = 1.0      # std of the item-table init (torch Embedding: N(0, 1))
    lr: float = 0.1              # SGD lr of the score head (reference --lr)
    lr_eta: float = 80.0         # item lr = lr * num_items * lr_eta (reference --lr_eta)
    weight_decay: float = 0.0    # SGD weight decay of both steps (--l2_regularization)

    def validate(self) -> None:
        check_fields(self, positive=("dim",),
                     non_negative=("init_scale", "lr", "lr_eta", "weight_decay"))


@dataclasses.dataclass(frozen=True)
class LocalConfig(PFedRecConfig):
    """PFedRec's hyperparameters and defaults (its own class, so that the
    registry can tell the ``[model]`` section of ``local`` from ``pfedrec``'s;
    the fields are restated for their ``--help`` comments)."""

    dim: int = 32                # latent_dim d (as pfedrec)
    init_scale: float = 1.0      # std of the item-table init (as pfedrec: N(0, 1))
    lr: float = 0.1              # SGD lr of the score head (as pfedrec)
    lr_eta: float = 80.0         # item lr = lr * num_items * lr_eta (as pfedrec)
    weight_decay: float = 0.0    # SGD weight decay of both steps (as pfedrec)


@dataclasses.dataclass(frozen=True)
class FedRAPConfig:
    """FedRAP hyperparameters (defaults: the reference ``train.py`` at 550765d)."""

    dim: int = 32               # latent_dim d
    init_scale: float = 1.0     # std of both item-table inits (torch Embedding: N(0, 1))
    lam: float = 0.1            # weight of the subtracted D-C distance (--lambda)
    mu: float = 0.1             # weight of the L1 sparsity of C (--mu)
    lr_network: float = 0.5     # SGD lr of the head (--lr_network)
    lr_args: float = 200.0      # SGD lr of D and C (--lr_args)
    weight_decay: float = 1e-4  # SGD weight decay of all params (--l2_regularization)
    step_decay: float = 0.95    # lr factor per local step (ExponentialLR gamma)
    round_decay: float = 0.97   # lr factor per round (--decay_rate)

    def validate(self) -> None:
        check_fields(self, positive=("dim",),
                     non_negative=("init_scale", "lam", "mu", "lr_network", "lr_args",
                                   "weight_decay"),
                     unit_interval=("step_decay", "round_decay"))


@dataclasses.dataclass(frozen=True)
class PopularityConfig:
    """No hyperparameters: the ``[model]`` section of ``popularity`` is empty."""

    def validate(self) -> None:
        """Nothing to check."""


class MethodSpec(NamedTuple):
    """The engine-free half of a registry entry (``feddmr_jax.methods.Method``).

    Attributes:
      name: the ``train.model`` value.
      config: dataclass of the ``[model]`` section.
      train_defaults: ``[train]`` values of the reference protocol, and engine
        settings measured per method that change no result (``chunk_size``);
        applied by ``config.build_config`` to the keys a user does not set.
      unused_train: ``[train]`` keys this method ignores (setting one is an error).
    """

    name: str
    config: type
    train_defaults: Mapping[str, Any] = {}
    unused_train: tuple[str, ...] = ()


# Reference: github.com/Zhangcx19/IJCAI-23-PFedRec (train.py defaults).
_PFEDREC_TRAIN = {"mu": 0.0, "table_mean": "participants", "weighting": "uniform",
                  "batch_size": 256, "local_epochs": 1, "num_negatives": 4,
                  # engine, not protocol (a round is the same whatever the
                  # chunking): 1.2x per ml-100k round against 64
                  # (benchmarks/HISTORY.md, session 6)
                  "chunk_size": 128}

# The table, in the registry's order. The baselines have no proximal term in
# their references (mu 0); fedmf and fedncf use the reference protocol's batch
# of 256 (the engine's default of 64 is FedDMR's).
SPECS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("feddmr", FedDMRConfig),
    MethodSpec("fedmf", FedMFConfig, {"mu": 0.0, "batch_size": 256}),
    MethodSpec("fedncf", FedNCFConfig, {"mu": 0.0, "batch_size": 256}),
    MethodSpec("pfedrec", PFedRecConfig, _PFEDREC_TRAIN, OWN_OPTIMIZER),
    # Reference: github.com/mtics/FedRAP (train.py at 550765d).
    MethodSpec("fedrap", FedRAPConfig,
               {"mu": 0.0, "table_mean": "participants", "weighting": "uniform",
                "batch_size": 2048, "local_epochs": 10, "num_negatives": 4}, OWN_OPTIMIZER),
    # PFedRec's reference [train] values; no federation.
    MethodSpec("local", LocalConfig, _PFEDREC_TRAIN, OWN_OPTIMIZER),
    MethodSpec("popularity", PopularityConfig,
               {"mu": 0.0, "table_mean": "participants", "weighting": "uniform",
                "local_epochs": 1, "num_negatives": 1}, OWN_OPTIMIZER),
)}

MODEL_CONFIGS: dict[str, type] = {name: spec.config for name, spec in SPECS.items()}
ModelConfig = Union[tuple(MODEL_CONFIGS.values())]  # the [model] section of any method


def get_spec(name: str) -> MethodSpec:
    """The spec of the method ``name``.

    Raises:
      ConfigError: unknown name (the message lists the known ones).
    """
    if name not in SPECS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(SPECS))})")
    return SPECS[name]


def model_config_class(name: str) -> type:
    """The ``[model]`` config dataclass of the method registered under ``name``."""
    return get_spec(name).config


def model_name_of(cfg: Any) -> str:
    """The registry name whose config class ``cfg`` is an instance of."""
    for name, cls in MODEL_CONFIGS.items():
        if type(cfg) is cls:
            return name
    raise ConfigError(f"{type(cfg).__name__} is not a registered model config "
                      f"(known: {', '.join(c.__name__ for c in MODEL_CONFIGS.values())})")
