"""FedMF: federated matrix factorization (a private user vector, a shared item table).

Split (top-level parameters of :class:`FedMF`; see ``split.py``):
  private: ``user`` ``[d]`` — the user embedding, never uploaded.
  shared:  table ``items`` ``[num_items, d]`` — the item table, averaged.

Forward pass for one client::

    logit(i) = <p_u, E[i]>

No bias terms. Its recipe (BCE, Adam) is ``feddmr_jax/methods/fedmf.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddmr_jax.method_configs import FedMFConfig
from feddmr_jax.models.base import Context, Model
from feddmr_jax.models.layers import embedding_init
from feddmr_jax.models.split import ParamSplit, module_model

Array = jax.Array
SPLIT = ParamSplit(private=("user",), tables=("items",))


class FedMF(nn.Module):
    """``logit(i) = <user, items[i]>``.

    Attributes:
      config: hyperparameters.
      num_items: rows of the item table.
    """

    config: FedMFConfig
    num_items: int

    @nn.compact
    def __call__(self, items: Array, context: Context, *, deterministic: bool = True) -> Array:
        """Logits ``[B]`` of items ``[B]`` (context is unused)."""
        del context, deterministic
        init = embedding_init(self.config.init_scale)
        table = self.param("items", init, (self.num_items, self.config.dim))   # [I, d]
        user = self.param("user", init, (self.config.dim,))                   # [d]
        return jnp.dot(table[items], user)


def build_fedmf(cfg: FedMFConfig, num_items: int) -> Model:
    """Builds the FedMF :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model; ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    return module_model("fedmf", FedMF(cfg, num_items), SPLIT, history_len=0, config=cfg)
