"""A round's result does not depend on how many rounds the run will have.

The chunking of a round (shape classes, federated/shape_classes.py) sets the
order in which the server sums client updates. If the plan followed
``train.rounds``, round 2 of a 2-round run would differ in its last bits from
round 2 of a 4-round run, a run extended with ``--resume`` would not equal a
run of that length from the start, and every new ``--rounds`` would compile
new programs. On ml-100k (FedMF, seed 0) the 2-round and 6-round plans
differed; the synthetic tests did not show it (their plans happened to agree).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from feddmr_jax import config as config_lib
from feddmr_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer
from feddmr_jax.timing import CompileWatch
from feddmr_jax.train import build_experiment, train

from test_resume import _metrics


def _cfg(data_dir: Path, rounds: int):
    return config_lib.RunConfig.create(model="fedmf", dataset="ml-100k", rounds=rounds,
                                       data_dir=str(data_dir), checkpoint_every=0)


def test_the_plan_does_not_follow_train_rounds(shared_data_dir):
    shapes = {r: build_experiment(_cfg(shared_data_dir, r)).planner.chunk_shapes()
              for r in (2, 6, 100)}
    assert shapes[2] == shapes[6] == shapes[100]


def _state(cfg, out: Path):
    exp = build_experiment(cfg)
    with Checkpointer(out / CHECKPOINT_DIRNAME) as ckpt:
        step, state, _ = ckpt.restore(exp.algorithm.init(exp.keys["init"]))
    return step, state


@pytest.mark.slow
def test_extended_run_equals_fresh_run_bitwise_and_compiles_nothing_new(shared_data_dir,
                                                                        tmp_path, monkeypatch):
    # Every program goes into a fresh persistent cache (no minimum compile time), so
    # a config whose programs were all compiled before compiles nothing. JAX opens its
    # persistent cache once per process: a new folder takes effect only after reset_cache.
    # train() calls enable_compilation_cache, where $FEDDMR_COMPILE_CACHE wins over the
    # folder set here (and a switch restores the 0.5 s minimum): it must name this folder.
    # In-memory caches are cleared so that every program of the config is compiled (and
    # written) in the first two runs, none taken from an earlier test.
    saved = {name: getattr(jax.config, name) for name in
             ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    monkeypatch.setenv("FEDDMR_COMPILE_CACHE", str(tmp_path / "xla"))
    jax.clear_caches()
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:
        extended, fresh = tmp_path / "extended", tmp_path / "fresh"
        train(_cfg(shared_data_dir, 2), extended, progress=False)
        train(_cfg(shared_data_dir, 4), extended, progress=False, resume=True)
        watch = CompileWatch()
        train(_cfg(shared_data_dir, 4), fresh, progress=False)
        compiles = watch.compiled_anew
    finally:
        compilation_cache.reset_cache()         # the suite's cache again (tests/conftest.py)
        for name, value in saved.items():
            jax.config.update(name, value)
    assert (tmp_path / "xla").is_dir() and any((tmp_path / "xla").iterdir())
    assert _metrics(extended) == _metrics(fresh)     # losses and metrics, every bit
    for name in ("best_round", "val", "test"):
        assert (json.loads((extended / "summary.json").read_text())[name]
                == json.loads((fresh / "summary.json").read_text())[name])
    (step_a, a), (step_b, b) = _state(_cfg(shared_data_dir, 4), extended), \
        _state(_cfg(shared_data_dir, 4), fresh)
    assert step_a == step_b == 4
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert compiles == 0, f"the second invocation of the config compiled {compiles} programs"
