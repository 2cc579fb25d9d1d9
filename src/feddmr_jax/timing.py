"""Compile-time accounting through ``jax.monitoring`` events.

One process-wide listener sums the durations of JAX's compile events (tracing,
lowering, backend compilation). :class:`CompileWatch` reads the totals before and
after a piece of work: how many backend compilations it triggered and how long
compiling took. Used for ``compile_seconds`` in ``summary.json`` and for the test
that nothing is recompiled after the first round.

JAX reports a backend compilation also when the program came from the
persistent cache (the event wraps the cache lookup); :attr:`CompileWatch.compiled_anew`
counts the lookups that missed (the programs actually compiled) while the cache is on.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import jax

_BACKEND = "/jax/core/compile/backend_compile_duration"
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    _BACKEND,
)
_CACHE_REQUESTS = "/jax/compilation_cache/compile_requests_use_cache"
_CACHE_HITS = "/jax/compilation_cache/cache_hits"
_lock = threading.Lock()
_totals = {"seconds": 0.0, "backend_compiles": 0, _CACHE_REQUESTS: 0, _CACHE_HITS: 0}
_registered = False


def _listener(event: str, duration: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        with _lock:
            _totals["seconds"] += duration
            if event == _BACKEND:
                _totals["backend_compiles"] += 1


def _event_listener(event: str, **kwargs) -> None:
    if event in (_CACHE_REQUESTS, _CACHE_HITS):
        with _lock:
            _totals[event] += 1


def _ensure_registered() -> None:
    global _registered
    with _lock:
        if not _registered:
            jax.monitoring.register_event_duration_secs_listener(_listener)
            jax.monitoring.register_event_listener(_event_listener)
            _registered = True


class CompileWatch:
    """Counts compilations and compile seconds since construction (or ``reset``)."""

    def __init__(self):
        _ensure_registered()
        self.reset()

    def reset(self) -> None:
        with _lock:
            self._start = dict(_totals)

    @property
    def seconds(self) -> float:
        with _lock:
            return _totals["seconds"] - self._start["seconds"]

    @property
    def compiles(self) -> int:
        """Backend compilations, persistent-cache hits included."""
        with _lock:
            return _totals["backend_compiles"] - self._start["backend_compiles"]

    @property
    def compiled_anew(self) -> int:
        """Programs looked up in the persistent compilation cache and not found there
        (compiled; 0 while the cache is off)."""
        with _lock:
            return sum(sign * (_totals[e] - self._start[e])
                       for sign, e in ((1, _CACHE_REQUESTS), (-1, _CACHE_HITS)))


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache (compiled programs reused across runs).

    The folder is ``path``, else ``$FEDDMR_COMPILE_CACHE``, else a folder the
    caller already gave JAX (``jax_compilation_cache_dir``), else
    ``~/.cache/feddmr_jax/xla``; ``FEDDMR_COMPILE_CACHE=off`` disables it.
    :func:`feddmr_jax.train.train` and the CLI call this.

    Returns:
      The cache folder, or None when disabled.
    """
    value = path if path is not None else os.environ.get("FEDDMR_COMPILE_CACHE")
    if value is not None and str(value).lower() in ("0", "off", "none", ""):
        return None
    if value is None and jax.config.jax_compilation_cache_dir:
        value = jax.config.jax_compilation_cache_dir       # the caller's own choice wins
    folder = Path(value) if value is not None else Path.home() / ".cache" / "feddmr_jax" / "xla"
    if str(folder) == jax.config.jax_compilation_cache_dir:
        return folder                                       # already on (idempotent)
    folder.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir:
        # JAX opens its cache once per process; another folder takes effect after a reset.
        from jax.experimental.compilation_cache import compilation_cache
        compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
