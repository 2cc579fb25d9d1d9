"""FedNCF: NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017) per client.

Split (see :class:`feddmr_jax.models.base.ModelParams`):
  private: ``dense["user_gmf"]`` ``[d]`` and ``dense["user_mlp"]`` ``[d]`` — the
           user's two embeddings, never uploaded.
  shared:  ``tables["items_gmf"]`` ``[num_items, d]``, ``tables["items_mlp"]``
           ``[num_items, d]``, ``dense["mlp"]`` (the MLP tower) and
           ``dense["out"]`` (the output layer).

Forward pass for one client (NeuMF, without the final sigmoid)::

    g        = p_u^G * q_i^G                                   # GMF tower, [d]
    h        = ReLU-MLP([p_u^M, q_i^M])                        # MLP tower, [h_L]
    logit(i) = w^T [g, h] + b                                  # output layer

The MLP maps ``2d -> mlp_hidden[0] -> ... -> mlp_hidden[-1]`` with a ReLU after
every layer (as in NeuMF); the default ``mlp_hidden`` is ``(d, d // 2)``, i.e.
layer sizes ``(2d, d, d/2)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from feddmr_jax.errors import ConfigError
from feddmr_jax.models.base import (Context, Leaves, Model, ModelParams, apply_mlp,
                                    init_mlp)
from feddmr_jax.models.checks import check_fields

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FedNCFConfig:
    """FedNCF (NeuMF) hyperparameters."""

    dim: int = 32                          # embedding size d of each tower
    mlp_hidden: tuple[int, ...] | None = None  # MLP output sizes; None = (d, d // 2)
    init_scale: float = 0.1                # std of the embedding initializers

    def validate(self) -> None:
        check_fields(self, positive=("dim",), non_negative=("init_scale",))
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ConfigError(f"model.mlp_hidden must be non-empty and positive, got "
                              f"{self.hidden} (dim={self.dim}: use dim >= 2 for the default)")

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(self.mlp_hidden) if self.mlp_hidden is not None else (
            self.dim, self.dim // 2)


def neumf_logits(params: ModelParams, items: Array) -> Array:
    """NeuMF logits of one client.

    Args:
      params: the client's parameters (see the module docstring).
      items: ``[B]`` int32 item indices into the item tables.

    Returns:
      ``[B]`` logits.
    """
    private, shared = params.private.dense, params.shared
    q_gmf = shared.tables["items_gmf"][items]                         # [B, d]
    q_mlp = shared.tables["items_mlp"][items]                         # [B, d]
    gmf = private["user_gmf"] * q_gmf                                 # [B, d]
    user_mlp = jnp.broadcast_to(private["user_mlp"], q_mlp.shape)
    mlp = jax.nn.relu(apply_mlp(shared.dense["mlp"],
                                jnp.concatenate([user_mlp, q_mlp], -1)))  # [B, h_L]
    features = jnp.concatenate([gmf, mlp], -1)
    return apply_mlp(shared.dense["out"], features)[:, 0]


def build_fedncf(cfg: FedNCFConfig, num_items: int) -> Model:
    """Builds the FedNCF :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model; ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    d, hidden = cfg.dim, cfg.hidden

    def init_shared(key: Array) -> Leaves:
        k_gmf, k_mlp, k_tower, k_out = jax.random.split(key, 4)
        return Leaves(
            tables={"items_gmf": cfg.init_scale * jax.random.normal(k_gmf, (num_items, d)),
                    "items_mlp": cfg.init_scale * jax.random.normal(k_mlp, (num_items, d))},
            dense={"mlp": init_mlp(k_tower, (2 * d, *hidden)),
                   "out": init_mlp(k_out, (d + hidden[-1], 1))})

    def init_private(key: Array) -> Leaves:
        k_gmf, k_mlp = jax.random.split(key)
        return Leaves(tables={}, dense={
            "user_gmf": cfg.init_scale * jax.random.normal(k_gmf, (d,)),
            "user_mlp": cfg.init_scale * jax.random.normal(k_mlp, (d,))})

    def apply(params: ModelParams, items: Array, context: Context, *,
              key: Array | None = None) -> Array:
        """Logits ``[B]`` of items ``[B]`` (context and key are unused)."""
        del context, key
        return neumf_logits(params, items)

    return Model(name="fedncf", init_shared=init_shared, init_private=init_private,
                 apply=apply, history_len=0, config=cfg)
