"""FedNCF's recipe: BCE with the [train] optimizer, global evaluation, no proximal term.

The model is :class:`feddmr_jax.models.FedNCF` (NeuMF: private user GMF/MLP
embeddings; shared item tables, MLP tower and output layer).
"""

from __future__ import annotations

from feddmr_jax.method_configs import SPECS
from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.fedncf import build_fedncf

# [train] defaults (the reference protocol's batch of 256): method_configs.SPECS.
METHOD = Method.of(SPECS["fedncf"], build_fedncf, no_terms)
