"""XLA compiler options of a method's chunk step (``jax.jit(..., compiler_options=...)``).

A method may ask for XLA options on the CPU backend (``Method.cpu_compiler_options``);
they apply to the compilation of its chunk step alone (federated/parallel.py), not to
the process, so methods with different needs can share a process.

FedDMR asks for :data:`NO_YNN_FUSIONS`: XLA's CPU backend (jaxlib 0.10) hands
dot+elementwise fusions to YNNPACK/XNNPACK by default; for FedDMR's chunk step (many
small ``[.., 32] x [32, ..]`` products vmapped over clients, and their elementwise
neighbours) XLA's own emitters are faster, while PFedRec's round is slower without
them (``benchmarks/bench_xla_flags.py``, side by side, figures in benchmarks/RESULTS.md;
the session's text in benchmarks/HISTORY.md, session 5).
Turning an *experimental* fusion off returns XLA to its long-standing code path;
results agree to float rounding (tests/test_compiler_options.py).

:func:`for_backend` decides what a compilation actually gets: nothing when

* ``FEDDMR_COMPILER_OPTIONS=off`` (also ``0``/``no``/``false``): XLA's defaults, or
* the default backend is not the CPU (the options are CPU options), or
* this jaxlib's XLA does not know an option (probed once by compiling a scalar
  function with it: a newer jaxlib that renames or drops a flag gets XLA's defaults
  instead of an error).

The persistent compilation cache keys on the compile options, so programs
compiled with and without them never mix.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping

import jax
import jax.numpy as jnp

OPT_OUT = "FEDDMR_COMPILER_OPTIONS"
NO_YNN_FUSIONS: Mapping[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_cpu_experimental_xnn_fusion_type": "",
}


def opted_out() -> bool:
    """True when ``$FEDDMR_COMPILER_OPTIONS`` turns the methods' options off."""
    return os.environ.get(OPT_OUT, "").strip().lower() in ("off", "0", "no", "false")


@functools.lru_cache(maxsize=None)
def _accepted(options: tuple[tuple[str, str], ...]) -> bool:
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(options))(jnp.zeros((), jnp.float32))
    except Exception:  # XLA: INVALID_ARGUMENT "No such compile option"  # noqa: BLE001
        return False
    return True


def for_backend(cpu_options: Mapping[str, str] | None) -> dict[str, str] | None:
    """The options a method's chunk step compiles with on this machine (see module doc).

    Args:
      cpu_options: the method's CPU options (``Method.cpu_compiler_options``).

    Returns:
      A dict for ``jax.jit(compiler_options=...)``, or None (XLA's defaults).
    """
    if not cpu_options or opted_out() or jax.default_backend() != "cpu":
        return None
    items = tuple(sorted(cpu_options.items()))
    return dict(items) if _accepted(items) else None
