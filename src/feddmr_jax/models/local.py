"""The ``local`` probe's model: PFedRec's score model with every parameter private.

Split (top-level parameters of PFedRec's module with its table named
``items_personal``; see ``split.py``):
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

from feddmr_jax.models.base import Model
from feddmr_jax.models.pfedrec import PFedRec, PFedRecConfig
from feddmr_jax.models.split import ParamSplit, module_model

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


def build_local(cfg: LocalConfig, num_items: int) -> Model:
    """Builds the ``local`` :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model (empty shared half); ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    return module_model("local", PFedRec(cfg, num_items, table_name="items_personal"), SPLIT, history_len=0, config=cfg)
