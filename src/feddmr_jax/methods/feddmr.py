"""FedDMR's recipe: BCE + proximal(train.mu) + l2, the [train] optimizer, global evaluation.

The model (private user embedding; shared item table, attention layers and
head) is :class:`feddmr_jax.models.FedDMR`; the attention layer is
``models/attention.py``. Its ``[train]`` defaults are the engine's own (the
proximal term is part of the method, so ``mu`` keeps its default).

On the CPU its chunk step compiles without XLA's experimental YNNPACK/XNNPACK
fusions (``compiler_options.NO_YNN_FUSIONS``): 1.2x faster per ml-100k round on
the project's 2-core CPU, measured side by side by ``benchmarks/bench_xla_flags.py``
(benchmarks/RESULTS.md; session 5 in benchmarks/HISTORY.md); ``FEDDMR_COMPILER_OPTIONS=off``
restores XLA's defaults.
"""

from __future__ import annotations

from feddmr_jax.compiler_options import NO_YNN_FUSIONS
from feddmr_jax.method_configs import SPECS
from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.feddmr import build_feddmr

METHOD = Method.of(SPECS["feddmr"], build_feddmr, no_terms, cpu_compiler_options=NO_YNN_FUSIONS)
