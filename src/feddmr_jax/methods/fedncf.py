"""FedNCF's recipe: BCE with the [train] optimizer, global evaluation, no proximal term.

The model is :class:`feddmr_jax.models.FedNCF` (NeuMF: private user GMF/MLP
embeddings; shared item tables, MLP tower and output layer).
"""

from __future__ import annotations

from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.fedncf import FedNCFConfig, build_fedncf

METHOD = Method("fedncf", FedNCFConfig, build_fedncf, no_terms, train_defaults={"mu": 0.0})
