"""The Flax modules compute what the pure-jnp models did (tests/reference_models.py).

For each model: initialize the frozen reference, copy its parameters into the
new module's variables (the only place this test knows both layouts), and
compare logits on a fixed batch of one client whose memory has padding slots
and holds some of the batch's target items.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_models as ref
from float_compare import assert_trees_close, assert_trees_equal
from feddmr_jax.models import (Context, FedDMRConfig, FedMFConfig, FedNCFConfig, FedRAPConfig,
                               Leaves, ModelParams, PFedRecConfig, build_feddmr, build_fedmf,
                               build_fedncf, build_fedrap, build_pfedrec)
from feddmr_jax.models.feddmr import encode

NUM_ITEMS = 12
ITEMS = jnp.array([4, 7, 3, 0, 11, 4], jnp.int32)          # 4 and 3 are in the memory
HISTORY = jnp.array([3, 4, 5, 9, 0, 0], jnp.int32)
HISTORY_MASK = jnp.array([True, True, True, True, False, False])


def _mlp(old: dict) -> dict:
    """``{w0, b0, w1, b1, ...}`` -> ``{dense_0: {kernel, bias}, ...}``."""
    return {f"dense_{i}": {"kernel": old[f"w{i}"], "bias": old[f"b{i}"]}
            for i in range(len(old) // 2)}


def _head(old: dict) -> dict:
    return {"kernel": old["w"][:, None], "bias": old["b"][None]}


def _attention_layer(old: dict, heads: int) -> dict:
    d = old["wq"].shape[0]
    split = lambda w: w.reshape(d, heads, d // heads)  # noqa: E731
    return {"query": {"kernel": split(old["wq"])}, "key": {"kernel": split(old["wk"])},
            "value": {"kernel": split(old["wv"])},
            "out": {"kernel": old["wo"].reshape(heads, d // heads, d)},
            "norm_attention": {"scale": old["ln1_scale"], "bias": old["ln1_bias"]},
            "ffn": _mlp(old["ffn"]),
            "norm_ffn": {"scale": old["ln2_scale"], "bias": old["ln2_bias"]}}


def port_feddmr(cfg, private, shared):
    dense = {f"layer_{l}": _attention_layer(layer, cfg.heads)
             for l, layer in enumerate(shared[1]["layers"])}
    dense["head"] = _mlp(shared[1]["head"])
    return ModelParams(Leaves({}, dict(private[1])), Leaves(dict(shared[0]), dense))


def port_fedmf(cfg, private, shared):
    return ModelParams(Leaves({}, dict(private[1])), Leaves(dict(shared[0]), {}))


def port_fedncf(cfg, private, shared):
    dense = {"mlp": _mlp(shared[1]["mlp"]),
             "out": {"kernel": shared[1]["out"]["w0"], "bias": shared[1]["out"]["b0"]}}
    return ModelParams(Leaves({}, dict(private[1])), Leaves(dict(shared[0]), dense))


def port_pfedrec(cfg, private, shared):
    return ModelParams(Leaves({}, {"user_head": _head(private[1]["head"])}),
                       Leaves(dict(shared[0]), {}))


def port_fedrap(cfg, private, shared):
    return ModelParams(Leaves(dict(private[0]), {"user_head": _head(private[1]["head"])}),
                       Leaves(dict(shared[0]), {}))


CASES = {
    "feddmr": (FedDMRConfig(dim=8, heads=2, layers=2, history_len=6, norm="post"), build_feddmr, port_feddmr),
    "feddmr_dropout": (FedDMRConfig(dim=8, heads=4, layers=2, history_len=6, ffn_dim=12,
                                    dropout=0.3, norm="post"), build_feddmr, port_feddmr),
    "feddmr_one_layer": (FedDMRConfig(dim=8, heads=2, layers=1, history_len=6, norm="post"),
                         build_feddmr, port_feddmr),
    "feddmr_no_history": (FedDMRConfig(dim=8, heads=2, history_len=0, norm="post"), build_feddmr,
                          port_feddmr),
    "feddmr_no_attention": (FedDMRConfig(dim=8, heads=2, attention=False), build_feddmr,
                            port_feddmr),
    "fedmf": (FedMFConfig(dim=4), build_fedmf, port_fedmf),
    "fedncf": (FedNCFConfig(dim=4), build_fedncf, port_fedncf),
    "fedncf_hidden": (FedNCFConfig(dim=4, mlp_hidden=(6, 5, 3)), build_fedncf, port_fedncf),
    "pfedrec": (PFedRecConfig(dim=4), build_pfedrec, port_pfedrec),
    "fedrap": (FedRAPConfig(dim=4), build_fedrap, port_fedrap),
}


def _pair(name):
    cfg, build, port = CASES[name]
    old_shared, old_private, old_apply = ref.BUILDERS[build.__name__[len("build_"):]](
        cfg, NUM_ITEMS)
    shared, private = old_shared(jax.random.key(0)), old_private(jax.random.key(1))
    model = build(cfg, NUM_ITEMS)
    return cfg, model, port(cfg, private, shared), (private, shared), old_apply


def _context(model):
    n = model.history_len
    return Context(HISTORY[:n], HISTORY_MASK[:n])


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_with_copied_params_gives_the_reference_logits(name):
    cfg, model, params, (private, shared), old_apply = _pair(name)
    context = _context(model)
    # Same parameter structure as the module's own init (shapes, names, halves).
    init = ModelParams(model.init_private(jax.random.key(1)), model.init_shared(jax.random.key(0)))
    assert jax.tree.structure(params) == jax.tree.structure(init)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, init)
    new = jax.jit(model.apply)(params, ITEMS, context)
    old = jax.jit(old_apply)(private, shared, ITEMS, context.history, context.history_mask)
    # The same math written twice: up to two attention layers (8-term projections,
    # softmax, 2 norms, an FFN each) and the head, ~200 roundings: 2**8 ulps of the logits.
    assert_trees_close(new, old, ulps=2**8, what=name)


@pytest.mark.parametrize("name", ["feddmr", "feddmr_dropout", "fedmf", "fedrap"])
def test_local_table_rows_give_the_same_logits(name):
    """Sparse mode: a table of only the used rows, ids re-indexed, scores the same."""
    cfg, model, params, _, _ = _pair(name)
    context = _context(model)
    used = np.unique(np.concatenate([np.asarray(ITEMS), np.asarray(context.history)]))
    local = {int(g): i for i, g in enumerate(used)}
    relabel = lambda ids: jnp.array([local[int(i)] for i in ids], jnp.int32)  # noqa: E731
    take = lambda half: half._replace(  # noqa: E731
        tables={k: t[jnp.asarray(used)] for k, t in half.tables.items()})
    local_params = ModelParams(take(params.private), take(params.shared))
    apply = jax.jit(model.apply)
    full = apply(params, ITEMS, context)
    rows = apply(local_params, relabel(ITEMS),
                       Context(relabel(context.history), context.history_mask))
    # Gathering rows copies them exactly; the forward pass on them has the same shapes
    # and ops: bit for bit.
    assert_trees_equal(rows, full, what=name)


def test_attention_weights_match_the_reference():
    cfg, model, params, (private, shared), old_apply = _pair("feddmr")
    context = _context(model)
    _, new = jax.jit(lambda p: encode(cfg, p, ITEMS, context))(params)
    _, old = jax.jit(old_apply.encode)(private, shared, ITEMS, context.history,
                                       context.history_mask)
    assert new.shape == old.shape == (6, 2, 2, 2, 2 + 6)
    # Softmax weights (<= 1) of two layers written twice (~200 roundings): 2**8 ulps of 1.
    assert_trees_close(new, old, ulps=2**8, scale=1.0, what="weights")


def test_dropout_key_changes_the_logits_and_none_is_deterministic():
    cfg, model, params, (private, shared), old_apply = _pair("feddmr_dropout")
    context = _context(model)
    apply = jax.jit(lambda p, key: model.apply(p, ITEMS, context, key=key))
    a, b = apply(params, jax.random.key(3)), apply(params, jax.random.key(4))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, apply(params, jax.random.key(3)))
    old = jax.jit(old_apply)(private, shared, ITEMS, context.history, context.history_mask)
    # No key, no dropout: the reference's logits (2**8 ulps, as above).
    assert_trees_close(jax.jit(model.apply)(params, ITEMS, context), old, ulps=2**8,
                       what="no dropout")
