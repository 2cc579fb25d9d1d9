"""host_memory.release_free_memory: glibc's malloc_trim where there is one, a no-op elsewhere."""

from __future__ import annotations

import ctypes
import platform

import numpy as np
import pytest

from feddmr_jax import host_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_returns_true_with_glibc_and_keeps_live_arrays():
    live = np.arange(1 << 20)
    for _ in range(20):                          # freed mid-size temporaries
        np.ones(1 << 18) + 1
    assert host_memory.release_free_memory() is True
    assert live[-1] == (1 << 20) - 1 and live.sum() == (1 << 20) * ((1 << 20) - 1) // 2


def test_release_is_a_no_op_without_malloc_trim(monkeypatch):
    host_memory._malloc_trim.cache_clear()

    def no_libc(*args, **kwargs):
        raise OSError("no C library here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    try:
        assert host_memory.release_free_memory() is False
    finally:
        host_memory._malloc_trim.cache_clear()
