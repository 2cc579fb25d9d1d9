"""FedMF's recipe: BCE with the [train] optimizer, global evaluation, no proximal term.

The model is :class:`feddmr_jax.models.FedMF` (private user vector, shared item table).
"""

from __future__ import annotations

from feddmr_jax.method_configs import SPECS
from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.fedmf import build_fedmf

# [train] defaults (the reference protocol's batch of 256): method_configs.SPECS.
METHOD = Method.of(SPECS["fedmf"], build_fedmf, no_terms)
