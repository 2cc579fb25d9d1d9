"""Models of the engine: FedDMR (and, in baselines, the methods it is compared to)."""

from __future__ import annotations

from typing import Callable

from feddmr_jax.errors import ConfigError
from feddmr_jax.models.base import Context, Leaves, Model, ModelParams
from feddmr_jax.models.feddmr import FedDMRConfig, build_feddmr

# name -> builder(model config, num_items) -> Model
MODELS: dict[str, Callable[[FedDMRConfig, int], Model]] = {
    "feddmr": build_feddmr,
}


def build_model(name: str, cfg: FedDMRConfig, num_items: int) -> Model:
    """Builds the model registered under ``name``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name](cfg, num_items)


__all__ = ["Context", "FedDMRConfig", "Leaves", "MODELS", "Model", "ModelParams",
           "build_feddmr", "build_model"]
