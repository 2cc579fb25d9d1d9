"""Validation of the run configuration: the values each field accepts.

The dataclasses of ``config_sections.py`` call these from their ``validate()``
methods; every message is one line naming ``<section>.<field>``. Like
``config_sections.py``, this module loads no JAX (the CLI imports it to parse flags;
``tests/test_cli_help.py`` checks ``feddmr --help`` imports no jax).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from feddmr_jax.errors import ConfigError
from feddmr_jax.method_configs import SPECS, model_config_class

if TYPE_CHECKING:
    from feddmr_jax.config_sections import DataConfig, RunConfig, TrainConfig

# train.eval_mode values (None and "default": the method's own, feddmr_jax.methods).
EVAL_MODE_CHOICES = (None, "default", "global", "local")
# train.prox_scope values (losses.PROX_SCOPES; written here so that the config,
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


def check_data(cfg: DataConfig) -> None:
    """Validates the ``[data]`` section (:meth:`DataConfig.validate`).

    Args:
      cfg: the section.

    Raises:
      ConfigError: a bad value, naming ``data.<field>``.
    """
    check_finite("data", cfg)
    if cfg.split not in ("loo", "ratio"):
        raise ConfigError(f"data.split must be loo or ratio, got {cfg.split!r}")
    if cfg.tie_break not in ("row", "random"):
        raise ConfigError(f"data.tie_break must be row or random, got {cfg.tie_break!r}")
    if cfg.train_negatives not in ("strict", "reference"):
        raise ConfigError("data.train_negatives must be strict or reference, "
                          f"got {cfg.train_negatives!r}")
    for name in ("eval_negatives", "synthetic_users", "synthetic_items"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"data.{name} must be >= 1, got {getattr(cfg, name)}")
    if not cfg.synthetic_interactions > 0:
        raise ConfigError("data.synthetic_interactions must be positive, "
                          f"got {cfg.synthetic_interactions}")
    for name in ("eval_seed", "seed", "synthetic_seed"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"data.{name} must be >= 0, got {getattr(cfg, name)}")


def check_train(cfg: TrainConfig) -> None:
    """Validates the ``[train]`` section (:meth:`TrainConfig.validate`): ranges,
    choices, fault fractions, then the server and privacy options.

    Args:
      cfg: the section.

    Raises:
      ConfigError: a bad value or combination, naming ``train.<field>``.
    """
    check_finite("train", cfg)
    positive = ("rounds", "local_epochs", "batch_size", "chunk_size", "eval_every",
                "max_private_gb", "server_lr")
    if cfg.devices is not None and cfg.devices < 1:
        raise ConfigError(f"train.devices must be >= 1, got {cfg.devices}")
    if cfg.shape_classes is not None and cfg.shape_classes < 1:
        raise ConfigError(f"train.shape_classes must be >= 1 or unset (chosen per run), "
                          f"got {cfg.shape_classes}")
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"train.{name} must be positive, got {getattr(cfg, name)}")
    if cfg.checkpoint_every < 0 or cfg.keep_checkpoints < 0:
        raise ConfigError("train.checkpoint_every and train.keep_checkpoints must be >= 0, "
                          f"got {cfg.checkpoint_every} and {cfg.keep_checkpoints}")
    if cfg.max_rejected_rounds < 0:
        raise ConfigError("train.max_rejected_rounds must be >= 0 (0: never stop), "
                          f"got {cfg.max_rejected_rounds}")
    fractions = ("fault_nan", "fault_scale", "client_dropout")
    for name in fractions:
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(cfg, name)}")
    if sum(getattr(cfg, name) for name in fractions) >= 1.0:
        raise ConfigError("train.fault_nan + train.fault_scale + train.client_dropout "
                          "must sum to less than 1")
    cfg.faults().validate()
    aggregators = ("mean", "clipped_mean", "median", "trimmed_mean")
    if cfg.aggregator not in aggregators:
        raise ConfigError(f"unknown aggregator {cfg.aggregator!r} "
                          f"(known: {', '.join(aggregators)})")
    if cfg.clip_norm <= 0:
        raise ConfigError(f"train.clip_norm must be positive, got {cfg.clip_norm}")
    if not 0.0 <= cfg.trim_fraction < 0.5:
        raise ConfigError(f"train.trim_fraction must be in [0, 0.5), got {cfg.trim_fraction}")
    if cfg.num_negatives < 1:
        raise ConfigError(f"train.num_negatives must be >= 1, got {cfg.num_negatives}")
    if cfg.mu < 0:
        raise ConfigError(f"train.mu must be >= 0, got {cfg.mu}")
    if cfg.prox_scope not in PROX_SCOPES:
        raise ConfigError(f"train.prox_scope must be all or dense, got {cfg.prox_scope!r}")
    if cfg.l2 < 0:
        raise ConfigError(f"train.l2 must be >= 0, got {cfg.l2}")
    # 0 is allowed: a frozen model, for protocol checks (local = global evaluation).
    if cfg.lr < 0:
        raise ConfigError(f"train.lr must be >= 0, got {cfg.lr}")
    if cfg.embedding_lr is not None and cfg.embedding_lr < 0:
        raise ConfigError(f"train.embedding_lr must be >= 0, got {cfg.embedding_lr}")
    if cfg.eval_mode not in EVAL_MODE_CHOICES:
        raise ConfigError(f"train.eval_mode must be default, global or local, "
                          f"got {cfg.eval_mode!r}")
    if cfg.optimizer not in ("adam", "sgd"):
        raise ConfigError(f"train.optimizer must be adam or sgd, got {cfg.optimizer!r}")
    if cfg.weighting not in ("uniform", "examples"):
        raise ConfigError(f"train.weighting must be uniform or examples, got {cfg.weighting!r}")
    if cfg.table_mean not in ("touched", "participants"):
        raise ConfigError(f"train.table_mean must be touched or participants, got {cfg.table_mean!r}")
    if cfg.client_fraction is not None and not 0 < cfg.client_fraction <= 1:
        raise ConfigError(f"train.client_fraction must be in (0, 1], got {cfg.client_fraction}")
    if cfg.clients_per_round is not None and cfg.clients_per_round < 1:
        raise ConfigError(f"train.clients_per_round must be >= 1, got {cfg.clients_per_round}")
    if cfg.patience is not None and cfg.patience < 1:
        raise ConfigError(f"train.patience must be >= 1, got {cfg.patience}")
    if cfg.select_metric not in EVAL_METRICS:
        raise ConfigError(f"train.select_metric must be a metric the evaluation reports "
                          f"({', '.join(EVAL_METRICS)}), got {cfg.select_metric!r}")
    if cfg.seed < 0:
        raise ConfigError(f"train.seed must be >= 0, got {cfg.seed}")
    check_server(cfg)
    check_privacy(cfg)


def check_server(cfg: TrainConfig) -> None:
    """Server optimizer and learning-rate schedules (docs/server_optimization.md).

    Args:
      cfg: the ``[train]`` section.

    Raises:
      ConfigError: a bad server optimizer, decay, schedule or schedule length; a
        client ``lr_schedule`` for a method with its own optimizer.
    """
    if cfg.server_optimizer not in SERVER_OPTIMIZERS:
        raise ConfigError("train.server_optimizer must be one of "
                          f"{', '.join(SERVER_OPTIMIZERS)}, got {cfg.server_optimizer!r}")
    for name in ("server_momentum", "server_b1", "server_b2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(cfg, name)}")
    if not cfg.server_eps > 0:
        raise ConfigError(f"train.server_eps must be positive, got {cfg.server_eps}")
    spec = SPECS.get(cfg.model)       # an unknown model is check_run's error
    if cfg.lr_schedule != "constant" and spec is not None and "lr_schedule" in spec.unused_train:
        raise ConfigError(f"train.lr_schedule does not apply to model {cfg.model!r}, "
                          "whose learning rates are [model] fields; remove it")
    for name in ("server_lr_schedule", "lr_schedule"):
        kind = getattr(cfg, name)
        if kind not in LR_SCHEDULES:
            raise ConfigError(f"train.{name} must be one of {', '.join(LR_SCHEDULES)}, "
                              f"got {kind!r}")
        if kind.startswith("warmup") and cfg.schedule_warmup_rounds < 1:
            raise ConfigError(f"train.{name} = {kind!r} needs train.schedule_warmup_rounds "
                              f">= 1, got {cfg.schedule_warmup_rounds}")
        least = cfg.schedule_warmup_rounds + 1 if kind == "warmup_cosine" else 1
        if kind.endswith("cosine") and (cfg.schedule_rounds or 0) < least:
            raise ConfigError(f"train.{name} = {kind!r} needs train.schedule_rounds >= "
                              f"{least} (the cosine's own horizon, never train.rounds), "
                              f"got {cfg.schedule_rounds}")
    if cfg.schedule_rounds is not None and cfg.schedule_rounds < 1:
        raise ConfigError("train.schedule_rounds must be >= 1 or unset, "
                          f"got {cfg.schedule_rounds}")
    if cfg.schedule_warmup_rounds < 0:
        raise ConfigError("train.schedule_warmup_rounds must be >= 0, "
                          f"got {cfg.schedule_warmup_rounds}")
    if not 0.0 < cfg.schedule_decay_rate <= 1.0:
        raise ConfigError(f"train.schedule_decay_rate must be in (0, 1], "
                          f"got {cfg.schedule_decay_rate}")
    if not 0.0 <= cfg.schedule_floor <= 1.0:
        raise ConfigError(f"train.schedule_floor must be in [0, 1], got {cfg.schedule_floor}")


def check_privacy(cfg: TrainConfig) -> None:
    """DP-FedAvg and secure aggregation options (docs/privacy.md).

    Args:
      cfg: the ``[train]`` section.

    Raises:
      ConfigError: a bad DP or secure-aggregation value, or one combined with
        an aggregator, weighting or item-row mean it cannot be used with.
    """
    if cfg.dp_clip is not None and not cfg.dp_clip > 0:
        raise ConfigError(f"train.dp_clip must be positive, got {cfg.dp_clip}")
    if cfg.dp_noise < 0:
        raise ConfigError(f"train.dp_noise must be >= 0, got {cfg.dp_noise}")
    if cfg.dp_delta is not None and not 0 < cfg.dp_delta < 1:
        raise ConfigError(f"train.dp_delta must be in (0, 1), got {cfg.dp_delta}")
    if cfg.dp_accountant not in ("rdp", "pld"):
        raise ConfigError(f"train.dp_accountant must be rdp or pld, got {cfg.dp_accountant!r}")
    if cfg.dp_clip is None:
        for name, unset in (("dp_noise", 0.0), ("dp_delta", None)):
            if getattr(cfg, name) != unset:
                raise ConfigError(f"train.{name} needs train.dp_clip (DP-FedAvg is on "
                                  "only with a clip norm, --dp-clip)")
    else:
        if cfg.aggregator != "mean":
            raise ConfigError(f"train.aggregator={cfg.aggregator!r} cannot be used with DP "
                              "(train.dp_clip): DP-FedAvg is its own aggregator (clipped "
                              "sum + noise); set train.aggregator='mean'")
        if cfg.weighting != "uniform":
            raise ConfigError(f"train.weighting={cfg.weighting!r} cannot be used with DP "
                              "(train.dp_clip): one user's weight must be bounded; set "
                              "train.weighting='uniform'")
        if cfg.table_mean != "participants":
            raise ConfigError(f"train.table_mean={cfg.table_mean!r} cannot be used with DP "
                              "(train.dp_clip): 'touched' divides each item row by how many "
                              "clients used it, a data-dependent count; set "
                              "train.table_mean='participants' (--table-mean participants)")
    if cfg.secure_agg_neighbors < 0 or cfg.secure_agg_neighbors % 2:
        raise ConfigError("train.secure_agg_neighbors must be even and >= 0 (0 = all), "
                          f"got {cfg.secure_agg_neighbors}")
    if not 0 <= cfg.secure_agg_bits <= 30:
        raise ConfigError(f"train.secure_agg_bits must be in [0, 30], got {cfg.secure_agg_bits}")
    if cfg.secure_agg and cfg.aggregator in ("median", "trimmed_mean"):
        raise ConfigError(f"train.aggregator={cfg.aggregator!r} cannot be used with "
                          "train.secure_agg: it needs every client's individual update, which "
                          "secure aggregation hides; use mean or clipped_mean")
    if cfg.secure_agg and cfg.weighting != "uniform":
        raise ConfigError(f"train.weighting={cfg.weighting!r} cannot be used with "
                          "train.secure_agg: example counts scale each upload without a "
                          "bound, beyond the fixed-point range; set train.weighting='uniform'")
    if cfg.secure_agg and cfg.dp_clip is None and cfg.aggregator != "clipped_mean":
        raise ConfigError("train.secure_agg needs a bound on each upload for its fixed-point "
                          "range: set train.dp_clip (--dp-clip) or train.aggregator="
                          "'clipped_mean' with train.clip_norm (--aggregator clipped_mean "
                          "--clip-norm C)")


def check_run(cfg: RunConfig) -> None:
    """Validates a whole run config (:meth:`RunConfig.validate`): each section,
    and that ``[model]`` is the config class of ``train.model``.

    Args:
      cfg: the run config.

    Raises:
      ConfigError: a bad value, or a ``[model]`` section of another model.
    """
    cfg.data.validate()
    expected = model_config_class(cfg.train.model)
    if type(cfg.model) is not expected:
        raise ConfigError(
            f"the [model] section is a {type(cfg.model).__name__} but train.model is "
            f"{cfg.train.model!r}, which needs a {expected.__name__} (change models with "
            "config.with_model or apply_overrides, which retype the section)")
    check_finite("model", cfg.model)
    cfg.model.validate()
    cfg.train.validate()
