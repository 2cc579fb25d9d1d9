"""Typed, frozen run configuration; TOML files and CLI flags map onto it.

A config file has one table per section::

    [data]
    dataset = "ml-100k"
    data_dir = "../shared/data"

    [model]
    dim = 32
    heads = 4

    [train]
    model = "feddmr"
    rounds = 100
    mu = 0.01

Flags given on the command line override the file. Unknown sections or keys,
and values of the wrong type, are errors that name the key.

The ``[model]`` section is typed by ``train.model``: each model has its own
config dataclass (``feddmr_jax.method_configs.MODEL_CONFIGS``), and a key that model
does not have is an error naming the key and the model. A config built from
a file or the command line (:func:`build_config`) starts from the chosen
method's reference ``[train]`` values (``method_configs.SPECS``) for the keys it
does not set. ``config.json`` records ``train.model`` with every value, so
:func:`from_dict` rebuilds the same config.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.faults import FaultConfig
from feddmr_jax.method_configs import (MODEL_CONFIGS, FedDMRConfig, ModelConfig, get_spec,
                                       model_config_class, model_name_of)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)


# train.eval_mode values (None and "default": the method's own, feddmr_jax.methods).
EVAL_MODE_CHOICES = (None, "default", "global", "local")
# train.prox_scope values (losses.PROX_SCOPES; written here so that this module,
# which the CLI imports to parse flags, loads no JAX; a test checks they agree).
PROX_SCOPES = ("all", "dense")
# The metrics evaluation reports (feddmr_jax.metrics.ranking_metrics at the
# scorer's cut-off k = 10, evaluate.make_scorer); train.select_metric is one
# of them. tests/test_config_validation.py checks this list against evaluate().
EVAL_METRICS = ("hr@10", "ndcg@10", "precision@10", "recall@10", "mrr", "auc")
# train.server_optimizer and the *_schedule values (federated/server_optimizers.py,
# federated/schedules.py; written here for the same reason, tests/test_server_config.py
# checks they agree).
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "yogi", "adagrad")
LR_SCHEDULES = ("constant", "cosine", "exponential", "warmup", "warmup_cosine")


def check_finite(section: str, cfg: Any) -> None:
    """Refuses a NaN or infinite value in any float field of a config section.

    Every field is read by the type of its value, not by name, so a new float
    field is covered without a change here; range checks alone miss NaN
    (``nan < 0`` and ``nan > x`` are both False).

    Args:
      section: the section's name in messages (``data``, ``model``, ``train``).
      cfg: a config dataclass.

    Raises:
      ConfigError: ``<section>.<field> must be finite, got nan``.
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{section}.{f.name} must be finite, got {value}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"          # ml-100k, ml-1m, lastfm-2k, amazon-video, csv, synthetic
    data_dir: str | None = None         # folder with the files (default: $FEDDMR_DATA_DIR / cache)
    data_path: str | None = None        # file for amazon-video / csv
    split: str = "loo"                  # loo (leave-one-out) or ratio (80/10/10 by time)
    eval_negatives: int = 99            # sampled negatives per user (loo)
    eval_seed: int = 0                  # seed of the fixed evaluation negatives
    tie_break: str = "row"              # equal timestamps: row (later file row is later) or random (data.seed)
    seed: int = 0                       # seed of tie_break random and of untimed data's hold-out (lastfm)
    train_negatives: str = "strict"     # strict: avoid train positives; reference: also val/test (leaky)
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

    def validate(self) -> None:
        check_finite("data", self)
        if self.split not in ("loo", "ratio"):
            raise ConfigError(f"data.split must be loo or ratio, got {self.split!r}")
        if self.tie_break not in ("row", "random"):
            raise ConfigError(f"data.tie_break must be row or random, got {self.tie_break!r}")
        if self.train_negatives not in ("strict", "reference"):
            raise ConfigError("data.train_negatives must be strict or reference, "
                              f"got {self.train_negatives!r}")
        for name in ("eval_negatives", "synthetic_users", "synthetic_items"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if not self.synthetic_interactions > 0:
            raise ConfigError("data.synthetic_interactions must be positive, "
                              f"got {self.synthetic_interactions}")
        for name in ("eval_seed", "seed", "synthetic_seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "feddmr"               # model name (feddmr_jax.methods.METHODS); types [model]
    rounds: int = 20                    # communication rounds
    local_epochs: int = 1               # local epochs per round
    batch_size: int = 64                # local minibatch size (FedDMR's, chosen on ml-100k validation)
    num_negatives: int = 4              # training negatives per positive, fresh each round
    optimizer: str = "adam"             # client optimizer: adam or sgd (fresh state each round)
    lr: float = 0.01                    # client lr of the network (chosen on ml-100k validation)
    embedding_lr: float | None = 0.1    # lr of item tables and private params; None = lr
    mu: float = 0.01                    # proximal coefficient (FedProx); 0 = FedAvg
    prox_scope: str = "all"             # proximal term on all shared leaves (all) or the networks only (dense)
    l2: float = 0.0                     # L2 penalty: dense leaves, and the item-table rows a minibatch reaches (losses.l2)
    clients_per_round: int | None = None  # participants per round (None: see client_fraction)
    client_fraction: float | None = None  # fraction of clients per round (None and None: all)
    weighting: str = "uniform"          # aggregation weights: uniform or examples
    table_mean: str = "touched"         # item rows averaged over clients that used them, or participants
    server_lr: float = 1.0              # server rate eta on the mean delta (sgd at 1.0 = FedAvg)
    server_optimizer: str = "sgd"       # server step (docs/server_optimization.md): sgd, momentum (FedAvgM), adam, yogi, adagrad (Reddi et al. 2021)
    server_momentum: float = 0.9        # momentum: heavy-ball beta in [0, 1) (FedAvgM)
    server_b1: float = 0.9              # adam, yogi, adagrad: first-moment decay beta_1 in [0, 1) (Reddi et al.)
    server_b2: float = 0.99             # adam, yogi: second-moment decay beta_2 in [0, 1) (Reddi et al.)
    server_eps: float = 1e-3            # adam, yogi, adagrad: adaptivity tau > 0 (denominator sqrt(v) + tau; v starts at tau^2)
    server_lr_schedule: str = "constant"  # server_lr over rounds: constant, cosine, exponential, warmup, warmup_cosine
    lr_schedule: str = "constant"       # client lr and embedding_lr over rounds: same kinds as server_lr_schedule
    schedule_rounds: int | None = None  # cosine kinds: rounds until the floor (their own horizon, never train.rounds)
    schedule_warmup_rounds: int = 0     # warmup kinds: rounds W of linear warmup (round r <= W gets lr * r / W)
    schedule_decay_rate: float = 0.99   # exponential: lr factor per round, in (0, 1]
    schedule_floor: float = 0.0         # cosine kinds: final lr as a fraction of the peak, in [0, 1]
    aggregator: str = "mean"            # mean, clipped_mean, median, trimmed_mean
    clip_norm: float = 1.0              # clipped_mean: L2 bound of each upload
    trim_fraction: float = 0.1          # trimmed_mean: fraction trimmed at each end
    chunk_size: int = 64                # clients per chunk (x max(batch_size, 256) slots bounds chunk memory)
    shape_classes: int | None = None    # compiled chunk shapes; None: chosen from the data (compile vs padding), never from rounds
    sparse: bool = True                 # train on gathered item rows (False: full tables)
    max_private_gb: float = 4.0         # refuse a private store (all clients) above this many GiB
    devices: int | None = None          # devices the client axis is split over (None: all)
    eval_every: int = 1                 # evaluate every k rounds (and at the last round)
    patience: int | None = None         # stop after this many evaluations without improvement
    select_metric: str = "hr@10"        # validation metric for model selection
    eval_mode: str | None = None        # default (method's own), global, or local (model after local training)
    seed: int = 0                       # master seed (init, sampling, negatives, shuffling)
    fault_nan: float = 0.0              # fault injection: fraction of sampled clients uploading NaN
    fault_scale: float = 0.0            # fault injection: fraction uploading a scaled update
    fault_factor: float = 100.0         # fault injection: the scale factor (negative: sign flip)
    client_dropout: float = 0.0         # fault injection: fraction of sampled clients never reporting
    checkpoint_every: int = 10          # save a checkpoint every k rounds (0: only on SIGINT/SIGTERM)
    keep_checkpoints: int = 3           # how many of the newest checkpoints to keep
    max_rejected_rounds: int = 3        # stop (diverged, checkpoint saved) after this many rounds in a row with no accepted upload; 0: never
    dp_clip: float | None = None        # user-level DP-FedAvg: L2 clip of each client's whole update (None: off)
    dp_noise: float = 0.0               # DP noise multiplier z: N(0, (z * dp_clip)^2) on the sum (0: no guarantee)
    dp_delta: float | None = None       # DP delta; None = 1 / (10 * number of users); must be < 1 / users
    dp_accountant: str = "rdp"          # privacy accountant: rdp or pld (docs/privacy.md)
    secure_agg: bool = False            # simulated secure aggregation: pairwise-masked dense uploads
    secure_agg_neighbors: int = 8       # mask partners per client (even; 0 = every other participant)
    secure_agg_bits: int = 20           # fixed-point fractional bits; sums must stay in +-2^(31-bits)

    def validate(self) -> None:
        check_finite("train", self)
        positive = ("rounds", "local_epochs", "batch_size", "chunk_size", "eval_every",
                    "max_private_gb", "server_lr")
        if self.devices is not None and self.devices < 1:
            raise ConfigError(f"train.devices must be >= 1, got {self.devices}")
        if self.shape_classes is not None and self.shape_classes < 1:
            raise ConfigError(f"train.shape_classes must be >= 1 or unset (chosen per run), "
                              f"got {self.shape_classes}")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ConfigError("train.checkpoint_every must be >= 0 and train.keep_checkpoints >= 1, "
                              f"got {self.checkpoint_every} and {self.keep_checkpoints}")
        if self.max_rejected_rounds < 0:
            raise ConfigError("train.max_rejected_rounds must be >= 0 (0: never stop), "
                              f"got {self.max_rejected_rounds}")
        fractions = ("fault_nan", "fault_scale", "client_dropout")
        for name in fractions:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
        if sum(getattr(self, name) for name in fractions) >= 1.0:
            raise ConfigError("train.fault_nan + train.fault_scale + train.client_dropout "
                              "must sum to less than 1")
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
        if self.prox_scope not in PROX_SCOPES:
            raise ConfigError(f"train.prox_scope must be all or dense, got {self.prox_scope!r}")
        if self.l2 < 0:
            raise ConfigError(f"train.l2 must be >= 0, got {self.l2}")
        # 0 is allowed: a frozen model, for protocol checks (local = global evaluation).
        if self.lr < 0:
            raise ConfigError(f"train.lr must be >= 0, got {self.lr}")
        if self.embedding_lr is not None and self.embedding_lr < 0:
            raise ConfigError(f"train.embedding_lr must be >= 0, got {self.embedding_lr}")
        if self.eval_mode not in EVAL_MODE_CHOICES:
            raise ConfigError(f"train.eval_mode must be default, global or local, "
                              f"got {self.eval_mode!r}")
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
        if self.select_metric not in EVAL_METRICS:
            raise ConfigError(f"train.select_metric must be a metric the evaluation reports "
                              f"({', '.join(EVAL_METRICS)}), got {self.select_metric!r}")
        if self.seed < 0:
            raise ConfigError(f"train.seed must be >= 0, got {self.seed}")
        self._validate_server()
        self._validate_privacy()

    def _validate_server(self) -> None:
        """Server optimizer and learning-rate schedules (docs/server_optimization.md)."""
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise ConfigError("train.server_optimizer must be one of "
                              f"{', '.join(SERVER_OPTIMIZERS)}, got {self.server_optimizer!r}")
        for name in ("server_momentum", "server_b1", "server_b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.server_eps > 0:
            raise ConfigError(f"train.server_eps must be positive, got {self.server_eps}")
        for name in ("server_lr_schedule", "lr_schedule"):
            kind = getattr(self, name)
            if kind not in LR_SCHEDULES:
                raise ConfigError(f"train.{name} must be one of {', '.join(LR_SCHEDULES)}, "
                                  f"got {kind!r}")
            if kind.startswith("warmup") and self.schedule_warmup_rounds < 1:
                raise ConfigError(f"train.{name} = {kind!r} needs train.schedule_warmup_rounds "
                                  f">= 1, got {self.schedule_warmup_rounds}")
            least = self.schedule_warmup_rounds + 1 if kind == "warmup_cosine" else 1
            if kind.endswith("cosine") and (self.schedule_rounds or 0) < least:
                raise ConfigError(f"train.{name} = {kind!r} needs train.schedule_rounds >= "
                                  f"{least} (the cosine's own horizon, never train.rounds), "
                                  f"got {self.schedule_rounds}")
        if self.schedule_rounds is not None and self.schedule_rounds < 1:
            raise ConfigError("train.schedule_rounds must be >= 1 or unset, "
                              f"got {self.schedule_rounds}")
        if self.schedule_warmup_rounds < 0:
            raise ConfigError("train.schedule_warmup_rounds must be >= 0, "
                              f"got {self.schedule_warmup_rounds}")
        if not 0.0 < self.schedule_decay_rate <= 1.0:
            raise ConfigError(f"train.schedule_decay_rate must be in (0, 1], "
                              f"got {self.schedule_decay_rate}")
        if not 0.0 <= self.schedule_floor <= 1.0:
            raise ConfigError(f"train.schedule_floor must be in [0, 1], got {self.schedule_floor}")

    def _validate_privacy(self) -> None:
        """DP-FedAvg and secure aggregation options (docs/privacy.md)."""
        if self.dp_clip is not None and not self.dp_clip > 0:
            raise ConfigError(f"train.dp_clip must be positive, got {self.dp_clip}")
        if self.dp_noise < 0:
            raise ConfigError(f"train.dp_noise must be >= 0, got {self.dp_noise}")
        if self.dp_delta is not None and not 0 < self.dp_delta < 1:
            raise ConfigError(f"train.dp_delta must be in (0, 1), got {self.dp_delta}")
        if self.dp_accountant not in ("rdp", "pld"):
            raise ConfigError(f"train.dp_accountant must be rdp or pld, got {self.dp_accountant!r}")
        if self.dp_clip is None:
            for name, unset in (("dp_noise", 0.0), ("dp_delta", None)):
                if getattr(self, name) != unset:
                    raise ConfigError(f"train.{name} needs train.dp_clip (DP-FedAvg is on "
                                      "only with a clip norm, --dp-clip)")
        else:
            if self.aggregator != "mean":
                raise ConfigError(f"train.aggregator={self.aggregator!r} cannot be used with DP "
                                  "(train.dp_clip): DP-FedAvg is its own aggregator (clipped "
                                  "sum + noise); set train.aggregator='mean'")
            if self.weighting != "uniform":
                raise ConfigError(f"train.weighting={self.weighting!r} cannot be used with DP "
                                  "(train.dp_clip): one user's weight must be bounded; set "
                                  "train.weighting='uniform'")
            if self.table_mean != "participants":
                raise ConfigError(f"train.table_mean={self.table_mean!r} cannot be used with DP "
                                  "(train.dp_clip): 'touched' divides each item row by how many "
                                  "clients used it, a data-dependent count; set "
                                  "train.table_mean='participants' (--table-mean participants)")
        if self.secure_agg_neighbors < 0 or self.secure_agg_neighbors % 2:
            raise ConfigError("train.secure_agg_neighbors must be even and >= 0 (0 = all), "
                              f"got {self.secure_agg_neighbors}")
        if not 0 <= self.secure_agg_bits <= 30:
            raise ConfigError(f"train.secure_agg_bits must be in [0, 30], got {self.secure_agg_bits}")
        if self.secure_agg and self.aggregator in ("median", "trimmed_mean"):
            raise ConfigError(f"train.aggregator={self.aggregator!r} cannot be used with "
                              "train.secure_agg: it needs every client's individual update, which "
                              "secure aggregation hides; use mean or clipped_mean")
        if self.secure_agg and self.weighting != "uniform":
            raise ConfigError(f"train.weighting={self.weighting!r} cannot be used with "
                              "train.secure_agg: example counts scale each upload without a "
                              "bound, beyond the fixed-point range; set train.weighting='uniform'")
        if self.secure_agg and self.dp_clip is None and self.aggregator != "clipped_mean":
            raise ConfigError("train.secure_agg needs a bound on each upload for its fixed-point "
                              "range: set train.dp_clip (--dp-clip) or train.aggregator="
                              "'clipped_mean' with train.clip_norm (--aggregator clipped_mean "
                              "--clip-norm C)")

    def secure_agg_clip(self) -> float | None:
        """The L2 bound of every upload under secure aggregation (None: unbounded)."""
        if self.dp_clip is not None:
            return float(self.dp_clip)
        return float(self.clip_norm) if self.aggregator == "clipped_mean" else None


    def faults(self):
        return FaultConfig(nan=self.fault_nan, scale=self.fault_scale,
                           factor=self.fault_factor, dropout=self.client_dropout)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: DataConfig = DataConfig()
    model: ModelConfig = FedDMRConfig()     # the config class of train.model
    train: TrainConfig = TrainConfig()

    def validate(self) -> None:
        self.data.validate()
        expected = model_config_class(self.train.model)
        if type(self.model) is not expected:
            raise ConfigError(
                f"the [model] section is a {type(self.model).__name__} but train.model is "
                f"{self.train.model!r}, which needs a {expected.__name__} (change models with "
                "config.with_model or apply_overrides, which retype the section)")
        check_finite("model", self.model)
        self.model.validate()
        self.train.validate()

    @classmethod
    def create(cls, *, model: str = "feddmr", dataset: str | None = None,
               rounds: int | None = None,
               sections: Mapping[str, Mapping[str, Any]] | None = None,
               **keys: Any) -> "RunConfig":
        """A validated config from keywords: the Python API's way to build a run.

        Keys not given take the chosen method's reference ``[train]`` values,
        then the dataclass defaults (as a TOML file would; see
        :func:`build_config`). Example::

            RunConfig.create(model="feddmr", dataset="ml-100k", rounds=50,
                             data_dir="../shared/data", dim=32, mu=0.01)

        Args:
          model: model name (``feddmr_jax.methods.METHODS``); types ``[model]``.
          dataset: ``data.dataset`` (default: synthetic).
          rounds: ``train.rounds``.
          sections: ``{section: {key: value}}`` tables as in a TOML file, for
            keys whose name two sections share (fedrap's ``model.mu``).
          **keys: any ``[data]``, ``[train]`` or ``[model]`` key of ``model``.

        Raises:
          ConfigError: a key no section of this model has (the message names
            the section it belongs to), a key two sections share, a bad value.
        """
        return create_config(model=model, dataset=dataset, rounds=rounds,
                             sections=sections, **keys)


# The "model" entry is the default model's; the section's class follows train.model.
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
    if kind.startswith("tuple[int"):
        if (not isinstance(value, (list, tuple))
                or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
            raise ConfigError(f"{where} must be a list of integers, got {value!r}")
        return tuple(value)
    return value


def did_you_mean(name: str, known: Iterable[str], fmt: str = "{}") -> str:
    """``"; did you mean X?"`` (``X or Y`` for two) for the entries of ``known``
    close to ``name`` (difflib), each written by ``fmt``; ``""`` when none is."""
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
    """``cfg`` with ``train.model = name`` and its ``[model]`` section set from ``model_fields``."""
    return apply_overrides(cfg, {"train": {"model": name}, "model": model_fields},
                           source="with_model")


def build_config(raw: Mapping[str, Mapping[str, Any]], source: str = "config", *,
                 base: RunConfig | None = None) -> RunConfig:
    """A config from ``{section: {key: value}}`` as a user writes it (file, flags).

    Without ``base``: the defaults, with the chosen method's reference
    ``[train]`` values (``feddmr_jax.methods``) for the keys ``raw`` does not
    set. With ``base``: ``raw`` on top of it (no method defaults). Either way
    ``[train]`` keys the method ignores are errors.
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
        return _dp_table_mean(apply_overrides(base, raw, source), train_raw)
    return apply_overrides(base, raw, source)


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
    """The raw tables of a TOML config file."""
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
    """Reads a TOML config file onto ``base`` (default config; see :func:`build_config`)."""
    return build_config(read_config_file(path), str(path), base=base)


def to_dict(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dict (for summary.json and checkpoints)."""
    return dataclasses.asdict(cfg)


def from_dict(raw: Mapping[str, Mapping[str, Any]]) -> RunConfig:
    """The config :func:`to_dict` wrote (``train.model`` types ``[model]``)."""
    return apply_overrides(RunConfig(), raw, source="saved config")


def create_config(*, model: str = "feddmr", dataset: str | None = None,
                  rounds: int | None = None,
                  sections: Mapping[str, Mapping[str, Any]] | None = None,
                  **keys: Any) -> RunConfig:
    """:meth:`RunConfig.create`: flat keywords sorted into their sections, then
    :func:`build_config` and ``validate``."""
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
