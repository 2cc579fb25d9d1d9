"""FedMF's recipe: BCE with the [train] optimizer, global evaluation, no proximal term.

The model is :class:`feddmr_jax.models.FedMF` (private user vector, shared item table).
"""

from __future__ import annotations

from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.fedmf import FedMFConfig, build_fedmf

METHOD = Method("fedmf", FedMFConfig, build_fedmf, no_terms, train_defaults={"mu": 0.0})
