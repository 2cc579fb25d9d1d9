"""FedNCF: NeuMF (He et al., "Neural Collaborative Filtering", WWW 2017) per client.

Split (top-level parameters of :class:`FedNCF`; see ``split.py``):
  private: ``user_gmf`` ``[d]`` and ``user_mlp`` ``[d]`` — the user's two
           embeddings, never uploaded.
  shared:  tables ``items_gmf`` and ``items_mlp`` ``[num_items, d]``; ``mlp``
           (the MLP tower) and ``out`` (the output layer).

Forward pass for one client (NeuMF, without the final sigmoid)::

    g        = p_u^G * q_i^G                                   # GMF tower, [d]
    h        = ReLU-MLP([p_u^M, q_i^M])                        # MLP tower, [h_L]
    logit(i) = w^T [g, h] + b                                  # output layer

The MLP maps ``2d -> mlp_hidden[0] -> ... -> mlp_hidden[-1]`` with a ReLU after
every layer (as in NeuMF); the default ``mlp_hidden`` is ``(d, d // 2)``, i.e.
layer sizes ``(2d, d, d/2)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddmr_jax.method_configs import FedNCFConfig
from feddmr_jax.models.base import Context, Model
from feddmr_jax.models.layers import MLP, embedding_init, glorot
from feddmr_jax.models.split import ParamSplit, module_model

Array = jax.Array
SPLIT = ParamSplit(private=("user_gmf", "user_mlp"), tables=("items_gmf", "items_mlp"))


class FedNCF(nn.Module):
    """NeuMF for one client (see the module docstring).

    Attributes:
      config: hyperparameters.
      num_items: rows of the item tables.
    """

    config: FedNCFConfig
    num_items: int

    @nn.compact
    def __call__(self, items: Array, context: Context, *, deterministic: bool = True) -> Array:
        """Logits ``[B]`` of items ``[B]`` (context is unused)."""
        del context, deterministic
        d = self.config.dim
        init = embedding_init(self.config.init_scale)
        q_gmf = self.param("items_gmf", init, (self.num_items, d))[items]    # [B, d]
        q_mlp = self.param("items_mlp", init, (self.num_items, d))[items]    # [B, d]
        gmf = self.param("user_gmf", init, (d,)) * q_gmf                     # [B, d]
        user_mlp = jnp.broadcast_to(self.param("user_mlp", init, (d,)), q_mlp.shape)
        mlp = MLP(self.config.hidden, activate_final=True, name="mlp")(
            jnp.concatenate([user_mlp, q_mlp], -1))                          # [B, h_L]
        out = nn.Dense(1, kernel_init=glorot, name="out")
        return out(jnp.concatenate([gmf, mlp], -1))[:, 0]


def build_fedncf(cfg: FedNCFConfig, num_items: int) -> Model:
    """Builds the FedNCF :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model; ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    return module_model("fedncf", FedNCF(cfg, num_items), SPLIT, history_len=0, config=cfg)
