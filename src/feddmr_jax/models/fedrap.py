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

import dataclasses

import flax.linen as nn
import jax

from feddmr_jax.models.base import Context, Model
from feddmr_jax.models.checks import check_fields
from feddmr_jax.models.layers import embedding_init, torch_linear_init
from feddmr_jax.models.split import ParamSplit, module_model

Array = jax.Array
SPLIT = ParamSplit(private=("items_personal", "user_head"), tables=("items_personal", "items"))


@dataclasses.dataclass(frozen=True)
class FedRAPConfig:
    """FedRAP hyperparameters (defaults: the reference ``train.py`` at 550765d)."""

    dim: int = 32               # latent_dim d
    init_scale: float = 1.0     # std of both item-table inits (torch Embedding: N(0, 1))
    lam: float = 0.1            # weight of the subtracted D-C distance (--lambda)
    mu: float = 0.1             # weight of the L1 sparsity of C (--mu)
    lr_network: float = 0.5     # SGD lr of the head (--lr_network)
    lr_args: float = 200.0      # SGD lr of D and C (--lr_args)
    weight_decay: float = 1e-4  # SGD weight decay of all params (--l2_regularization)
    step_decay: float = 0.95    # lr factor per local step (ExponentialLR gamma)
    round_decay: float = 0.97   # lr factor per round (--decay_rate)

    def validate(self) -> None:
        check_fields(self, positive=("dim",),
                     non_negative=("init_scale", "lam", "mu", "lr_network", "lr_args",
                                   "weight_decay"),
                     unit_interval=("step_decay", "round_decay"))


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
