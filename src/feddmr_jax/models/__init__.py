"""Models of the engine: FedDMR and the baselines it is compared to, as Flax modules.

Each model file holds a ``flax.linen`` Module and a builder ``(config,
num_items) -> Model`` that turns the Module into the engine's pure functions
through ``split.py`` (the one place a Module's parameters become
``ModelParams(private, shared)``); its frozen config dataclass (the ``[model]``
section of a run config) lives in :mod:`feddmr_jax.method_configs`, which
imports no JAX (the CLI parses flags without loading the engine), and is
re-exported here. How each one is trained (loss terms, local step, evaluation,
reference defaults) and the registry of names are in :mod:`feddmr_jax.methods`;
this package imports nothing above it.
"""

from __future__ import annotations

from feddmr_jax.models.attention import MemoryAttention, MemoryKV
from feddmr_jax.models.base import Context, Leaves, Model, ModelParams
from feddmr_jax.models.feddmr import FedDMR, FedDMRConfig, build_feddmr
from feddmr_jax.models.fedmf import FedMF, FedMFConfig, build_fedmf
from feddmr_jax.models.fedncf import FedNCF, FedNCFConfig, build_fedncf
from feddmr_jax.models.fedrap import FedRAP, FedRAPConfig, build_fedrap
from feddmr_jax.models.layers import MLP
from feddmr_jax.models.pfedrec import PFedRec, PFedRecConfig, build_pfedrec
from feddmr_jax.models.split import ParamSplit, merge_params, module_model, split_params

__all__ = ["Context", "FedDMR", "FedDMRConfig", "FedMF", "FedMFConfig", "FedNCF",
           "FedNCFConfig", "FedRAP", "FedRAPConfig", "Leaves", "MLP", "MemoryAttention",
           "MemoryKV", "Model", "ModelParams", "PFedRec", "PFedRecConfig", "ParamSplit",
           "build_feddmr", "build_fedmf", "build_fedncf", "build_fedrap", "build_pfedrec",
           "merge_params", "module_model", "split_params"]
