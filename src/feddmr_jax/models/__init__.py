"""Models of the engine: FedDMR and the baselines it is compared to.

Each model has a frozen config dataclass (the ``[model]`` section of a run
config) and a builder ``(config, num_items) -> Model``. How each one is trained
(loss terms, local step, evaluation) is its recipe in :mod:`feddmr_jax.methods`.
"""

from __future__ import annotations

from typing import Callable, Union

from feddmr_jax.errors import ConfigError
from feddmr_jax.models.base import Context, Leaves, Model, ModelParams
from feddmr_jax.models.feddmr import FedDMRConfig, build_feddmr
from feddmr_jax.models.fedmf import FedMFConfig, build_fedmf
from feddmr_jax.models.fedncf import FedNCFConfig, build_fedncf
from feddmr_jax.models.fedrap import FedRAPConfig, build_fedrap
from feddmr_jax.models.pfedrec import PFedRecConfig, build_pfedrec

ModelConfig = Union[FedDMRConfig, FedMFConfig, FedNCFConfig, PFedRecConfig, FedRAPConfig]

# name -> (config class, builder(model config, num_items) -> Model)
MODEL_CONFIGS: dict[str, type] = {
    "feddmr": FedDMRConfig,
    "fedmf": FedMFConfig,
    "fedncf": FedNCFConfig,
    "pfedrec": PFedRecConfig,
    "fedrap": FedRAPConfig,
}
MODELS: dict[str, Callable[..., Model]] = {
    "feddmr": build_feddmr,
    "fedmf": build_fedmf,
    "fedncf": build_fedncf,
    "pfedrec": build_pfedrec,
    "fedrap": build_fedrap,
}


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")


def model_config_class(name: str) -> type:
    """The config dataclass of the model registered under ``name``."""
    _check_name(name)
    return MODEL_CONFIGS[name]


def model_name_of(cfg: ModelConfig) -> str:
    """The registry name whose config class ``cfg`` is an instance of."""
    for name, cls in MODEL_CONFIGS.items():
        if type(cfg) is cls:
            return name
    raise ConfigError(f"{type(cfg).__name__} is not a registered model config "
                      f"(known: {', '.join(c.__name__ for c in MODEL_CONFIGS.values())})")


def build_model(name: str, cfg: ModelConfig, num_items: int) -> Model:
    """Builds the model registered under ``name`` from its config.

    Raises:
      ConfigError: unknown name, or ``cfg`` is not that model's config class.
    """
    cls = model_config_class(name)
    if type(cfg) is not cls:
        raise ConfigError(f"model {name!r} needs a {cls.__name__} [model] section, "
                          f"got a {type(cfg).__name__}")
    return MODELS[name](cfg, num_items)


__all__ = ["Context", "FedDMRConfig", "FedMFConfig", "FedNCFConfig", "FedRAPConfig", "Leaves",
           "MODELS", "MODEL_CONFIGS", "Model", "ModelConfig", "ModelParams", "PFedRecConfig",
           "build_feddmr", "build_fedmf", "build_fedncf", "build_fedrap", "build_model",
           "build_pfedrec", "model_config_class", "model_name_of"]
