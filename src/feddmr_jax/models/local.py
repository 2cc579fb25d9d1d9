"""The ``local`` probe's model: PFedRec's score model with every parameter private.

Split (top-level parameters of :class:`LocalPFedRec`; see ``split.py``):
  private: table ``items_personal`` ``[num_items, d]`` — the client's own item
           table (item-indexed, so sparse mode reads and writes its rows), and
           ``user_head`` = ``nn.Dense(1)`` — its score function.
  shared:  nothing. The server aggregates no parameter.

Forward pass for one client: ``logit(i) = user_head(items_personal[i])``, the
PFedRec forward pass (``models/pfedrec.py``) with the item table renamed so
that the privacy audit (federated/audit.py) reads it as private data. The
recipe (PFedRec's local step, no federation) is ``feddmr_jax/methods/local.py``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from feddmr_jax.models.base import Context, Model
from feddmr_jax.models.layers import embedding_init, torch_linear_init
from feddmr_jax.models.pfedrec import PFedRecConfig
from feddmr_jax.models.split import ParamSplit, module_model

Array = jax.Array
SPLIT = ParamSplit(private=("items_personal", "user_head"), tables=("items_personal",))


@dataclasses.dataclass(frozen=True)
class LocalConfig(PFedRecConfig):
    """PFedRec's hyperparameters and defaults (its own class, so that the
    registry can tell the ``[model]`` section of ``local`` from ``pfedrec``'s;
    the fields are restated for their ``--help`` comments)."""

    dim: int = 32                # latent_dim d (as pfedrec)
    init_scale: float = 1.0      # std of the item-table init (as pfedrec: N(0, 1))
    lr: float = 0.1              # SGD lr of the score head (as pfedrec)
    lr_eta: float = 80.0         # item lr = lr * num_items * lr_eta (as pfedrec)
    weight_decay: float = 0.0    # SGD weight decay of both steps (as pfedrec)


class LocalPFedRec(nn.Module):
    """``logit(i) = user_head(items_personal[i])``.

    Attributes:
      config: hyperparameters (``dim``, ``init_scale``).
      num_items: rows of the item table.
    """

    config: PFedRecConfig
    num_items: int

    @nn.compact
    def __call__(self, items: Array, context: Context, *, deterministic: bool = True) -> Array:
        """Logits ``[B]`` of items ``[B]`` (context is unused)."""
        del context, deterministic
        d = self.config.dim
        table = self.param("items_personal", embedding_init(self.config.init_scale),
                           (self.num_items, d))
        head = nn.Dense(1, kernel_init=torch_linear_init(d), bias_init=torch_linear_init(d),
                        name="user_head")
        return head(table[items])[:, 0]


def build_local(cfg: LocalConfig, num_items: int) -> Model:
    """Builds the ``local`` :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model (empty shared half); ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    return module_model("local", LocalPFedRec(cfg, num_items), SPLIT, history_len=0, config=cfg)
