"""Frozen reference: the models as they were before the Flax port (pure jnp).

Copied from ``src/feddmr_jax/models/`` at b94b72b (attention.py, feddmr.py,
fedmf.py, fedncf.py, pfedrec.py, fedrap.py and the helpers of base.py), with
only the parts that compute logits. ``tests/test_flax_port.py`` copies these
parameters into the Flax modules and checks that the logits agree. Do not
"fix" this file: it is the independent computation the port is pinned to.

Each ``build_*`` takes the model's config (only its fields are read) and the
catalogue size and returns ``(init_shared, init_private, apply)`` where the
halves are ``(tables, dense)`` dicts and ``apply(private, shared, items,
history, history_mask) -> logits [B]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_MASKED = -1e30


# ---------------------------------------------------------------- base.py helpers

def glorot(key, shape):
    return jax.nn.initializers.glorot_uniform()(key, shape, jnp.float32)


def layer_norm(x, scale, bias, eps=1e-6):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def init_mlp(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    params = {}
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        params[f"w{i}"] = glorot(k, (n_in, n_out))
        params[f"b{i}"] = jnp.zeros((n_out,), jnp.float32)
    return params


def apply_mlp(params, x):
    n = len(params) // 2
    for i in range(n):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


# ---------------------------------------------------------------- attention.py

class MemoryKV(NamedTuple):
    keys: jax.Array
    values: jax.Array


def init_attention_layer(key, dim, ffn_dim):
    kq, kk, kv, ko, kf = jax.random.split(key, 5)
    return {
        "wq": glorot(kq, (dim, dim)), "wk": glorot(kk, (dim, dim)),
        "wv": glorot(kv, (dim, dim)), "wo": glorot(ko, (dim, dim)),
        "ln1_scale": jnp.ones((dim,), jnp.float32), "ln1_bias": jnp.zeros((dim,), jnp.float32),
        "ffn": init_mlp(kf, (dim, ffn_dim, dim)),
        "ln2_scale": jnp.ones((dim,), jnp.float32), "ln2_bias": jnp.zeros((dim,), jnp.float32),
    }


def _split_heads(x, heads):
    return x.reshape(x.shape[:-1] + (heads, x.shape[-1] // heads))


def project_memory(layer, memory, heads):
    return MemoryKV(keys=_split_heads(memory @ layer["wk"], heads),
                    values=_split_heads(memory @ layer["wv"], heads))


def multi_head_attention(layer, tokens, memory, memory_mask, heads):
    t, d = tokens.shape
    q = _split_heads(tokens @ layer["wq"], heads)
    k_tok = _split_heads(tokens @ layer["wk"], heads)
    v_tok = _split_heads(tokens @ layer["wv"], heads)
    scale = 1.0 / jnp.sqrt(jnp.asarray(d // heads, jnp.float32))
    logits_tok = jnp.einsum("thd,shd->hts", q, k_tok) * scale
    logits_mem = jnp.einsum("thd,nhd->htn", q, memory.keys) * scale
    logits_mem = jnp.where(memory_mask[None, None, :], logits_mem, _MASKED)
    weights = jax.nn.softmax(jnp.concatenate([logits_tok, logits_mem], -1), -1)
    w_tok, w_mem = weights[..., :t], weights[..., t:]
    out = (jnp.einsum("hts,shd->thd", w_tok, v_tok)
           + jnp.einsum("htn,nhd->thd", w_mem, memory.values))
    return out.reshape(t, d) @ layer["wo"], weights


def attention_layer(layer, tokens, memory, memory_mask, heads):
    """One layer without dropout (the reference is compared deterministically)."""
    att, weights = multi_head_attention(layer, tokens, memory, memory_mask, heads)
    x = layer_norm(tokens + att, layer["ln1_scale"], layer["ln1_bias"])
    x = layer_norm(x + apply_mlp(layer["ffn"], x), layer["ln2_scale"], layer["ln2_bias"])
    return x, weights


# ---------------------------------------------------------------- models

def build_feddmr(cfg, num_items):
    d = cfg.dim
    ffn = cfg.ffn_dim or 2 * d
    uses_attention = cfg.attention and cfg.layers > 0

    def init_shared(key):
        k_items, k_layers, k_head = jax.random.split(key, 3)
        layers = ([init_attention_layer(k, d, ffn) for k in jax.random.split(k_layers, cfg.layers)]
                  if uses_attention else [])
        return ({"items": cfg.init_scale * jax.random.normal(k_items, (num_items, d))},
                {"layers": layers, "head": init_mlp(k_head, (3 * d, d, 1))})

    def init_private(key):
        return {}, {"user": cfg.init_scale * jax.random.normal(key, (d,))}

    def encode(private, shared, items, history, history_mask):
        table, layers = shared[0]["items"], shared[1]["layers"]
        user = private[1]["user"]
        tokens = jnp.stack([jnp.broadcast_to(user, (items.shape[0], d)), table[items]], 1)
        if not uses_attention:
            return tokens, jnp.zeros((items.shape[0], 0), jnp.float32)
        memory = table[history]
        memory_kv = [project_memory(layer, memory, cfg.heads) for layer in layers]

        def one_example(x, item):
            mask = history_mask & (history != item)
            all_weights = []
            for layer, kv in zip(layers, memory_kv):
                x, w = attention_layer(layer, x, kv, mask, cfg.heads)
                all_weights.append(w)
            return x, jnp.stack(all_weights)

        return jax.vmap(one_example)(tokens, items)

    def apply(private, shared, items, history, history_mask):
        tokens, _ = encode(private, shared, items, history, history_mask)
        t_u, t_i = tokens[:, 0], tokens[:, 1]
        features = jnp.concatenate([t_u, t_i, t_u * t_i], axis=-1)
        return apply_mlp(shared[1]["head"], features)[:, 0]

    apply.encode = encode
    return init_shared, init_private, apply


def build_fedmf(cfg, num_items):
    d = cfg.dim

    def init_shared(key):
        return {"items": cfg.init_scale * jax.random.normal(key, (num_items, d))}, {}

    def init_private(key):
        return {}, {"user": cfg.init_scale * jax.random.normal(key, (d,))}

    def apply(private, shared, items, history, history_mask):
        return jnp.dot(shared[0]["items"][items], private[1]["user"])

    return init_shared, init_private, apply


def build_fedncf(cfg, num_items):
    d = cfg.dim
    hidden = tuple(cfg.mlp_hidden) if cfg.mlp_hidden is not None else (d, d // 2)

    def init_shared(key):
        k_gmf, k_mlp, k_tower, k_out = jax.random.split(key, 4)
        return ({"items_gmf": cfg.init_scale * jax.random.normal(k_gmf, (num_items, d)),
                 "items_mlp": cfg.init_scale * jax.random.normal(k_mlp, (num_items, d))},
                {"mlp": init_mlp(k_tower, (2 * d, *hidden)),
                 "out": init_mlp(k_out, (d + hidden[-1], 1))})

    def init_private(key):
        k_gmf, k_mlp = jax.random.split(key)
        return {}, {"user_gmf": cfg.init_scale * jax.random.normal(k_gmf, (d,)),
                    "user_mlp": cfg.init_scale * jax.random.normal(k_mlp, (d,))}

    def apply(private, shared, items, history, history_mask):
        user, (tables, dense) = private[1], shared
        q_gmf, q_mlp = tables["items_gmf"][items], tables["items_mlp"][items]
        gmf = user["user_gmf"] * q_gmf
        user_mlp = jnp.broadcast_to(user["user_mlp"], q_mlp.shape)
        mlp = jax.nn.relu(apply_mlp(dense["mlp"], jnp.concatenate([user_mlp, q_mlp], -1)))
        return apply_mlp(dense["out"], jnp.concatenate([gmf, mlp], -1))[:, 0]

    return init_shared, init_private, apply


def _uniform_head(key, d):
    bound = 1.0 / math.sqrt(d)
    k_w, k_b = jax.random.split(key)
    return {"w": jax.random.uniform(k_w, (d,), minval=-bound, maxval=bound),
            "b": jax.random.uniform(k_b, (), minval=-bound, maxval=bound)}


def build_pfedrec(cfg, num_items):
    d = cfg.dim

    def init_shared(key):
        return {"items": cfg.init_scale * jax.random.normal(key, (num_items, d))}, {}

    def init_private(key):
        return {}, {"head": _uniform_head(key, d)}

    def apply(private, shared, items, history, history_mask):
        head = private[1]["head"]
        return jnp.dot(shared[0]["items"][items], head["w"]) + head["b"]

    return init_shared, init_private, apply


def build_fedrap(cfg, num_items):
    d = cfg.dim

    def init_shared(key):
        return {"items": cfg.init_scale * jax.random.normal(key, (num_items, d))}, {}

    def init_private(key):
        k_items, k_head = jax.random.split(key)
        return ({"items_personal": cfg.init_scale * jax.random.normal(k_items, (num_items, d))},
                {"head": _uniform_head(k_head, d)})

    def apply(private, shared, items, history, history_mask):
        personal, common = private[0]["items_personal"][items], shared[0]["items"][items]
        head = private[1]["head"]
        return jnp.dot(personal + common, head["w"]) + head["b"]

    return init_shared, init_private, apply


BUILDERS = {"feddmr": build_feddmr, "fedmf": build_fedmf, "fedncf": build_fedncf,
            "pfedrec": build_pfedrec, "fedrap": build_fedrap}
