"""The attention block and FedDMR forward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax.models.attention import MemoryAttention
from feddmr_jax.models.base import Context, ModelParams
from feddmr_jax.models.feddmr import FedDMRConfig, build_feddmr, encode

import reference_round
from float_compare import assert_trees_close

CFG = FedDMRConfig(dim=8, heads=2, layers=2, history_len=5, norm="post")


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
    # 7 softmax weights, each within a few ulps of itself, summed: 16 ulps of 1.
    assert_trees_close(weights.sum(-1), np.ones(weights.shape[:-1]), ulps=16, what="sum")
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
    layer = MemoryAttention(d, h, 16)
    tokens = jax.random.normal(jax.random.key(1), (3, 2, d))             # a batch of 3 pairs
    memory = jax.random.normal(jax.random.key(2), (n, d))
    mask = jnp.array([[True, False, True, True], [True, True, True, True],
                      [False, False, False, True]])
    variables = _init_layer(layer, tokens, memory, mask)
    kv = layer.apply(variables, memory, method=MemoryAttention.project_memory)
    assert kv.keys.shape == kv.values.shape == (n, h, d // h)
    out, _ = layer.apply(variables, tokens, kv, mask, method=MemoryAttention.attend)
    for b in range(3):
        ref = _plain_attention(variables["params"], tokens[b], memory, mask[b], h)
        # Same math, other order: 8-term projections, a softmax over 6 slots, a 6-term
        # weighted sum and an 8-term output projection (~30 roundings): 2**6 ulps.
        assert_trees_close(out[b], ref, ulps=2**6, what=f"example {b}")


def _plain_attention(p, tokens, memory, mask, h):
    """Reference: softmax attention of one example's tokens over the concatenated keys."""
    d = tokens.shape[-1]
    wq, wk, wv = (p[name]["kernel"].reshape(d, d) for name in ("query", "key", "value"))
    wo = p["out"]["kernel"].reshape(d, d)
    keys = jnp.concatenate([tokens, memory])
    q = (tokens @ wq).reshape(2, h, d // h)
    k = (keys @ wk).reshape(-1, h, d // h)
    v = (keys @ wv).reshape(-1, h, d // h)
    logits = jnp.einsum("thd,shd->hts", q, k) / np.sqrt(d // h)
    full_mask = jnp.concatenate([jnp.array([True, True]), mask])
    logits = jnp.where(full_mask, logits, -jnp.inf)
    return jnp.einsum("hts,shd->thd", jax.nn.softmax(logits, -1), v).reshape(2, d) @ wo


def _layer_norm(x):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6)


def test_pre_norm_layer_matches_hand_written_forward():
    """norm="pre": x + MHA(LN(x) over [LN(x); LN(M)]), then + FFN(LN(x)); branches start at 0."""
    d, h, n = 8, 2, 4
    layer = MemoryAttention(d, h, 16, norm="pre")
    tokens = jax.random.normal(jax.random.key(1), (3, 2, d))
    memory = jax.random.normal(jax.random.key(2), (n, d))
    mask = jnp.array([[True, False, True, True], [True, True, True, True],
                      [False, False, False, True]])
    variables = _init_layer(layer, tokens, memory, mask)
    p = dict(variables["params"])
    assert not np.any(p["out"]["kernel"]) and not np.any(p["ffn"]["dense_1"]["kernel"])
    kv = layer.apply(variables, memory, method=MemoryAttention.project_memory)
    out0, _ = layer.apply(variables, tokens, kv, mask)
    np.testing.assert_array_equal(out0, tokens)                 # the identity at init
    keys = jax.random.split(jax.random.key(3), 2)
    p["out"] = {"kernel": jax.random.normal(keys[0], p["out"]["kernel"].shape)}
    p["ffn"] = {**p["ffn"], "dense_1": {**p["ffn"]["dense_1"], "kernel": jax.random.normal(
        keys[1], p["ffn"]["dense_1"]["kernel"].shape)}}
    kv = layer.apply({"params": p}, memory, method=MemoryAttention.project_memory)
    out, _ = layer.apply({"params": p}, tokens, kv, mask)
    f = p["ffn"]
    for b in range(3):
        x = tokens[b] + _plain_attention(p, _layer_norm(tokens[b]), _layer_norm(memory),
                                         mask[b], h)
        hidden = jnp.maximum(_layer_norm(x) @ f["dense_0"]["kernel"] + f["dense_0"]["bias"], 0)
        ref = x + hidden @ f["dense_1"]["kernel"] + f["dense_1"]["bias"]
        # Three layer norms, the attention above and a 16-wide FFN (~100 roundings of
        # values as large as the output): 2**8 ulps.
        assert_trees_close(out[b], ref, ulps=2**8, what=f"example {b}")


def _init_layer(layer, tokens, memory, mask):
    def init(module, tokens, memory, mask):
        return module(tokens, module.project_memory(memory), mask)

    return layer.init(jax.random.key(0), tokens, memory, mask, method=init)


def test_one_head_attention_weights_hand_computed():
    """d = 2, one head, identity projections: weights are softmax(q . k / sqrt(2)) by hand."""
    d = 2
    layer = MemoryAttention(d, 1, 4)
    tokens = jnp.array([[[1.0, 0.0], [0.0, 2.0]]])                     # one pair
    memory = jnp.array([[1.0, 1.0], [2.0, 0.0], [-1.0, 3.0]])
    mask = jnp.array([[True, False, True]])
    variables = _init_layer(layer, tokens, memory, mask)
    eye = np.eye(d, dtype=np.float32)
    p = dict(variables["params"])
    for name in ("query", "key", "value"):
        p[name] = {"kernel": jnp.asarray(eye.reshape(d, 1, d))}
    p["out"] = {"kernel": jnp.asarray(eye.reshape(1, d, d))}
    kv = layer.apply({"params": p}, memory, method=MemoryAttention.project_memory)
    out, weights = layer.apply({"params": p}, tokens, kv, mask, method=MemoryAttention.attend)
    keys = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [-1.0, 3.0]])
    valid = np.array([1.0, 1.0, 1.0, 0.0, 1.0])
    for t, q in enumerate(([1.0, 0.0], [0.0, 2.0])):
        e = np.exp(keys @ np.array(q) / np.sqrt(2.0)) * valid
        expected = e / e.sum()
        # float32 softmax of 5 logits (|q.k| < 3: exp within a few ulps) against float64:
        # each weight within ~8 ulps of itself, so of the largest weight; 16 ulps.
        assert_trees_close(weights[0, 0, t], expected, ulps=16, what=f"weights {t}")
        # ... times keys (|k| <= 3), a 5-term sum: 32 ulps of the largest key.
        assert_trees_close(out[0, t], expected @ keys, ulps=32, scale=np.abs(keys).max(),
                           what=f"output {t}")
    assert weights[0, 0, :, 3].tolist() == [0.0, 0.0]                  # masked slot: exactly 0


def _ref_params(params):
    return {"user": params.private.dense["user"], "items": params.shared.tables["items"],
            "dense": params.shared.dense}


@pytest.mark.parametrize("history_len", [0, 5])
def test_feddmr_logits_match_hand_written_forward(history_len):
    """Two layers, with and without memory, == tests/reference_round.py's forward pass."""
    cfg = FedDMRConfig(dim=8, heads=2, layers=2, history_len=history_len, norm="post")
    model, params = _params(cfg)
    history = jnp.array([3, 4, 5, 0, 0][:history_len], jnp.int32)
    hmask = jnp.asarray(np.array([True, True, True, False, False])[:history_len])
    items = jnp.array([0, 4, 7, 3])
    logits = model.apply(params, items, Context(history, hmask))
    expected = reference_round.feddmr_logits(_ref_params(params), items, history, hmask,
                                             cfg.heads)
    # Two post-norm layers (attention, FFN, 2 norms each) and the head MLP, written
    # another way: ~200 roundings of values of the logits' size: 2**8 ulps.
    assert_trees_close(logits, expected, ulps=2**8, what="logits")


def test_no_attention_ablation_is_head_on_raw_embeddings():
    cfg = FedDMRConfig(dim=8, heads=2, attention=False)
    model, params = _params(cfg)
    assert model.history_len == 0
    items = np.array([0, 5, 5, 11])
    logits = model.apply(params, jnp.asarray(items),
                         Context(jnp.zeros(0, jnp.int32), jnp.zeros(0, bool)))
    u = np.asarray(params.private.dense["user"])
    e = np.asarray(params.shared.tables["items"])[items]
    head = jax.tree.map(np.asarray, params.shared.dense["head"])
    f = np.concatenate([np.broadcast_to(u, e.shape), e, u * e], -1)
    hidden = np.maximum(f @ head["dense_0"]["kernel"] + head["dense_0"]["bias"], 0.0)
    expected = (hidden @ head["dense_1"]["kernel"] + head["dense_1"]["bias"])[:, 0]
    # The head MLP (a 24-term and an 8-term sum) in float32 against numpy: 2**6 ulps.
    assert_trees_close(logits, expected, ulps=2**6, what="logits")
    assert set(params.shared.dense) == {"head"}
    assert set(_params(FedDMRConfig(dim=8, heads=2, layers=0))[1].shared.dense) == {"head"}


def test_pre_norm_feddmr_starts_as_its_no_attention_ablation():
    """At init the pre-norm layers are the identity: logits == head on the raw embeddings,
    and only the zero-initialized branch outputs receive a gradient on the first step."""
    cfg = FedDMRConfig(dim=8, heads=2, layers=2, history_len=5, norm="pre")
    model, params = _params(cfg)
    plain_model, plain = _params(FedDMRConfig(dim=8, heads=2, attention=False))
    same = ModelParams(plain.private._replace(dense={"user": params.private.dense["user"]}),
                       plain.shared._replace(tables=params.shared.tables,
                                             dense={"head": params.shared.dense["head"]}))
    context = Context(jnp.array([3, 4, 5, 0, 0]), jnp.array([True, True, True, False, False]))
    items = jnp.array([0, 4, 7, 3])
    np.testing.assert_array_equal(model.apply(params, items, context),
                                  plain_model.apply(same, items, context))
    grad = jax.grad(lambda p: model.apply(p, items, context).sum())(params)
    layer = grad.shared.dense["layer_0"]
    assert np.any(layer["out"]["kernel"]) and np.any(layer["ffn"]["dense_1"]["kernel"])
    assert not np.any(layer["query"]["kernel"])


def test_private_and_shared_split_is_explicit():
    _, params = _params()
    assert set(params.private.dense) == {"user"} and params.private.tables == {}
    assert set(params.shared.tables) == {"items"}
    assert set(params.shared.dense) == {"layer_0", "layer_1", "head"}


def test_heads_must_divide_dim():
    from feddmr_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="heads"):
        build_feddmr(FedDMRConfig(dim=8, heads=3), 10)
    with pytest.raises(ConfigError, match="model.norm"):
        build_feddmr(FedDMRConfig(dim=8, heads=2, norm="sandwich"), 10)
