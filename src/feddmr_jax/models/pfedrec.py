"""PFedRec's score model (Zhang et al., "Dual Personalization on Federated Recommendation", IJCAI 2023).

Split (top-level parameters of :class:`PFedRec`; see ``split.py``):
  private: ``user_head`` = ``nn.Dense(1)`` (kernel ``[d, 1]``, bias ``[1]``) —
           the user's score function (there is no user embedding), never uploaded.
  shared:  table ``items`` ``[num_items, d]`` — the item table, averaged.

Forward pass for one client: ``logit(i) = E[i] @ w + b``; the reference scores
``sigmoid(logit)`` (``mlp.py``: ``embedding_item`` N(0, 1), ``affine_output =
Linear(d, 1)`` with torch's default init). Its training recipe (two SGD passes
per batch, local evaluation, reference defaults) is ``feddmr_jax/methods/pfedrec.py``;
the config's learning-rate fields are read there.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from feddmr_jax.method_configs import PFedRecConfig
from feddmr_jax.models.base import Context, Model
from feddmr_jax.models.layers import embedding_init, torch_linear_init
from feddmr_jax.models.split import ParamSplit, module_model

Array = jax.Array
SPLIT = ParamSplit(private=("user_head",), tables=("items",))


class PFedRec(nn.Module):
    """``logit(i) = user_head(items[i])``.

    Attributes:
      config: hyperparameters (``dim``, ``init_scale``).
      num_items: rows of the item table.
      table_name: parameter name of the item table (``split.py`` decides by name
        whether it is shared or private).
    """

    config: PFedRecConfig
    num_items: int
    table_name: str = "items"    # the item table's parameter name (``local``: items_personal)

    @nn.compact
    def __call__(self, items: Array, context: Context, *, deterministic: bool = True) -> Array:
        """Logits ``[B]`` of items ``[B]`` (context is unused)."""
        del context, deterministic
        d = self.config.dim
        table = self.param(self.table_name, embedding_init(self.config.init_scale),
                           (self.num_items, d))
        head = nn.Dense(1, kernel_init=torch_linear_init(d), bias_init=torch_linear_init(d),
                        name="user_head")
        return head(table[items])[:, 0]


def build_pfedrec(cfg: PFedRecConfig, num_items: int) -> Model:
    """Builds the PFedRec :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model; ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    return module_model("pfedrec", PFedRec(cfg, num_items), SPLIT, history_len=0, config=cfg)
