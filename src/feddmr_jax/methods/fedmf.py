"""FedMF's recipe: BCE with the [train] optimizer, global evaluation, no proximal term.

The model is :class:`feddmr_jax.models.FedMF` (private user vector, shared item table).
"""

from __future__ import annotations

from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.fedmf import FedMFConfig, build_fedmf

# The reference protocol's batch of 256 (the engine's default of 64 is FedDMR's).
METHOD = Method("fedmf", FedMFConfig, build_fedmf, no_terms,
                train_defaults={"mu": 0.0, "batch_size": 256})
