"""FedNCF's recipe: BCE with the [train] optimizer, global evaluation, no proximal term.

The model is :class:`feddmr_jax.models.FedNCF` (NeuMF: private user GMF/MLP
embeddings; shared item tables, MLP tower and output layer).
"""

from __future__ import annotations

from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.fedncf import FedNCFConfig, build_fedncf

# The reference protocol's batch of 256 (the engine's default of 64 is FedDMR's).
METHOD = Method("fedncf", FedNCFConfig, build_fedncf, no_terms,
                train_defaults={"mu": 0.0, "batch_size": 256})
