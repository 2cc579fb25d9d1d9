"""FedDMR: private user embedding, shared item table, dual-layer attention, MLP head.

Split (see :class:`feddmr_jax.models.base.ModelParams`):
  private: ``dense["user"]`` ``[d]`` — the user embedding, never uploaded.
  shared:  ``tables["items"]`` ``[num_items, d]``, ``dense["layers"]`` (the
           attention layers) and ``dense["head"]`` (the prediction MLP).

Forward pass for one client and a batch of items (DESIGN.md section 1)::

    M        = E[history]                     # local memory, [n, d]
    x        = [p_u, E[i]]                    # query tokens, [2, d]
    x        = Layer_l(x, M) for l = 1..L     # models/attention.py
    logit(i) = MLP([x_u, x_i, x_u * x_i])

The memory slot holding the target item ``i`` itself is masked out, so that a
training positive is never trivially "found" in the history.
``attention=False`` skips the layers (the head then sees the raw embeddings).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from feddmr_jax.errors import ConfigError
from feddmr_jax.models.attention import (attention_layer, init_attention_layer,
                                         project_memory)
from feddmr_jax.models.base import (Context, Leaves, Model, ModelParams,
                                    apply_mlp, init_mlp)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FedDMRConfig:
    """FedDMR hyperparameters (every choice the paper leaves open is a field)."""

    dim: int = 32                 # embedding size d
    heads: int = 4                # attention heads H (must divide dim)
    layers: int = 2               # attention layers ("dual-layer" = 2)
    history_len: int = 50         # memory size n: most recent training positives
    ffn_dim: int | None = None    # feed-forward width; None = 2 * dim
    dropout: float = 0.0          # dropout on attention and FFN outputs
    attention: bool = True        # False: MLP head on raw embeddings (ablation)
    init_scale: float = 0.1       # std of the embedding initializers

    def validate(self) -> None:
        if self.dim <= 0:
            raise ConfigError(f"model.dim must be positive, got {self.dim}")
        if self.heads <= 0 or self.dim % self.heads:
            raise ConfigError(f"model.heads ({self.heads}) must divide model.dim ({self.dim})")
        if self.layers < 0:
            raise ConfigError(f"model.layers must be >= 0, got {self.layers}")
        if self.history_len < 0:
            raise ConfigError(f"model.history_len must be >= 0, got {self.history_len}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")

    @property
    def ffn_width(self) -> int:
        return self.ffn_dim or 2 * self.dim


def _uses_attention(cfg: FedDMRConfig) -> bool:
    return cfg.attention and cfg.layers > 0


def encode(cfg: FedDMRConfig, params: ModelParams, items: Array, context: Context,
           key: Array | None = None) -> tuple[Array, Array]:
    """Interaction-aware tokens of one client's batch.

    Args:
      cfg: model config.
      params: the client's parameters.
      items: ``[B]`` int32 item indices into ``params.shared.tables["items"]``.
      context: the client's memory (history indices and mask, ``[n]``).
      key: dropout key, or None for a deterministic pass.

    Returns:
      ``(tokens [B, 2, d], weights [B, layers, H, 2, 2 + n])``; ``weights`` has a
      zero-size layer axis when attention is off.
    """
    d = cfg.dim
    table = params.shared.tables["items"]
    user = params.private.dense["user"]
    tokens = jnp.stack([jnp.broadcast_to(user, (items.shape[0], d)), table[items]], 1)
    if not _uses_attention(cfg):
        return tokens, jnp.zeros((items.shape[0], 0), jnp.float32)
    memory = table[context.history]                                   # [n, d]
    layers = params.shared.dense["layers"]
    memory_kv = [project_memory(layer, memory, cfg.heads) for layer in layers]
    keys = (None if key is None
            else jax.random.split(key, items.shape[0] * len(layers))
            .reshape(items.shape[0], len(layers), -1))

    def one_example(x, item, ex_keys):
        mask = context.history_mask & (context.history != item)
        all_weights = []
        for l, (layer, kv) in enumerate(zip(layers, memory_kv)):
            k = None if ex_keys is None else ex_keys[l]
            x, w = attention_layer(layer, x, kv, mask, cfg.heads,
                                   dropout_rate=cfg.dropout, key=k)
            all_weights.append(w)
        return x, jnp.stack(all_weights)

    return jax.vmap(one_example, in_axes=(0, 0, None if keys is None else 0))(
        tokens, items, keys)


def build_feddmr(cfg: FedDMRConfig, num_items: int) -> Model:
    """Builds the FedDMR :class:`Model` for a catalogue of ``num_items`` items."""
    cfg.validate()
    d = cfg.dim

    def init_shared(key: Array) -> Leaves:
        k_items, k_layers, k_head = jax.random.split(key, 3)
        layers = ([init_attention_layer(k, d, cfg.ffn_width)
                   for k in jax.random.split(k_layers, cfg.layers)]
                  if _uses_attention(cfg) else [])
        return Leaves(
            tables={"items": cfg.init_scale * jax.random.normal(k_items, (num_items, d))},
            dense={"layers": layers, "head": init_mlp(k_head, (3 * d, d, 1))})

    def init_private(key: Array) -> Leaves:
        return Leaves(tables={}, dense={"user": cfg.init_scale * jax.random.normal(key, (d,))})

    def apply(params: ModelParams, items: Array, context: Context, *,
              key: Array | None = None) -> Array:
        tokens, _ = encode(cfg, params, items, context, key)
        t_u, t_i = tokens[:, 0], tokens[:, 1]
        features = jnp.concatenate([t_u, t_i, t_u * t_i], axis=-1)
        return apply_mlp(params.shared.dense["head"], features)[:, 0]

    return Model(name="feddmr", init_shared=init_shared, init_private=init_private,
                 apply=apply, history_len=cfg.history_len if _uses_attention(cfg) else 0,
                 config=cfg)
