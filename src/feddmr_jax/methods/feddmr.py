"""FedDMR's recipe: BCE + proximal(train.mu) + l2, the [train] optimizer, global evaluation.

The model (private user embedding; shared item table, attention layers and
head) is :class:`feddmr_jax.models.FedDMR`; the attention layer is
``models/attention.py``. Its ``[train]`` defaults are the engine's own (the
proximal term is part of the method, so ``mu`` keeps its default).
"""

from __future__ import annotations

from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.feddmr import FedDMRConfig, build_feddmr

METHOD = Method("feddmr", FedDMRConfig, build_feddmr, no_terms)
