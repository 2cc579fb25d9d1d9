"""FedRAP's model (Li, Long, Zhou, "Federated Recommendation with Additive Personalization", ICLR 2024).

Split (top-level parameters of :class:`FedRAP`; see ``split.py``):
  private: table ``items_personal`` ``[num_items, d]`` — the item personality
           D_u (item-indexed, so sparse mode gathers its rows), and
           ``user_head`` = ``nn.Dense(1)`` — the score function (the reference
           has no user embedding); never uploaded.
  shared:  table ``items`` ``[num_items, d]`` — the item commonality C, averaged.

Forward pass for one client: ``logit(i) = user_head(D_u[i] + C[i])``; score =
``sigmoid(logit)`` (reference ``model/model.py``: both embeddings N(0, 1),
``affine_output = Linear(d, 1)``). Its loss terms, optimizer and defaults are
``feddmr_jax/methods/fedrap.py``; the config's training fields are read there.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from feddmr_jax.method_configs import FedRAPConfig
from feddmr_jax.models.base import Context, Model
from feddmr_jax.models.layers import embedding_init, torch_linear_init
from feddmr_jax.models.split import ParamSplit, module_model

Array = jax.Array
SPLIT = ParamSplit(private=("items_personal", "user_head"), tables=("items_personal", "items"))


class FedRAP(nn.Module):
    """``logit(i) = user_head(items_personal[i] + items[i])``.

    Attributes:
      config: hyperparameters (``dim``, ``init_scale``).
      num_items: rows of both item tables.
    """

    config: FedRAPConfig
    num_items: int

    @nn.compact
    def __call__(self, items: Array, context: Context, *, deterministic: bool = True) -> Array:
        """Logits ``[B]`` of items ``[B]`` (context is unused)."""
        del context, deterministic
        d = self.config.dim
        init = embedding_init(self.config.init_scale)
        personal = self.param("items_personal", init, (self.num_items, d))[items]   # [B, d]
        common = self.param("items", init, (self.num_items, d))[items]              # [B, d]
        head = nn.Dense(1, kernel_init=torch_linear_init(d), bias_init=torch_linear_init(d),
                        name="user_head")
        return head(personal + common)[:, 0]


def build_fedrap(cfg: FedRAPConfig, num_items: int) -> Model:
    """Builds the FedRAP :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model; ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    return module_model("fedrap", FedRAP(cfg, num_items), SPLIT, history_len=0, config=cfg)
