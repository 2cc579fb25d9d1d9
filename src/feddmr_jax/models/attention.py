"""The attention block of FedDMR, written for one example.

Query tokens ``x = [t_user, t_item]`` (``[T, d]``, T = 2) attend over keys/values
``[x ; M]`` where ``M`` (``[n, d]``) is the client's local memory (embeddings of
its own recent positives). ``M`` is keys/values only: its key/value projections
(:func:`project_memory`) are computed once per client step and shared by every
example of that step, so an example costs O(n·d), not O(n·d²).

One layer (post-norm, as in the original Transformer)::

    x <- LayerNorm(x + MHA(queries=x, keys=values=[x ; M]))
    x <- LayerNorm(x + FFN(x))

Masked keys (padded memory slots, and the memory slot holding the target item
itself) get a logit of -1e30 before the softmax, hence an attention weight of
exactly 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from feddmr_jax.models.base import (apply_mlp, dropout, glorot, init_mlp,
                                    layer_norm)

Array = jax.Array
_MASKED = -1e30


class MemoryKV(NamedTuple):
    """Key/value projections of a client's memory for one layer.

    Attributes:
      keys: ``[n, H, d/H]``.
      values: ``[n, H, d/H]``.
    """

    keys: Array
    values: Array


def init_attention_layer(key: Array, dim: int, ffn_dim: int) -> dict:
    """Parameters of one attention layer (MHA + FFN, each with LayerNorm)."""
    kq, kk, kv, ko, kf = jax.random.split(key, 5)
    return {
        "wq": glorot(kq, (dim, dim)),
        "wk": glorot(kk, (dim, dim)),
        "wv": glorot(kv, (dim, dim)),
        "wo": glorot(ko, (dim, dim)),
        "ln1_scale": jnp.ones((dim,), jnp.float32),
        "ln1_bias": jnp.zeros((dim,), jnp.float32),
        "ffn": init_mlp(kf, (dim, ffn_dim, dim)),
        "ln2_scale": jnp.ones((dim,), jnp.float32),
        "ln2_bias": jnp.zeros((dim,), jnp.float32),
    }


def _split_heads(x: Array, heads: int) -> Array:
    return x.reshape(x.shape[:-1] + (heads, x.shape[-1] // heads))


def project_memory(layer: dict, memory: Array, heads: int) -> MemoryKV:
    """Key/value projections of the memory ``[n, d]`` (once per client step)."""
    return MemoryKV(keys=_split_heads(memory @ layer["wk"], heads),
                    values=_split_heads(memory @ layer["wv"], heads))


def multi_head_attention(layer: dict, tokens: Array, memory: MemoryKV,
                         memory_mask: Array, heads: int) -> tuple[Array, Array]:
    """Multi-head attention of ``tokens`` over ``[tokens ; memory]``.

    Args:
      layer: parameters from :func:`init_attention_layer`.
      tokens: ``[T, d]`` query tokens (also keys/values).
      memory: projected memory, ``[n, H, d/H]`` each.
      memory_mask: ``[n]`` bool; False slots receive exactly zero weight.
      heads: number of heads H (must divide d).

    Returns:
      ``(output [T, d], weights [H, T, T + n])``; ``weights`` sum to 1 over the
      last axis (columns 0..T-1 are the tokens, then the memory slots).
    """
    t, d = tokens.shape
    q = _split_heads(tokens @ layer["wq"], heads)            # [T, H, dh]
    k_tok = _split_heads(tokens @ layer["wk"], heads)        # [T, H, dh]
    v_tok = _split_heads(tokens @ layer["wv"], heads)        # [T, H, dh]
    scale = 1.0 / jnp.sqrt(jnp.asarray(d // heads, jnp.float32))
    logits_tok = jnp.einsum("thd,shd->hts", q, k_tok) * scale           # [H, T, T]
    logits_mem = jnp.einsum("thd,nhd->htn", q, memory.keys) * scale     # [H, T, n]
    logits_mem = jnp.where(memory_mask[None, None, :], logits_mem, _MASKED)
    weights = jax.nn.softmax(jnp.concatenate([logits_tok, logits_mem], -1), -1)
    w_tok, w_mem = weights[..., :t], weights[..., t:]
    out = (jnp.einsum("hts,shd->thd", w_tok, v_tok)
           + jnp.einsum("htn,nhd->thd", w_mem, memory.values))
    return out.reshape(t, d) @ layer["wo"], weights


def attention_layer(layer: dict, tokens: Array, memory: MemoryKV, memory_mask: Array,
                    heads: int, *, dropout_rate: float = 0.0,
                    key: Array | None = None) -> tuple[Array, Array]:
    """One FedDMR layer: MHA + residual + LayerNorm, FFN + residual + LayerNorm.

    Returns:
      ``(tokens [T, d], attention weights [H, T, T + n])``.
    """
    k_att, k_ffn = (None, None) if key is None else jax.random.split(key)
    att, weights = multi_head_attention(layer, tokens, memory, memory_mask, heads)
    x = layer_norm(tokens + dropout(att, dropout_rate, k_att),
                   layer["ln1_scale"], layer["ln1_bias"])
    ffn = apply_mlp(layer["ffn"], x)
    x = layer_norm(x + dropout(ffn, dropout_rate, k_ffn),
                   layer["ln2_scale"], layer["ln2_bias"])
    return x, weights
