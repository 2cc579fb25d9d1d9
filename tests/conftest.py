"""Shared test fixtures.

Real datasets are read from ``$FEDDMR_DATA_DIR``, else from ``../shared/data``
next to the project; tests that need them are skipped when absent. Dataset
files are never copied into the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache():
    """JAX's persistent compilation cache, as the CLI uses it.

    Every test builds its engine afresh (new closures, so JAX's in-memory cache
    misses); identical programs then load from this cache instead of being
    compiled again, within a run and across runs on the same machine.
    ``FEDDMR_COMPILE_CACHE`` chooses the folder (``off`` disables it).
    """
    from feddmr_jax.timing import enable_compilation_cache

    enable_compilation_cache()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder holding the real test datasets; skips the test when absent."""
    env = os.environ.get("FEDDMR_DATA_DIR")
    folder = Path(env) if env else _DEFAULT_SHARED
    if not folder.is_dir():
        pytest.skip(f"real datasets not available: set FEDDMR_DATA_DIR (looked in {folder})")
    return folder


@pytest.fixture
def isolated_data_env(tmp_path, monkeypatch) -> Path:
    """No data dir, an empty cache dir under tmp_path, and downloads disabled.

    Returns:
      The cache folder.
    """
    cache = tmp_path / "cache"
    monkeypatch.delenv("FEDDMR_DATA_DIR", raising=False)
    monkeypatch.setenv("FEDDMR_CACHE_DIR", str(cache))
    monkeypatch.setenv("FEDDMR_OFFLINE", "1")
    return cache


@pytest.fixture
def write_file(tmp_path):
    """Returns ``write(relative_path, text) -> Path`` creating a file under tmp_path."""

    def write(rel: str, text: str) -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write
