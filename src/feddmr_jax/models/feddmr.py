"""FedDMR: private user embedding, shared item table, dual-layer attention, MLP head.

Split (top-level parameters of :class:`FedDMR`; see ``split.py``):
  private: ``user`` ``[d]`` — the user embedding, never uploaded.
  shared:  table ``items`` ``[num_items, d]``; ``layer_0`` .. ``layer_{L-1}`` (the
           attention layers, :class:`~.attention.MemoryAttention`) and ``head``
           (the prediction MLP).

Forward pass for one client and a batch of items (DESIGN.md section 1)::

    M        = E[history]                     # local memory, [n, d] (n = history_len)
    x        = [p_u, E[i]]                    # query tokens, [2, d]
    x        = Layer_l(x, M) for l = 1..L     # models/attention.py
    logit(i) = MLP([x_u, x_i, x_u * x_i])

The defaults (pre-norm, ``history_len = 0``: the user and item tokens attend to
each other only, no memory) are the configuration chosen on ml-100k validation
by the issue-13 study (docs/results.md, "FedDMR study"); the earlier default
(post-norm, a memory of the 50 most recent positives) is ``norm="post",
history_len=50``.

``norm="post"`` puts a LayerNorm after each residual (the head sees normalized
tokens); ``norm="pre"`` normalizes each branch's input and zero-initializes its
output, so at initialization the layers are the identity and the model equals its
``attention=False`` ablation (``models/attention.py``).

The memory slot holding the target item ``i`` itself is masked out, so that a
training positive is never trivially "found" in the history. Each layer
projects the memory once per call (one client step), for the whole batch.
``attention=False`` (or ``layers=0``) skips the layers (the head then sees the
raw embeddings) and reads no memory.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddmr_jax.method_configs import FedDMRConfig
from feddmr_jax.models.attention import MemoryAttention
from feddmr_jax.models.base import Context, Model, ModelParams
from feddmr_jax.models.layers import MLP, embedding_init
from feddmr_jax.models.split import ParamSplit, bind_rows, merge_params, module_model

Array = jax.Array
SPLIT = ParamSplit(private=("user",), tables=("items",))


class FedDMR(nn.Module):
    """The FedDMR client model (see the module docstring).

    Attributes:
      config: hyperparameters.
      num_items: rows of the item table (the catalogue, or a client's local table).
    """

    config: FedDMRConfig
    num_items: int

    def setup(self):
        cfg = self.config
        self.items = self.param("items", embedding_init(cfg.init_scale), (self.num_items, cfg.dim))
        self.user = self.param("user", embedding_init(cfg.init_scale), (cfg.dim,))
        self.layers = [MemoryAttention(cfg.dim, cfg.heads, cfg.ffn_width, cfg.dropout, cfg.norm,
                                       name=f"layer_{l}") for l in range(cfg.num_layers)]
        self.head = MLP((cfg.dim, 1))

    def encode(self, items: Array, context: Context, *, deterministic: bool = True
               ) -> tuple[Array, Array]:
        """Interaction-aware tokens of one client's batch.

        Args:
          items: ``[B]`` int32 item indices into the item table.
          context: the client's memory (history indices and mask, ``[n]``).
          deterministic: no dropout (True), or dropout from the ``"dropout"`` rng.

        Returns:
          ``(tokens [B, 2, d], weights [B, layers, H, 2, 2 + n])``; ``weights``
          is ``[B, 0]`` when attention is off.
        """
        b, d = items.shape[0], self.config.dim
        tokens = jnp.stack([jnp.broadcast_to(self.user, (b, d)), self.items[items]], 1)
        if not self.layers:
            return tokens, jnp.zeros((b, 0), jnp.float32)
        memory = self.items[context.history]                                  # [n, d]
        mask = context.history_mask[None, :] & (context.history[None, :] != items[:, None])
        all_weights = []
        for layer in self.layers:
            tokens, w = layer(tokens, layer.project_memory(memory), mask,
                              deterministic=deterministic)
            all_weights.append(w)
        return tokens, jnp.stack(all_weights, 1)

    def __call__(self, items: Array, context: Context, *, deterministic: bool = True) -> Array:
        """Logits ``[B]`` of items ``[B]`` for one client."""
        tokens, _ = self.encode(items, context, deterministic=deterministic)
        t_u, t_i = tokens[:, 0], tokens[:, 1]
        return self.head(jnp.concatenate([t_u, t_i, t_u * t_i], axis=-1))[:, 0]


def encode(cfg: FedDMRConfig, params: ModelParams, items: Array, context: Context,
           key: Array | None = None) -> tuple[Array, Array]:
    """:meth:`FedDMR.encode` on engine params (tokens and attention weights).

    Args:
      cfg: model config.
      params: the client's parameters.
      items: ``[B]`` int32 item indices into ``params.shared.tables["items"]``.
      context: the client's memory.
      key: dropout key, or None for a deterministic pass.

    Returns:
      ``(tokens [B, 2, d], weights [B, layers, H, 2, 2 + n])``.
    """
    module = bind_rows(FedDMR(cfg, 0), params)
    return module.apply({"params": merge_params(params)}, items, context,
                        deterministic=key is None, rngs=None if key is None else {"dropout": key},
                        method=FedDMR.encode)


def build_feddmr(cfg: FedDMRConfig, num_items: int) -> Model:
    """Builds the FedDMR :class:`Model` for a catalogue of ``num_items`` items."""
    cfg.validate()
    return module_model("feddmr", FedDMR(cfg, num_items), SPLIT,
                        history_len=cfg.history_len if cfg.num_layers else 0, config=cfg)
