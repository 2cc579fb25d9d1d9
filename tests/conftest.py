"""Shared test fixtures.

Real datasets are read from ``$FEDDMR_DATA_DIR``, else from ``../shared/data``
next to the project. Tests that need them are skipped when neither is there; a
``FEDDMR_DATA_DIR`` that is set but lacks the datasets is an error (a wrong path
in CI must not skip them quietly). Dataset files are never copied into the
repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# XLA's CPU backend compiles the suite's programs for compile speed, not run speed: about two
# thirds of the suite's time is XLA compiling small programs that run for milliseconds.
# - LLVM at optimization level 0 halves the compile time of the engine's chunk step
#   (test_engine.py on the idle 2-core CPU: 113 s -> 75 s);
# - XLA's loop-fusion code generator instead of its newer MLIR fusion emitters cuts it by
#   another third (test_sparse_equals_dense, both at level 0, loaded CPU, two runs each:
#   42-46 s -> 26 s; the kill-and-resume test's training run: compile 15.1 s -> 9.4 s).
# What the tests check is the computation (the HLO every code generator shares), and every
# float comparison has a bound derived from it (float_compare.py), not from one code
# generator. FEDDMR_TEST_XLA_OPT=default runs the suite with XLA's own settings.
# Set here, before any test runs JAX; subprocesses the tests start inherit them.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
if os.environ.get("FEDDMR_TEST_XLA_OPT", "").strip().lower() != "default":
    _given = os.environ.get("XLA_FLAGS", "")
    _added = [f for f in TEST_XLA_FLAGS if f.split("=")[0] not in _given]
    os.environ["XLA_FLAGS"] = " ".join([_given, *_added]).strip()

_DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The folders test_data_real.py reads under the data dir.
REAL_DATASETS = ("ml-100k", "lastfm-2k", "amazon-video")


def pytest_xdist_auto_num_workers(config) -> int:
    """Workers for ``-n auto`` (pyproject.toml): one per CPU this process may use, at most 4.

    Most of the suite is XLA compiling, which keeps ~1.2 cores busy in one process: 2 workers
    on the idle 2-core CPU take 182 s where one takes 267 s (8 engine-heavy files). Each
    worker holds its own compiled programs (1-3 GB), hence the cap.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:                  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache():
    """JAX's persistent compilation cache, as the CLI uses it.

    Every test builds its engine afresh (new closures, so JAX's in-memory cache
    misses); identical programs then load from this cache instead of being
    compiled again, within a run and across runs on the same machine.
    ``FEDDMR_COMPILE_CACHE`` chooses the folder (``off`` disables it). Every program is kept,
    however short its compile (the library keeps those over 0.5 s): the suite compiles the
    same small programs (evaluation, initial state) in many tests (4 engine-heavy files from a
    cold cache, loaded CPU: 290 s -> 265 s).
    """
    import jax

    from feddmr_jax.timing import enable_compilation_cache

    if enable_compilation_cache() is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder holding the real test datasets.

    Skips the test when ``FEDDMR_DATA_DIR`` is unset and ``../shared/data`` is
    absent; fails it (one line) when ``FEDDMR_DATA_DIR`` is set but is not a
    folder holding every dataset of ``REAL_DATASETS``.
    """
    env = os.environ.get("FEDDMR_DATA_DIR")
    if env:
        folder = Path(env)
        missing = [name for name in REAL_DATASETS if not (folder / name).is_dir()]
        if missing:
            pytest.fail(f"FEDDMR_DATA_DIR={env} is set but lacks {', '.join(missing)} "
                        "(unset it to skip the real-data tests)", pytrace=False)
        return folder
    if not _DEFAULT_SHARED.is_dir():
        pytest.skip("real datasets not available: set FEDDMR_DATA_DIR "
                    f"(looked in {_DEFAULT_SHARED})")
    return _DEFAULT_SHARED


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
