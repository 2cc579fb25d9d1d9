"""The attention block and FedDMR forward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax.models.attention import (init_attention_layer, multi_head_attention,
                                         project_memory)
from feddmr_jax.models.base import Context, ModelParams
from feddmr_jax.models.feddmr import FedDMRConfig, build_feddmr, encode

CFG = FedDMRConfig(dim=8, heads=2, layers=2, history_len=5)


def _params(cfg=CFG, num_items=12):
    model = build_feddmr(cfg, num_items)
    return model, ModelParams(model.init_private(jax.random.key(1)),
                              model.init_shared(jax.random.key(0)))


def test_padded_slots_and_target_item_get_exactly_zero_weight():
    _, params = _params()
    history = jnp.array([3, 4, 5, 0, 0])
    context = Context(history, jnp.array([True, True, True, False, False]))
    items = jnp.array([4, 7, 3])
    _, weights = encode(CFG, params, items, context)        # [B, L, H, 2, 2 + n]
    assert weights.shape == (3, 2, 2, 2, 7)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    mem = weights[..., 2:]
    assert np.all(mem[..., 3:] == 0.0)                       # padding slots
    assert np.all(mem[0, ..., 1] == 0.0)                     # item 4 is history[1]
    assert np.all(mem[2, ..., 0] == 0.0)                     # item 3 is history[0]
    assert np.all(mem[1, ..., :3] > 0.0)                     # item 7 sees all three
    assert np.all(mem[0, ..., [0, 2]] > 0.0)


def test_masked_memory_does_not_change_the_output():
    """A padded slot's content is irrelevant: changing it leaves logits unchanged."""
    model, params = _params()
    mask = jnp.array([True, True, False, False, False])
    a = model.apply(params, jnp.array([1, 2]), Context(jnp.array([3, 4, 5, 6, 7]), mask))
    b = model.apply(params, jnp.array([1, 2]), Context(jnp.array([3, 4, 9, 10, 11]), mask))
    np.testing.assert_array_equal(a, b)


def test_shared_memory_projection_equals_per_example_attention():
    """Projecting the memory once equals attending over [tokens ; memory] directly."""
    d, h, n = 8, 2, 4
    layer = init_attention_layer(jax.random.key(0), d, 16)
    tokens = jax.random.normal(jax.random.key(1), (2, d))
    memory = jax.random.normal(jax.random.key(2), (n, d))
    mask = jnp.array([True, False, True, True])
    out, _ = multi_head_attention(layer, tokens, project_memory(layer, memory, h), mask, h)
    # Reference: plain softmax attention over the concatenated keys.
    keys = jnp.concatenate([tokens, memory])
    q = (tokens @ layer["wq"]).reshape(2, h, d // h)
    k = (keys @ layer["wk"]).reshape(-1, h, d // h)
    v = (keys @ layer["wv"]).reshape(-1, h, d // h)
    logits = jnp.einsum("thd,shd->hts", q, k) / np.sqrt(d // h)
    full_mask = jnp.concatenate([jnp.array([True, True]), mask])
    logits = jnp.where(full_mask, logits, -jnp.inf)
    ref = jnp.einsum("hts,shd->thd", jax.nn.softmax(logits, -1), v).reshape(2, d) @ layer["wo"]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_history_len_zero_and_no_attention_ablations():
    for cfg in (FedDMRConfig(dim=8, heads=2, history_len=0),
                FedDMRConfig(dim=8, heads=2, attention=False)):
        model, params = _params(cfg)
        n = model.history_len
        logits = model.apply(params, jnp.array([0, 5]),
                             Context(jnp.zeros(n, jnp.int32), jnp.zeros(n, bool)))
        assert logits.shape == (2,) and np.all(np.isfinite(logits))
    assert "layers" in _params(FedDMRConfig(dim=8, heads=2, attention=False))[1].shared.dense
    assert _params(FedDMRConfig(dim=8, heads=2, attention=False))[1].shared.dense["layers"] == []


def test_private_and_shared_split_is_explicit():
    _, params = _params()
    assert set(params.private.dense) == {"user"} and params.private.tables == {}
    assert set(params.shared.tables) == {"items"}
    assert set(params.shared.dense) == {"layers", "head"}


def test_heads_must_divide_dim():
    from feddmr_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="heads"):
        build_feddmr(FedDMRConfig(dim=8, heads=3), 10)
