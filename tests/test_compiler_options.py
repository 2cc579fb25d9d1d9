"""Per-method XLA compiler options (feddmr_jax/compiler_options.py): who gets them, and
that they change speed only, not results."""

from __future__ import annotations

import jax
import pytest

from engine_helpers import adam_reach, copy_tree, max_abs_diff, tiny_config
from float_compare import ADAM_ULPS, assert_trees_close, bound

from feddmr_jax import compiler_options
from feddmr_jax.compiler_options import NO_YNN_FUSIONS, OPT_OUT, for_backend
from feddmr_jax.methods import get_method
from feddmr_jax.train import build_experiment, run_round


def test_feddmr_asks_for_the_options_and_the_baselines_do_not():
    assert dict(get_method("feddmr").cpu_compiler_options) == dict(NO_YNN_FUSIONS)
    # PFedRec's round was slower without YNN fusions (benchmarks/RESULTS.md): XLA's defaults.
    for name in ("pfedrec", "fedmf", "fedncf", "fedrap"):
        assert not get_method(name).cpu_compiler_options, name


def test_for_backend_resolves_on_cpu_and_honours_the_opt_out(monkeypatch):
    assert jax.default_backend() == "cpu"
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert for_backend(NO_YNN_FUSIONS) == dict(NO_YNN_FUSIONS)
    assert for_backend({}) is None and for_backend(None) is None
    for value in ("off", "0", "False"):
        monkeypatch.setenv(OPT_OUT, value)
        assert for_backend(NO_YNN_FUSIONS) is None


def test_an_option_this_xla_does_not_know_falls_back_to_the_defaults(monkeypatch):
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert for_backend({"xla_cpu_no_such_option_in_any_xla": "1"}) is None
    # ... and the probe is cached, so it does not recompile for every experiment.
    assert compiler_options._accepted.cache_info().currsize >= 1


@pytest.mark.parametrize("model", ["feddmr"])
def test_a_round_with_the_options_equals_one_without(monkeypatch, model):
    """Same round, same inputs: the options change the fusion of the program, so the
    results agree to float rounding (not bit for bit)."""
    cfg = tiny_config(model=model)
    outcomes = {}
    for setting in ("on", "off"):
        if setting == "off":
            monkeypatch.setenv(OPT_OUT, "off")
        else:
            monkeypatch.delenv(OPT_OUT, raising=False)
        exp = build_experiment(cfg)
        assert exp.algorithm is not None
        state = exp.algorithm.init(exp.keys["init"])
        state, stats = run_round(exp, state, 1)
        outcomes[setting] = (copy_tree(state.shared), copy_tree(state.private_store),
                             stats.train_loss)
    on, off = outcomes["on"], outcomes["off"]
    # One round of Adam: another fusion rounds a gradient differently, and Adam moves an
    # element by lr x that relative difference per step (float_compare.ADAM_ULPS).
    reach = adam_reach(exp, rounds=1)
    assert_trees_close(on[0], off[0], ulps=ADAM_ULPS, scale=reach, what="shared")
    assert_trees_close(on[1], off[1], ulps=ADAM_ULPS, scale=reach, what="private")
    # The loss: a mean of forward passes (~100 roundings per logit: 2**8 ulps) at params
    # that differ only where Adam amplified a near-zero gradient.
    assert_trees_close(on[2], off[2], ulps=2**8, what="train loss")
    # the round moved the params at all, and far beyond the bound (one Adam step is lr)
    init = build_experiment(cfg)
    start = copy_tree(init.algorithm.init(init.keys["init"]).shared)
    assert max_abs_diff(on[0], start) > 100 * bound(ulps=ADAM_ULPS, scale=reach)
