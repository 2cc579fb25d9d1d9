"""The attention layer of FedDMR, a Flax Module written for one client's batch.

Query tokens ``x = [t_user, t_item]`` (``[B, T, d]``, T = 2, one pair per
example of the batch) attend over keys/values ``[x ; M]`` where ``M``
(``[n, d]``) is the client's local memory (embeddings of its own recent
positives). ``M`` is keys/values only: its key/value projections
(:meth:`MemoryAttention.project_memory`) are computed once per client step and
shared by every example of the batch, so an example costs O(n·d), not O(n·d²).

One layer, ``norm="post"`` (as in the original Transformer)::

    x <- LayerNorm(x + Dropout(MHA(queries=x, keys=values=[x ; M])))
    x <- LayerNorm(x + Dropout(FFN(x)))

``norm="pre"`` (pre-norm residual stream, as in GPT-2 and most later encoders)::

    h <- LN_a(x);  x <- x + Dropout(MHA(queries=h, keys=values=[h ; LN_a(M)]))
    x <- x + Dropout(FFN(LN_f(x)))

with the output projection and the FFN's last layer zero-initialized, so that
each residual branch starts at zero and the layer at the identity: a pre-norm
FedDMR starts as its no-attention ablation and the tokens keep the scale of the
embeddings (no LayerNorm on the way to the head).

Masked keys (padded memory slots, and the memory slot holding the example's
target item itself) get a logit of -1e30 before the softmax, hence an
attention weight of exactly 0.

Why not ``nn.MultiHeadDotProductAttention``: it projects its key/value inputs
inside every call, so with per-example keys ``[x ; M]`` it would project the
memory once per example (B·n·d² instead of n·d²). The projections here are
Flax's own ``nn.DenseGeneral`` layers, with the same parameter layout as
``MultiHeadDotProductAttention`` (``query``/``key``/``value`` kernels ``[d, H,
d/H]``, ``out`` kernel ``[H, d/H, d]``, no biases); only the score, mask and
weighted sum below are written by hand, as two einsums (over the tokens and
over the memory) so the memory is never concatenated per example.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddmr_jax.method_configs import NORMS
from feddmr_jax.models.layers import MLP, glorot

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


class MemoryAttention(nn.Module):
    """One FedDMR layer: MHA over ``[tokens ; memory]`` + FFN, each with residual + LayerNorm.

    Attributes:
      dim: model width d.
      heads: number of heads H (must divide d).
      ffn_dim: hidden width of the feed-forward block.
      dropout: dropout rate on the attention and FFN outputs (``"dropout"`` rng).
      norm: ``"post"`` or ``"pre"`` (see the module docstring).
    """

    dim: int
    heads: int
    ffn_dim: int
    dropout: float = 0.0
    norm: str = "post"

    def setup(self):
        head_dim = self.dim // self.heads
        project = lambda: nn.DenseGeneral((self.heads, head_dim), use_bias=False,  # noqa: E731
                                          kernel_init=glorot)
        self.query, self.key, self.value = project(), project(), project()
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        branch_init = nn.initializers.zeros if self.norm == "pre" else glorot
        self.out = nn.DenseGeneral(self.dim, axis=(-2, -1), use_bias=False,
                                   kernel_init=branch_init)
        self.norm_attention = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False)
        self.ffn = MLP((self.ffn_dim, self.dim), final_init=branch_init)
        self.norm_ffn = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False)
        self.drop = nn.Dropout(self.dropout)

    def project_memory(self, memory: Array) -> MemoryKV:
        """Key/value projections of the memory ``[n, d]`` (once per client step)."""
        if self.norm == "pre":
            memory = self.norm_attention(memory)
        return MemoryKV(keys=self.key(memory), values=self.value(memory))

    def attend(self, tokens: Array, memory: MemoryKV, memory_mask: Array
               ) -> tuple[Array, Array]:
        """Multi-head attention of ``tokens`` over ``[tokens ; memory]``.

        Args:
          tokens: ``[B, T, d]`` query tokens (also keys/values).
          memory: from :meth:`project_memory`, ``[n, H, d/H]`` each.
          memory_mask: ``[B, n]`` bool; False slots receive exactly zero weight.

        Returns:
          ``(output [B, T, d], weights [B, H, T, T + n])``; ``weights`` sum to 1
          over the last axis (columns 0..T-1 are the tokens, then the memory).
        """
        t = tokens.shape[1]
        q, k_tok, v_tok = self.query(tokens), self.key(tokens), self.value(tokens)  # [B,T,H,dh]
        scale = 1.0 / jnp.sqrt(jnp.asarray(self.dim // self.heads, jnp.float32))
        logits_tok = jnp.einsum("bthd,bshd->bhts", q, k_tok) * scale          # [B, H, T, T]
        logits_mem = jnp.einsum("bthd,nhd->bhtn", q, memory.keys) * scale     # [B, H, T, n]
        logits_mem = jnp.where(memory_mask[:, None, None, :], logits_mem, _MASKED)
        weights = jax.nn.softmax(jnp.concatenate([logits_tok, logits_mem], -1), -1)
        w_tok, w_mem = weights[..., :t], weights[..., t:]
        out = (jnp.einsum("bhts,bshd->bthd", w_tok, v_tok)
               + jnp.einsum("bhtn,nhd->bthd", w_mem, memory.values))
        return self.out(out), weights

    def __call__(self, tokens: Array, memory: MemoryKV, memory_mask: Array, *,
                 deterministic: bool = True) -> tuple[Array, Array]:
        """One layer on a batch of one client.

        Args:
          tokens: ``[B, T, d]``.
          memory: the projected memory (:meth:`project_memory`).
          memory_mask: ``[B, n]`` bool (padding and each example's target item False).
          deterministic: no dropout (True), or dropout from the ``"dropout"`` rng.

        Returns:
          ``(tokens [B, T, d], attention weights [B, H, T, T + n])``.
        """
        drop = lambda y: self.drop(y, deterministic=deterministic)  # noqa: E731
        if self.norm == "pre":
            att, weights = self.attend(self.norm_attention(tokens), memory, memory_mask)
            x = tokens + drop(att)
            return x + drop(self.ffn(self.norm_ffn(x))), weights
        att, weights = self.attend(tokens, memory, memory_mask)
        x = self.norm_attention(tokens + drop(att))
        return self.norm_ffn(x + drop(self.ffn(x))), weights
