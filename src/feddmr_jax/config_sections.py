"""The run configuration's dataclasses: ``[data]``, ``[train]`` and the whole run.

``[model]`` is typed by ``train.model`` (``feddmr_jax.method_configs``). Each
``validate()`` calls ``config_checks.py``; parsing (files, flags, keywords,
dicts) is ``config_io.py``, which imports these. ``feddmr_jax.config`` is the
public face of all three. Loads no JAX (``feddmr --help`` imports no jax).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from feddmr_jax.config_checks import check_data, check_run, check_train
from feddmr_jax.federated.faults import FaultConfig
from feddmr_jax.method_configs import FedDMRConfig, ModelConfig


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
        """Raises ConfigError on a bad value (config_checks.check_data)."""
        check_data(self)


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
    keep_checkpoints: int = 3           # newest checkpoints kept (0: none saved, no resume)
    max_rejected_rounds: int = 3        # stop (diverged, checkpoint saved) after this many rounds in a row with no accepted upload; 0: never
    dp_clip: float | None = None        # user-level DP-FedAvg: L2 clip of each client's whole update (None: off)
    dp_noise: float = 0.0               # DP noise multiplier z: N(0, (z * dp_clip)^2) on the sum (0: no guarantee)
    dp_delta: float | None = None       # DP delta; None = 1 / (10 * number of users); must be < 1 / users
    dp_accountant: str = "rdp"          # privacy accountant: rdp or pld (docs/privacy.md)
    secure_agg: bool = False            # simulated secure aggregation: pairwise-masked dense uploads
    secure_agg_neighbors: int = 8       # mask partners per client (even; 0 = every other participant)
    secure_agg_bits: int = 20           # fixed-point fractional bits; sums must stay in +-2^(31-bits)

    def validate(self) -> None:
        """Raises ConfigError on a bad value or combination (config_checks.check_train)."""
        check_train(self)

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
        """Raises ConfigError on a bad value in any section, or a ``[model]``
        section of another model (config_checks.check_run)."""
        check_run(self)

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
        from feddmr_jax.config_io import create_config   # config_io imports this module
        return create_config(model=model, dataset=dataset, rounds=rounds,
                             sections=sections, **keys)


# The "model" entry is the default model's; the section's class follows train.model.
SECTIONS = {"data": DataConfig, "model": FedDMRConfig, "train": TrainConfig}
