"""Give the host's freed heap memory back to the operating system.

NumPy and XLA free their temporaries with ``free``; glibc keeps much of that
memory mapped in its heap for reuse, so a process's resident memory after a
build full of temporaries stays near the build's peak although little of it
is live (10^6 synthetic clients: 244 MB held after ``build_experiment``, the
run's later allocations not reusing it; benchmarks/HISTORY.md, session 6).
:func:`release_free_memory` asks glibc to return it (``malloc_trim(0)``, a few
milliseconds); the training loop calls it once after building the experiment
and once after the initial state. Elsewhere (another C library, another OS)
it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_memory"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):   # not glibc (musl, macOS, Windows)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Returns the C heap's free memory to the OS; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
